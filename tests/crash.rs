//! Crash safety (RELIABILITY.md, durability and idempotency): the gateway as a
//! child process under continuous submissions is killed with SIGKILL at three
//! random moments and restarted; the client retries everything that got no
//! receipt. Afterwards every receipt handed out is in the store with
//! identical bytes, nothing is stored twice, each filing has exactly one
//! extract and one obligation, and the ledger verifies — on SQLite and on
//! PostgreSQL.

#[macro_use]
mod common;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Datelike;
use common::{
    child::ChildGateway,
    fixtures::{date, generated_bin, start_notification, upload_documents},
    *,
};
use minegate::proto::v1::{
    DocumentRef, FilingReceipt, StartNotification, VerifyLedgerRequest,
    compliance_service_client::ComplianceServiceClient, filing_service_client::FilingServiceClient,
};
use prost::Message;

const FILINGS: usize = 300;
const WORKERS: usize = 8;

/// Start notifications from distinct BINs with distinct IP pools, each with
/// its own idempotency key, planned 40 days ahead (so always on time).
fn plan(documents: &[DocumentRef]) -> Vec<StartNotification> {
    let start = chrono::Utc::now().date_naive() + chrono::Days::new(40);
    (0..FILINGS)
        .map(|i| {
            start_notification(
                &generated_bin(i as u32),
                &format!("crash-{i}"),
                date(start.year(), start.month() as i32, start.day() as i32),
                &[&format!("37.{}.{}.0/24", 1 + i / 256, i % 256)],
                documents,
            )
        })
        .collect()
}

/// A small deterministic generator, seeded from the clock and printed, so a
/// failing run's kill points can be repeated.
struct Lcg(u64);

impl Lcg {
    fn next_fraction(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Load {
    queue: Mutex<VecDeque<usize>>,
    /// Filing index → the receipt's bytes as the client received them.
    receipts: Mutex<BTreeMap<usize, Vec<u8>>>,
    failed_calls: AtomicUsize,
}

impl Load {
    fn received(&self) -> usize {
        self.receipts.lock().unwrap().len()
    }
}

/// One client worker: submits the next filing without a receipt; a failed
/// call (the gateway died under it) goes back on the queue to be retried.
async fn worker(
    load: Arc<Load>,
    tls: minegate::client::ClientTls,
    plan: Arc<Vec<StartNotification>>,
) {
    let mut client = None;
    loop {
        let next = load.queue.lock().unwrap().pop_front();
        let Some(i) = next else {
            if load.received() == FILINGS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if client.is_none() {
            client = tls.connect().await.ok().map(FilingServiceClient::new);
        }
        let answer = match client.as_mut() {
            Some(client) => tokio::time::timeout(
                Duration::from_secs(20),
                client.submit_start_notification(plan[i].clone()),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        match answer {
            Some(receipt) => {
                let bytes = receipt.into_inner().encode_to_vec();
                assert!(
                    load.receipts.lock().unwrap().insert(i, bytes).is_none(),
                    "filing {i} got two receipts"
                );
            }
            None => {
                load.failed_calls.fetch_add(1, Ordering::Relaxed);
                load.queue.lock().unwrap().push_back(i);
                client = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn kill_nine_at_random_moments_loses_nothing(backend: Backend) {
    let dir = fresh_folder();
    let Some(database) = database_for(backend, &dir).await else {
        return;
    };
    let database_url = database.url.clone();
    let mut gateway = ChildGateway::start(dir.path(), &database_url, &[]).await;
    let documents = upload_documents(gateway.channel("authority").await, "crash").await;
    let plan = Arc::new(plan(&documents));

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill points seed: {seed}");
    let mut random = Lcg(seed);
    // One kill in each of 10–30 %, 40–60 % and 70–90 % of the receipts.
    let kill_points: Vec<usize> = (0..3)
        .map(|j| {
            let fraction = 0.1 + 0.3 * j as f64 + 0.2 * random.next_fraction();
            (FILINGS as f64 * fraction) as usize
        })
        .collect();

    let load = Arc::new(Load {
        queue: Mutex::new((0..FILINGS).collect()),
        receipts: Mutex::new(BTreeMap::new()),
        failed_calls: AtomicUsize::new(0),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(load.clone(), gateway.tls("authority"), plan.clone())))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(240);
    for point in &kill_points {
        while load.received() < *point {
            assert!(Instant::now() < deadline, "stuck at {}", load.received());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        gateway.kill9().await;
        eprintln!("killed at {} receipts", load.received());
        gateway.restart().await;
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(240), worker)
            .await
            .expect("every filing gets a receipt")
            .unwrap();
    }
    assert!(
        load.failed_calls.load(Ordering::Relaxed) >= 3,
        "every kill cut calls in flight"
    );

    // Every receipt is the stored one, byte for byte, and a replay gives it again.
    let receipts = load.receipts.lock().unwrap().clone();
    assert_eq!(receipts.len(), FILINGS);
    let channel = gateway.channel("authority").await;
    assert_receipts_stored(channel.clone(), receipts.values().map(Vec::as_slice)).await;
    let mut filings = FilingServiceClient::new(channel);
    for (i, bytes) in &receipts {
        let replay = filings
            .submit_start_notification(plan[*i].clone())
            .await
            .unwrap()
            .into_inner();
        let handed = FilingReceipt::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            replay.evidence.unwrap().artifact,
            handed.evidence.unwrap().artifact,
            "filing {i}: replay"
        );
    }

    // Nothing twice; one extract and one obligation per filing; one register entry per BIN.
    let url = &database_url;
    let n = FILINGS as i64;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM filings").await, n);
    assert_eq!(
        scalar(url, "SELECT COUNT(DISTINCT idempotency_key) FROM filings").await,
        n
    );
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM register").await, n);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM extracts").await, n);
    assert_eq!(
        scalar(
            url,
            "SELECT COUNT(*) FROM filings f WHERE \
             (SELECT COUNT(*) FROM extracts e WHERE e.filing_id = f.filing_id) = 1 AND \
             (SELECT COUNT(*) FROM obligations o WHERE o.filing_id = f.filing_id \
              AND o.kind = 'ENERGY_EXTRACT') = 1"
        )
        .await,
        n
    );
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM obligations").await, n);

    // The ledger: 3 documents, then per filing "accepted" and "extract created".
    let verification = ComplianceServiceClient::new(gateway.channel("operator").await)
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.entries_checked, 3 + 2 * FILINGS as u64);

    gateway.signal("TERM").await;
    assert_eq!(gateway.exit_code().await, Some(0));
}

on_both_backends!(kill_nine_at_random_moments_loses_nothing);
