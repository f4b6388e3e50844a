//! EnergyExtractService: the energy ministry receives the §6 extracts.
//! Delivery is at-least-once with idempotent acknowledgement: a stream sends
//! what is pending for its subscriber (not a high-water mark: on PostgreSQL
//! ids commit out of order), at most `max_in_flight` unacknowledged at once,
//! and sends again what is not acknowledged within the ack deadline or when
//! the subscriber reconnects. Each subscriber identity is its own consumer.

use std::{collections::HashMap, sync::Arc, time::Duration};

use prost::Message;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    ResponseStream, invalid, peer, store_error, timestamp, to_pb_date, validate::Violations,
};
use crate::{
    domain::{Sha256Hex, deadlines},
    proto::v1::{
        self as pb, AcknowledgeExtractRequest, DocumentChunk, EnergyExtract,
        ExtractAcknowledgement, ExtractDelivery, FetchDocumentRequest, SubscribeRequest,
        document_chunk::Part, energy_extract_service_server::EnergyExtractService,
    },
    signing::Signer,
    store::{AckFacts, Store},
};

/// Bytes per FetchDocument chunk.
const CHUNK: usize = 64 * 1024;
/// Most in flight a subscriber may ask for.
const MAX_IN_FLIGHT: u32 = 1024;
/// However quiet the database, a stream looks again this often (an
/// acknowledgement through another replica, a missed notification).
const POLL: Duration = Duration::from_secs(5);

pub struct EnergyExtracts {
    store: Arc<dyn Store>,
    signer: Arc<Signer>,
    ack_deadline: Duration,
    default_in_flight: u32,
    /// Becomes true when the gateway stops: every stream then ends cleanly.
    stopping: watch::Receiver<bool>,
}

impl EnergyExtracts {
    pub fn new(
        store: Arc<dyn Store>,
        signer: Arc<Signer>,
        ack_deadline: Duration,
        default_in_flight: u32,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        EnergyExtracts {
            store,
            signer,
            ack_deadline,
            default_in_flight,
            stopping,
        }
    }
}

/// Feeds one Subscribe stream until the subscriber goes away.
async fn deliver(
    store: Arc<dyn Store>,
    subscriber: String,
    max_in_flight: usize,
    ack_deadline: Duration,
    stream: mpsc::Sender<Result<ExtractDelivery, Status>>,
    mut stopping: watch::Receiver<bool>,
    until_caught_up: bool,
) {
    let mut changes = store.changes();
    // extract id → (its sequence number, when this stream last sent it)
    let mut in_flight: HashMap<String, (i64, Instant)> = HashMap::new();
    // Every extract below this sequence number is acknowledged by this subscriber.
    let mut floor = 0;
    loop {
        if let Err(status) = fill(
            &*store,
            &subscriber,
            max_in_flight,
            ack_deadline,
            &stream,
            &mut in_flight,
            &mut floor,
        )
        .await
        {
            if let Some(status) = status {
                let _ = stream.send(Err(status)).await;
            }
            return;
        }
        let expiry = in_flight
            .values()
            .map(|(_, sent)| *sent)
            .min()
            .map(|sent| sent + ack_deadline);
        let wake = expiry.map_or(Instant::now() + POLL, |at| at.min(Instant::now() + POLL));
        if until_caught_up && in_flight.is_empty() {
            tracing::info!(%subscriber, "caught up: stream ended");
            return;
        }
        if *stopping.borrow() {
            tracing::info!(%subscriber, "gateway stopping: stream ended");
            return;
        }
        tokio::select! {
            () = stream.closed() => return,
            _ = stopping.changed() => {}
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Forgets what was acknowledged or timed out, then sends pending extracts up
/// to the in-flight limit, recording their attempts in one job. `Err(None)`:
/// the subscriber went away. `floor` rises past what is acknowledged, so the
/// pending query does not walk the whole history each time.
async fn fill(
    store: &dyn Store,
    subscriber: &str,
    max_in_flight: usize,
    ack_deadline: Duration,
    stream: &mpsc::Sender<Result<ExtractDelivery, Status>>,
    in_flight: &mut HashMap<String, (i64, Instant)>,
    floor: &mut i64,
) -> Result<(), Option<Status>> {
    if !in_flight.is_empty() {
        let ids: Vec<String> = in_flight.keys().cloned().collect();
        for id in store
            .acknowledged(subscriber, &ids)
            .await
            .map_err(|e| Some(store_error(e)))?
        {
            in_flight.remove(&id);
        }
        let now = Instant::now();
        in_flight.retain(|_, (_, sent)| now.duration_since(*sent) < ack_deadline);
    }
    let room = max_in_flight.saturating_sub(in_flight.len());
    if room == 0 {
        return Ok(());
    }
    let pending = store
        .pending_extracts(subscriber, *floor, (in_flight.len() + room) as u32)
        .await
        .map_err(|e| Some(store_error(e)))?;
    // Below the oldest extract still pending or in flight, all are acknowledged.
    let oldest_open = pending
        .iter()
        .map(|p| p.seq)
        .chain(in_flight.values().map(|(seq, _)| *seq))
        .min();
    if let Some(oldest) = oldest_open {
        *floor = (*floor).max(oldest);
    }
    let to_send: Vec<_> = pending
        .into_iter()
        .filter(|p| !in_flight.contains_key(&p.extract_id))
        .take(room)
        .collect();
    if to_send.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = to_send.iter().map(|p| p.extract_id.clone()).collect();
    let (attempts, sent_at) = store
        .record_attempts(&ids, subscriber)
        .await
        .map_err(|e| Some(store_error(e)))?;
    for (extract, attempt) in to_send.into_iter().zip(attempts) {
        let body = EnergyExtract::decode(extract.body.as_slice())
            .map_err(|_| Some(Status::internal("a stored extract is unreadable")))?;
        tracing::info!(%subscriber, extract_id = %extract.extract_id, attempt, "extract sent");
        let delivery = ExtractDelivery {
            extract: Some(body),
            attempt,
            sent_at: Some(timestamp(sent_at)),
        };
        if stream.send(Ok(delivery)).await.is_err() {
            return Err(None);
        }
        in_flight.insert(extract.extract_id, (extract.seq, Instant::now()));
    }
    Ok(())
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
        let max_in_flight = match request.get_ref().max_in_flight {
            0 => self.default_in_flight,
            n => n.min(MAX_IN_FLIGHT),
        } as usize;
        let (sender, receiver) = mpsc::channel(max_in_flight);
        let until_caught_up = request.get_ref().until_caught_up;
        tracing::info!(subscriber = %caller.identity, max_in_flight, until_caught_up, "subscriber connected");
        tokio::spawn(deliver(
            self.store.clone(),
            caller.identity,
            max_in_flight,
            self.ack_deadline,
            sender,
            self.stopping.clone(),
            until_caught_up,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
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
        let signer = self.signer.clone();
        let (id, subscriber) = (extract_id.clone(), caller.identity.clone());
        let build = Box::new(move |facts: &AckFacts| {
            let mut ack = ExtractAcknowledgement {
                extract_id: id,
                subscriber,
                acknowledged_at: Some(timestamp(facts.acknowledged_at)),
                due_date: Some(to_pb_date(facts.due_date)),
                deadline_met: deadlines::local_date(facts.acknowledged_at) <= facts.due_date,
                signature: None,
            };
            signer.sign_message(&mut ack);
            ack.encode_to_vec()
        });
        let receipt = self
            .store
            .acknowledge_extract(&extract_id, &caller.identity, build)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no extract {extract_id:?} has been sent to this subscriber"
                ))
            })?;
        let ack = ExtractAcknowledgement::decode(receipt.as_slice())
            .map_err(|_| Status::internal("a stored acknowledgement is unreadable"))?;
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
        let document = self
            .store
            .document_for(digest.as_str(), &caller.identity)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("no document {digest}")))?;
        let metadata = pb::DocumentRef {
            kind: pb::DocumentKind::from_str_name(&format!("DOCUMENT_KIND_{}", document.kind))
                .unwrap_or_default() as i32,
            sha256: digest.to_string(),
            media_type: document.media_type.clone(),
            size_bytes: document.content.len() as u64,
            file_name: String::new(),
        };
        let mut parts = vec![Ok(DocumentChunk {
            part: Some(Part::Metadata(metadata)),
        })];
        parts.extend(document.content.chunks(CHUNK).map(|chunk| {
            Ok(DocumentChunk {
                part: Some(Part::Data(chunk.to_vec())),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(parts))))
    }
}
