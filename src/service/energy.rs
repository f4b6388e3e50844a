//! EnergyExtractService: the energy ministry receives the §6 extracts.
//! Delivery is at-least-once with idempotent acknowledgement: a stream sends
//! what is pending for its subscriber (not a high-water mark: on PostgreSQL
//! ids commit out of order), at most `max_in_flight` unacknowledged at once,
//! and sends again what is not acknowledged within the ack deadline or when
//! the subscriber reconnects. Each subscriber identity is its own consumer.

use super::mapping;
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use prost::Message;
use tokio::{
    sync::{Notify, mpsc, watch},
    time::Instant,
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    ResponseStream, invalid, peer, store_error, timestamp, to_pb_date, validate::Violations,
};
use crate::{
    domain::{Sha256Hex, deadlines},
    evidence::verify::ArtifactKind,
    proto::v1::{
        self as pb, AcknowledgeExtractRequest, DocumentChunk, EnergyExtract,
        ExtractAcknowledgement, ExtractDelivery, FetchDocumentRequest, SubscribeRequest,
        document_chunk::Part, energy_extract_service_server::EnergyExtractService,
    },
    store::{AckFacts, Clock, PendingExtract, QueuedAttempts, Store, StoreError},
};

/// Deliveries a stream holds for the transport beyond the one it is
/// handing over: a subscriber that does not read holds up this many (and
/// the one HTTP/2 buffers), whatever its window of unacknowledged extracts.
const QUEUED_PER_STREAM: usize = 2;
/// However quiet the database or however well changes hand on their
/// extracts, a stream reads again this often (an acknowledgement through
/// another replica, a missed notification).
const POLL: Duration = Duration::from_secs(5);
/// A stream whose window is full asks the database at most this often
/// which of its extracts were acknowledged through another replica (this
/// replica's acknowledgements it hears at once); a change it passed by for
/// this wakes it when the time is up.
const FULL_WINDOW_ASK: Duration = Duration::from_millis(250);
/// Longest a FetchDocument waits for the records of sendings to commit.
const UNRECORDED_WAIT: Duration = Duration::from_secs(5);

pub struct EnergyExtracts {
    store: Arc<dyn Store>,
    unrecorded: Arc<Unrecorded>,
    board: Arc<AckBoard>,
    clock: Arc<dyn Clock>,
    ack_deadline: Duration,
    /// `limits.max_in_flight`: the most a subscriber may have in flight.
    max_in_flight: u32,
    /// `limits.max_message_bytes`: a delivery larger is not sent.
    max_message_bytes: usize,
    /// `limits.max_subscribe_streams_per_identity`, and the streams open.
    open_streams: Arc<OpenStreams>,
    metrics: crate::metrics::Metrics,
    /// Becomes true when the gateway stops: every stream then ends cleanly.
    stopping: watch::Receiver<bool>,
}

impl EnergyExtracts {
    /// The service with the delivery limits of `limits` (`ack_deadline_ms`,
    /// `max_in_flight`, `max_message_bytes`,
    /// `max_subscribe_streams_per_identity`).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        limits: &crate::config::Limits,
        metrics: crate::metrics::Metrics,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        EnergyExtracts {
            open_streams: Arc::new(OpenStreams {
                max: limits.max_subscribe_streams_per_identity as usize,
                counts: Counts::default(),
            }),
            store,
            unrecorded: Arc::default(),
            board: Arc::default(),
            clock,
            ack_deadline: Duration::from_millis(limits.ack_deadline_ms),
            max_in_flight: limits.max_in_flight,
            max_message_bytes: limits.max_message_bytes,
            metrics,
            stopping,
        }
    }
}

/// Sendings whose records are queued but not committed yet, per subscriber.
/// A document is served only for extracts recorded as sent to the caller, so
/// a FetchDocument that comes right after a delivery waits for these.
#[derive(Default)]
struct Unrecorded {
    counts: Counts,
    settled: tokio::sync::Notify,
}

/// A count per identity; an identity at 0 has no entry.
#[derive(Default)]
struct Counts(std::sync::Mutex<HashMap<String, usize>>);

impl Counts {
    fn get(&self, key: &str) -> usize {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }

    /// One more for `key`, unless it has `max` already.
    fn add(&self, key: &str, max: usize) -> bool {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.to_owned()).or_default();
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn remove_one(&self, key: &str) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(key);
            }
        }
    }
}

impl Unrecorded {
    fn count(&self, subscriber: &str) -> usize {
        self.counts.get(subscriber)
    }

    /// Counts one queued record until the returned guard is dropped.
    fn add(self: &Arc<Self>, subscriber: &str) -> UnrecordedGuard {
        self.counts.add(subscriber, usize::MAX);
        UnrecordedGuard {
            unrecorded: self.clone(),
            subscriber: subscriber.to_owned(),
        }
    }

    /// Waits until no record of a sending to `subscriber` is outstanding, or `limit`.
    async fn wait(&self, subscriber: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count(subscriber) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// Acknowledgements taken by this process, passed to every stream of the
/// subscriber that made them: a stream frees its window without asking the
/// database. (It still asks when its window is full: an acknowledgement may
/// have come through another replica.) Each stream hears at most
/// [`BOARD_QUEUE`] not yet taken; one more is dropped for it, and it finds
/// that acknowledgement in the database once its window is full.
#[derive(Default)]
struct AckBoard(std::sync::Mutex<HashMap<String, Vec<mpsc::Sender<String>>>>);

/// Acknowledgements a stream may have waiting on the board.
const BOARD_QUEUE: usize = 1024;

impl AckBoard {
    fn listen(&self, subscriber: &str) -> mpsc::Receiver<String> {
        let (sender, receiver) = mpsc::channel(BOARD_QUEUE);
        let mut streams = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = streams.entry(subscriber.to_owned()).or_default();
        list.retain(|s| !s.is_closed());
        list.push(sender);
        receiver
    }

    fn acknowledged(&self, subscriber: &str, extract_id: &str) {
        use mpsc::error::TrySendError;
        let mut streams = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = streams.get_mut(subscriber) {
            list.retain(|s| {
                !matches!(
                    s.try_send(extract_id.to_owned()),
                    Err(TrySendError::Closed(_))
                )
            });
            if list.is_empty() {
                streams.remove(subscriber);
            }
        }
    }
}

/// What a Subscribe stream's feed hands to the transport: a delivery with
/// what records it once the transport takes it, or the status that ends
/// the stream.
enum Outgoing {
    Delivery(Box<ExtractDelivery>, Taken),
    End(Status),
}

type Outbox = mpsc::Sender<Outgoing>;

/// The response stream of a Subscribe call. tonic takes the next delivery
/// only when HTTP/2 has room to send it, so a delivery is recorded as sent
/// only once the transport has it: one that waits behind a subscriber that
/// does not read is recorded by nothing, and dropped with the stream.
fn transport(outbox: mpsc::Receiver<Outgoing>) -> ResponseStream<ExtractDelivery> {
    Box::pin(ReceiverStream::new(outbox).map(|outgoing| match outgoing {
        Outgoing::Delivery(mut delivery, taken) => {
            taken.record(&mut delivery);
            Ok(*delivery)
        }
        Outgoing::End(status) => Err(status),
    }))
}

/// Records the sendings of one Subscribe stream as the transport takes
/// them, and tells its feed.
struct Recorder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    unrecorded: Arc<Unrecorded>,
    subscriber: String,
    /// Records that failed: the feed ends the stream, and the subscriber
    /// reconnects and gets what they were for again.
    failures: mpsc::Sender<StoreError>,
    /// Each take: the feed counts an acknowledgement's deadline from it.
    taken: Notify,
}

impl Recorder {
    /// Waits in the background for a record to be queued and to commit;
    /// until then the sending counts as unrecorded (`guard`). When the
    /// stream ends first the record is left to finish, not cancelled.
    fn settle(
        self: &Arc<Self>,
        queued: impl Future<Output = Result<QueuedAttempts, StoreError>> + Send + 'static,
        guard: UnrecordedGuard,
    ) {
        let recorder = self.clone();
        tokio::spawn(async move {
            let recorded = match queued.await {
                Ok(queued) => queued.await.unwrap_or(Err(StoreError::WriterStopped)),
                Err(error) => Err(error),
            };
            drop(guard);
            if let Err(error) = recorded {
                let _ = recorder.failures.try_send(error);
            }
        });
    }
}

/// The sending of one delivery, recorded when the transport takes it.
struct Taken {
    recorder: Arc<Recorder>,
    extract_id: String,
    /// When the transport took it, for the feed.
    at: Arc<OnceLock<Instant>>,
}

impl Taken {
    /// Stamps the delivery with the instant of taking and queues its
    /// EXTRACT_SENT record at once, before its bytes leave: the writer takes
    /// jobs in order, so the record commits before any acknowledgement of
    /// it. With the writer's queue full it waits for room in the
    /// background, and an acknowledgement that comes first waits for it.
    fn record(self, delivery: &mut ExtractDelivery) {
        let recorder = &self.recorder;
        let subscriber = &recorder.subscriber;
        let sent_at = recorder.clock.now();
        delivery.sent_at = Some(timestamp(sent_at));
        let _ = self.at.set(Instant::now());
        let guard = recorder.unrecorded.add(subscriber);
        let queued = recorder
            .store
            .try_queue_sending(&self.extract_id, subscriber, sent_at);
        let (store, id, who) = (
            recorder.store.clone(),
            self.extract_id.clone(),
            subscriber.clone(),
        );
        let queued = async move {
            match queued? {
                Some(queued) => Ok(queued),
                None => {
                    store
                        .queue_attempts(vec![id], Vec::new(), &who, sent_at)
                        .await
                }
            }
        };
        recorder.settle(queued, guard);
        recorder.taken.notify_one();
        tracing::info!(%subscriber, extract_id = %self.extract_id, attempt = delivery.attempt, "extract sent");
    }
}

/// One outstanding record; dropping it (committed, failed, or the stream
/// gone) settles it.
struct UnrecordedGuard {
    unrecorded: Arc<Unrecorded>,
    subscriber: String,
}

impl Drop for UnrecordedGuard {
    fn drop(&mut self) {
        self.unrecorded.counts.remove_one(&self.subscriber);
        self.unrecorded.settled.notify_waiters();
    }
}

/// What one stream has sent: in flight (id → sequence number, when), its
/// last attempt of each, the floor below which all is acknowledged, and how
/// far it knows what is pending.
struct Sent {
    /// This subscriber's acknowledgements through this process.
    acks: mpsc::Receiver<String>,
    /// Handed to the transport: id → sequence number, when it was taken
    /// (unset while it waits to be; the deadline runs from the taking).
    in_flight: HashMap<String, (i64, Arc<OnceLock<Instant>>)>,
    attempts: HashMap<String, (i64, u32)>,
    floor: i64,
    /// `Some(n)`: every extract pending for this subscriber up to sequence
    /// number `n` is in flight, so extracts a change hands on with greater
    /// numbers can go out without reading. `None`: the next change must be
    /// read (the last read was cut at its limit, or the window filled).
    known: Option<i64>,
    /// Extracts this stream could not send (recorded as failed once): read
    /// past, so they hold up none behind them.
    unsendable: HashMap<String, i64>,
    /// When a full window last asked the database what was acknowledged.
    asked_when_full: Option<Instant>,
    /// When to ask again: a read found the window full and had asked lately.
    ask_again: Option<Instant>,
}

impl Sent {
    fn new(acks: mpsc::Receiver<String>) -> Self {
        Sent {
            acks,
            in_flight: HashMap::new(),
            attempts: HashMap::new(),
            floor: 0,
            known: None,
            unsendable: Default::default(),
            asked_when_full: None,
            ask_again: None,
        }
    }

    /// Forgets what this subscriber acknowledged through this process.
    fn take_acks(&mut self) {
        while let Ok(id) = self.acks.try_recv() {
            self.forget(&id);
        }
    }

    fn forget(&mut self, id: &str) {
        self.in_flight.remove(id);
        self.attempts.remove(id);
    }
}

/// One Subscribe stream's subscriber and settings.
struct Feed {
    unrecorded: Arc<Unrecorded>,
    recorder: Arc<Recorder>,
    board: Arc<AckBoard>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    subscriber: String,
    max_in_flight: usize,
    max_message_bytes: usize,
    metrics: crate::metrics::Metrics,
    ack_deadline: Duration,
    until_caught_up: bool,
}

/// Feeds one Subscribe stream until the subscriber goes away. It reads
/// what is pending when it starts, when an extract's acknowledgement is
/// overdue, when its window was full, when a change it has not looked at
/// is no longer kept or does not say what it made (another replica's), and
/// every [`POLL`]; changes of this process hand on their extracts with no
/// read.
async fn deliver(
    feed: Feed,
    stream: Outbox,
    mut failures: mpsc::Receiver<StoreError>,
    mut stopping: watch::Receiver<bool>,
) {
    let Feed {
        ref store,
        ref subscriber,
        ack_deadline,
        until_caught_up,
        ..
    } = feed;
    // A reconnect: the records of what the previous stream sent commit
    // first, so the attempt numbers sent again count them.
    feed.unrecorded.wait(subscriber, UNRECORDED_WAIT).await;
    let mut changes = store.changes();
    let mut seen = 0;
    let mut sent = Sent::new(feed.board.listen(subscriber));
    let mut read = true;
    let mut last_read = Instant::now();
    loop {
        if read {
            // Every change up to `seen` is visible to the read that follows.
            seen = changes.borrow_and_update().count;
            last_read = Instant::now();
            if let Err(status) = fill(&feed, &mut sent, &stream).await {
                return end(&stream, status).await;
            }
        }
        read = true;
        let expiry = sent
            .in_flight
            .values()
            .filter_map(|(_, taken)| taken.get().copied())
            .min()
            .map(|taken| taken + ack_deadline);
        let wake = [expiry, sent.ask_again]
            .into_iter()
            .flatten()
            .fold(last_read + POLL, Instant::min);
        if until_caught_up && sent.in_flight.is_empty() {
            tracing::info!(%subscriber, "caught up: stream ended");
            return;
        }
        if *stopping.borrow() {
            tracing::info!(%subscriber, "gateway stopping: stream ended");
            return;
        }
        tokio::select! {
            () = stream.closed() => return,
            Some(error) = failures.recv() => {
                // What this stream sent may not be acknowledgeable: the
                // subscriber reconnects and gets it again.
                tracing::warn!(%subscriber, %error, "the sending of an extract was not recorded: stream ended");
                return end(&stream, Some(store_error(error))).await;
            }
            // Its deadline now runs: wake for it.
            () = feed.recorder.taken.notified() => read = false,
            // Acknowledged through this replica: a full window has room.
            Some(id) = sent.acks.recv() => {
                let full = sent.in_flight.len() >= feed.max_in_flight;
                sent.forget(&id);
                read = full;
            }
            _ = stopping.changed() => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let change = changes.borrow_and_update().clone();
                // What the changes since the last look made, if known here:
                // no read.
                let made = change.made_since(seen);
                seen = change.count;
                if let Some(made) = made {
                    match send_fresh(&feed, &mut sent, &stream, made).await {
                        Ok(sent_all) => read = !sent_all,
                        Err(status) => return end(&stream, status).await,
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Ends a stream: with `status` if there is one (`None`: the subscriber went away).
async fn end(stream: &Outbox, status: Option<Status>) {
    if let Some(status) = status {
        let _ = stream.send(Outgoing::End(status)).await;
    }
}

/// Forgets what was acknowledged or timed out, then reads what is pending
/// and sends it, up to the in-flight limit. `Err(None)`: the subscriber
/// went away. `floor` rises past what is acknowledged, so the pending query
/// does not walk the whole history each time.
async fn fill(feed: &Feed, sent: &mut Sent, stream: &Outbox) -> Result<(), Option<Status>> {
    loop {
        let unsendable = sent.unsendable.len();
        fill_once(feed, sent, stream).await?;
        if sent.unsendable.len() == unsendable {
            return Ok(());
        }
        // What could not be sent took room it does not hold: read past it.
    }
}

async fn fill_once(feed: &Feed, sent: &mut Sent, stream: &Outbox) -> Result<(), Option<Status>> {
    let Feed {
        store,
        subscriber,
        max_in_flight,
        ack_deadline,
        ..
    } = feed;
    let (max_in_flight, ack_deadline) = (*max_in_flight, *ack_deadline);
    sent.take_acks();
    let asked_lately = sent
        .asked_when_full
        .is_some_and(|at| at.elapsed() < FULL_WINDOW_ASK);
    let full = sent.in_flight.len() >= max_in_flight;
    sent.ask_again = sent
        .asked_when_full
        .filter(|_| full && asked_lately)
        .map(|at| at + FULL_WINDOW_ASK);
    if full && !asked_lately {
        // The window is full: some may have been acknowledged elsewhere.
        sent.asked_when_full = Some(Instant::now());
        let ids: Vec<String> = sent.in_flight.keys().cloned().collect();
        for id in store
            .acknowledged(subscriber, &ids)
            .await
            .map_err(|e| Some(store_error(e)))?
        {
            sent.in_flight.remove(&id);
            sent.attempts.remove(&id);
        }
    }
    let now = Instant::now();
    // One the transport has not taken yet waits, however long.
    sent.in_flight.retain(|_, (_, taken)| {
        taken
            .get()
            .is_none_or(|at| now.duration_since(*at) < ack_deadline)
    });
    let room = max_in_flight.saturating_sub(sent.in_flight.len());
    if room == 0 {
        sent.known = None;
        return Ok(());
    }
    // Only what this stream has not sent yet is read.
    let skip: Vec<i64> = sent
        .in_flight
        .values()
        .map(|(seq, _)| *seq)
        .chain(sent.unsendable.values().copied())
        .collect();
    let pending = store
        .pending_extracts(subscriber, sent.floor, room as u32, &skip)
        .await
        .map_err(|e| Some(store_error(e)))?;
    // Below the oldest extract still pending or in flight, all are acknowledged.
    let oldest_open = pending
        .iter()
        .map(|p| p.seq)
        .chain(sent.in_flight.values().map(|(seq, _)| *seq))
        .min();
    if let Some(oldest) = oldest_open {
        sent.floor = sent.floor.max(oldest);
    }
    let floor = sent.floor;
    sent.attempts.retain(|_, (seq, _)| *seq >= floor);
    // A read that was not cut short saw everything pending: all of it is
    // in flight once sent.
    sent.known = (pending.len() < room).then(|| {
        pending
            .iter()
            .map(|p| p.seq)
            .chain(sent.in_flight.values().map(|(seq, _)| *seq))
            .chain(sent.known)
            .max()
            .unwrap_or(0)
    });
    let to_send: Vec<&PendingExtract> = pending.iter().collect();
    send(feed, sent, stream, to_send).await
}

/// Sends the extracts a change handed on, if this stream knows everything
/// pending before them and has room for them all: `Ok(false)` if it must
/// read instead.
async fn send_fresh(
    feed: &Feed,
    sent: &mut Sent,
    stream: &Outbox,
    extracts: Vec<&PendingExtract>,
) -> Result<bool, Option<Status>> {
    let Some(known) = sent.known else {
        return Ok(false);
    };
    sent.take_acks();
    let fresh: Vec<&PendingExtract> = extracts
        .into_iter()
        .filter(|e| e.seq > known && !sent.in_flight.contains_key(&e.extract_id))
        .collect();
    if sent.in_flight.len() + fresh.len() > feed.max_in_flight {
        sent.known = None;
        return Ok(false);
    }
    sent.known = fresh.iter().map(|e| e.seq).max().max(Some(known));
    send(feed, sent, stream, fresh).await?;
    Ok(true)
}

/// The longest `sent_at` a delivery can carry. A delivery's size is
/// checked with it in place of the instant of taking, stamped later.
const LONGEST_STAMP: pbjson_types::Timestamp = pbjson_types::Timestamp {
    seconds: i64::MAX,
    nanos: 999_999_999,
};

/// Sends `extracts`, each only if it can go in one message: one handed
/// over is recorded as sent once the transport takes it ([`Taken`]). Each
/// that cannot be sent is recorded at once as a failed attempt with the
/// reason (EXTRACT_SEND_FAILED), and read past from then on.
async fn send(
    feed: &Feed,
    sent: &mut Sent,
    stream: &Outbox,
    extracts: Vec<&PendingExtract>,
) -> Result<(), Option<Status>> {
    let (mut sendable, mut failed) = (Vec::new(), Vec::new());
    for extract in extracts {
        match delivery(feed, sent, extract).await {
            Ok(delivery) if delivery.encoded_len() <= feed.max_message_bytes => {
                sendable.push((extract, delivery));
            }
            Ok(delivery) => failed.push((
                extract,
                format!(
                    "the extract with its evidence is {} bytes, more than one message may be \
                     ({} bytes, limits.max_message_bytes)",
                    delivery.encoded_len(),
                    feed.max_message_bytes
                ),
            )),
            // Its stored bytes are damaged: no later read will do better.
            Err(status) if status.code() == tonic::Code::DataLoss => {
                failed.push((extract, status.message().to_owned()));
            }
            Err(status) => return Err(Some(status)),
        }
    }
    record_failures(feed, sent, failed).await?;
    for (extract, delivery) in sendable {
        let at = Arc::new(OnceLock::new());
        let taken = Taken {
            recorder: feed.recorder.clone(),
            extract_id: extract.extract_id.clone(),
            at: at.clone(),
        };
        let attempt = delivery.attempt;
        if stream
            .send(Outgoing::Delivery(Box::new(delivery), taken))
            .await
            .is_err()
        {
            return Err(None);
        }
        sent.attempts
            .insert(extract.extract_id.clone(), (extract.seq, attempt));
        sent.in_flight
            .insert(extract.extract_id.clone(), (extract.seq, at));
    }
    Ok(())
}

/// Records each of `failed` (with the reason) as a failed attempt, by one
/// writer job not waited for, and reads past them from now on.
async fn record_failures(
    feed: &Feed,
    sent: &mut Sent,
    failed: Vec<(&PendingExtract, String)>,
) -> Result<(), Option<Status>> {
    if failed.is_empty() {
        return Ok(());
    }
    let Feed {
        store,
        clock,
        subscriber,
        ..
    } = feed;
    for (extract, reason) in &failed {
        tracing::error!(%subscriber, extract_id = %extract.extract_id, %reason, "extract not sent");
        feed.metrics.extract_send_failed();
        sent.unsendable
            .insert(extract.extract_id.clone(), extract.seq);
    }
    let failed = failed
        .into_iter()
        .map(|(extract, reason)| (extract.extract_id.clone(), reason))
        .collect();
    let queued = store
        .queue_attempts(Vec::new(), failed, subscriber, clock.now())
        .await
        .map_err(|e| Some(store_error(e)))?;
    let guard = feed.unrecorded.add(subscriber);
    feed.recorder.settle(async { Ok(queued) }, guard);
    Ok(())
}

/// The message that sends `extract`, with its evidence, stamped with the
/// longest instant until the transport takes it.
async fn delivery(
    feed: &Feed,
    sent: &Sent,
    extract: &PendingExtract,
) -> Result<ExtractDelivery, Status> {
    let mut body = EnergyExtract::decode(extract.body.as_slice())
        .map_err(|_| Status::data_loss("the stored extract is unreadable"))?;
    body.evidence = Some(match &extract.evidence {
        // Proven by the writer that made it, from its commit's checkpoint.
        Some(evidence) => super::to_pb_evidence((**evidence).clone(), extract.body.clone()),
        None => {
            super::evidence(
                &*feed.store,
                ArtifactKind::Extract,
                &extract.extract_id,
                extract.body.clone(),
            )
            .await?
        }
    });
    // The records of its earlier sendings on this stream may not have
    // committed yet: the stream's own count is at least as far.
    let earlier = sent
        .attempts
        .get(&extract.extract_id)
        .map_or(0, |(_, n)| *n);
    Ok(ExtractDelivery {
        extract: Some(body),
        attempt: extract.attempts.max(earlier).saturating_add(1),
        sent_at: Some(LONGEST_STAMP),
    })
}

/// The acknowledgement receipt of `extract_id` by `subscriber`, made once
/// the writer knows when and what was due.
fn ack_builder(extract_id: &str, subscriber: &str) -> crate::store::AckBuilder {
    let (id, subscriber) = (extract_id.to_owned(), subscriber.to_owned());
    Box::new(move |facts: &AckFacts| {
        ExtractAcknowledgement {
            extract_id: id.clone(),
            subscriber: subscriber.clone(),
            acknowledged_at: Some(timestamp(facts.acknowledged_at)),
            due_date: Some(to_pb_date(facts.due_date)),
            deadline_met: deadlines::local_date(facts.acknowledged_at) <= facts.due_date,
            ..Default::default()
        }
        .encode_to_vec()
    })
}

/// The Subscribe streams open per identity, at most `max` each.
struct OpenStreams {
    max: usize,
    counts: Counts,
}

/// One open stream, counted until it drops.
struct OpenStream {
    streams: Arc<OpenStreams>,
    identity: String,
}

impl OpenStreams {
    fn open(self: &Arc<Self>, identity: &str) -> Option<OpenStream> {
        if !self.counts.add(identity, self.max) {
            return None;
        }
        Some(OpenStream {
            streams: self.clone(),
            identity: identity.to_owned(),
        })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.streams.counts.remove_one(&self.identity);
    }
}

#[tonic::async_trait]
impl EnergyExtractService for EnergyExtracts {
    type SubscribeStream = ResponseStream<ExtractDelivery>;
    type FetchDocumentStream = ResponseStream<DocumentChunk>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = peer(&request)?;
        let Some(open) = self.open_streams.open(&caller.identity) else {
            return Err(super::resource_exhausted(
                format!(
                    "{} already has {} Subscribe streams open \
                     (limits.max_subscribe_streams_per_identity); end one first",
                    caller.identity, self.open_streams.max
                ),
                super::access::RETRY_AFTER,
            ));
        };
        let max_in_flight = match request.get_ref().max_in_flight {
            0 => self.max_in_flight,
            n => n.min(self.max_in_flight),
        } as usize;
        let (sender, receiver) = mpsc::channel(QUEUED_PER_STREAM.min(max_in_flight));
        // One failed record ends the stream: one is all it needs to hear.
        let (failed, failures) = mpsc::channel(1);
        let until_caught_up = request.get_ref().until_caught_up;
        tracing::info!(subscriber = %caller.identity, max_in_flight, until_caught_up, "subscriber connected");
        let recorder = Arc::new(Recorder {
            store: self.store.clone(),
            clock: self.clock.clone(),
            unrecorded: self.unrecorded.clone(),
            subscriber: caller.identity.clone(),
            failures: failed,
            taken: Notify::new(),
        });
        let feed = Feed {
            unrecorded: self.unrecorded.clone(),
            recorder,
            board: self.board.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            subscriber: caller.identity,
            max_in_flight,
            max_message_bytes: self.max_message_bytes,
            metrics: self.metrics.clone(),
            ack_deadline: self.ack_deadline,
            until_caught_up,
        };
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            deliver(feed, sender, failures, stopping).await;
            drop(open);
        });
        Ok(Response::new(transport(receiver)))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeExtractRequest>,
    ) -> Result<Response<ExtractAcknowledgement>, Status> {
        let caller = peer(&request)?;
        let extract_id = request.into_inner().extract_id;
        if extract_id.is_empty() {
            let mut v = Violations::default();
            v.add("extract_id", "is required");
            return Err(invalid(&v));
        }
        let subscriber = &caller.identity;
        let acknowledge = || {
            self.store.acknowledge_extract(
                &extract_id,
                subscriber,
                ack_builder(&extract_id, subscriber),
            )
        };
        let mut receipt = acknowledge().await.map_err(store_error)?;
        if receipt.is_none() && self.unrecorded.count(subscriber) > 0 {
            // Handed to this subscriber's stream, its record not committed yet.
            self.unrecorded.wait(subscriber, UNRECORDED_WAIT).await;
            receipt = acknowledge().await.map_err(store_error)?;
        }
        let receipt = receipt.ok_or_else(|| {
            Status::not_found(format!(
                "no extract {extract_id:?} has been sent to this subscriber"
            ))
        })?;
        let mut ack = ExtractAcknowledgement::decode(receipt.bytes.as_slice())
            .map_err(|_| Status::internal("a stored acknowledgement is unreadable"))?;
        ack.evidence = Some(
            super::recorded_evidence(&*self.store, ArtifactKind::ExtractAck, &extract_id, receipt)
                .await?,
        );
        self.board.acknowledged(&caller.identity, &extract_id);
        tracing::info!(subscriber = %caller.identity, %extract_id, "extract acknowledged");
        Ok(Response::new(ack))
    }

    async fn fetch_document(
        &self,
        request: Request<FetchDocumentRequest>,
    ) -> Result<Response<Self::FetchDocumentStream>, Status> {
        let caller = peer(&request)?;
        let wanted = request.into_inner().sha256;
        let digest = Sha256Hex::parse(&wanted).map_err(|reason| {
            let mut v = Violations::default();
            v.add("sha256", reason);
            invalid(&v)
        })?;
        // A document not referenced by an extract sent to this subscriber
        // answers exactly as one that does not exist.
        // Counted before the look-up: a record that commits during it may
        // not be seen by it.
        let unrecorded = self.unrecorded.count(&caller.identity);
        let mut document = self
            .store
            .document_for(digest.as_str(), &caller.identity)
            .await
            .map_err(store_error)?;
        // An extract just sent may not be recorded as sent yet.
        if document.is_none() && unrecorded > 0 {
            self.unrecorded
                .wait(&caller.identity, UNRECORDED_WAIT)
                .await;
            document = self
                .store
                .document_for(digest.as_str(), &caller.identity)
                .await
                .map_err(store_error)?;
        }
        let document =
            document.ok_or_else(|| Status::not_found(format!("no document {digest}")))?;
        let metadata = pb::DocumentRef {
            kind: mapping::document_kind(document.kind) as i32,
            sha256: digest.to_string(),
            media_type: document.media_type.clone(),
            size_bytes: document.size_bytes,
            file_name: String::new(),
        };
        // The chunks are read one at a time as the client takes them: a
        // fetch holds at most two chunks in memory, whatever the size.
        let (parts, stream) = mpsc::channel(1);
        let store = self.store.clone();
        tokio::spawn(async move {
            let first = DocumentChunk {
                part: Some(Part::Metadata(metadata)),
            };
            if parts.send(Ok(first)).await.is_err() {
                return;
            }
            for index in 0..document.chunks() {
                let part = match store.document_chunk(&document.upload_id, index).await {
                    Ok(Some(data)) => Ok(DocumentChunk {
                        part: Some(Part::Data(data)),
                    }),
                    Ok(None) => Err(Status::internal(format!(
                        "chunk {index} of document {digest} is missing"
                    ))),
                    Err(error) => Err(store_error(error)),
                };
                let failed = part.is_err();
                if parts.send(part).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }
}
