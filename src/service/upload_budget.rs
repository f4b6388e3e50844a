//! The bytes document uploads in progress may hold, over all calls
//! (`limits.upload_bytes_in_flight`). An upload starts only with a
//! reservation of what it holds with messages of one stored chunk: its
//! HTTP/2 stream window, the message tonic is decoding, the message
//! decoded, the chunk being filled and the chunk on its way to the
//! database. A client may send larger messages (up to
//! `limits.max_message_bytes`): the request body is read through
//! [`BudgetedBody`], which sees each gRPC message's length in its 5-byte
//! prefix before tonic buffers the message, and grows the reservation by
//! twice the excess (buffered, then decoded) first. An upload that finds no
//! room is refused RESOURCE_EXHAUSTED with a retry hint; nothing waits.
//! The chunk on its way to the database is its own part of the
//! reservation ([`ChunkOnItsWay`]), which the handler hands to each chunk's
//! write: a write that outlives its call (the client gone while the chunk
//! commits) keeps that part until it ends.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Status, body::Body};

use crate::store::DOCUMENT_CHUNK_BYTES;

/// The budget is counted in KiB: a semaphore's permits are fewer than a
/// large budget's bytes.
const KIB: u64 = 1024;

/// A gRPC message's prefix: a compression flag and a 4-byte length.
const PREFIX_BYTES: usize = 5;

/// What the protobuf encoding adds around a chunk's bytes (field tag and
/// length).
const CHUNK_MESSAGE_OVERHEAD: usize = 16;

/// Uploads' share of memory, shared by every call.
#[derive(Clone)]
pub struct UploadBudget {
    bytes: u64,
    kib: Arc<Semaphore>,
    /// An upload's reservation with messages of one chunk, in KiB.
    base_kib: u32,
    retry_after: Duration,
}

impl UploadBudget {
    pub fn new(bytes: u64, stream_window: u32, retry_after: Duration) -> Self {
        let held = stream_window as u64 + 4 * DOCUMENT_CHUNK_BYTES as u64;
        let permits = (bytes / KIB).min(Semaphore::MAX_PERMITS as u64) as usize;
        UploadBudget {
            bytes,
            kib: Arc::new(Semaphore::new(permits)),
            base_kib: held.div_ceil(KIB).min(u32::MAX as u64) as u32,
            retry_after,
        }
    }

    /// The reservation for one more upload and the part of it for the
    /// chunk on its way to the database, or its refusal.
    pub fn reserve(&self) -> Result<(UploadReservation, ChunkOnItsWay), Status> {
        let mut permit = self
            .kib
            .clone()
            .try_acquire_many_owned(self.base_kib)
            .map_err(|_| self.refusal())?;
        let chunk_kib = (DOCUMENT_CHUNK_BYTES as u64).div_ceil(KIB) as usize;
        let chunk = permit
            .split(chunk_kib.min(permit.num_permits()))
            .expect("a permit splits up to its size");
        let reservation = UploadReservation {
            permit,
            budget: self.clone(),
            message_allowance: DOCUMENT_CHUNK_BYTES + CHUNK_MESSAGE_OVERHEAD,
        };
        Ok((reservation, ChunkOnItsWay(Arc::new(chunk))))
    }

    fn refusal(&self) -> Status {
        super::resource_exhausted(
            format!(
                "uploads in progress hold the {} bytes the gateway gives them \
                 (limits.upload_bytes_in_flight); retry in {} s",
                self.bytes,
                self.retry_after.as_secs()
            ),
            self.retry_after,
        )
    }
}

/// The part of an upload's reservation for the chunk on its way to the
/// database, given back when the last clone drops: the call's and each
/// chunk write's.
#[derive(Clone)]
pub struct ChunkOnItsWay(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// One upload's part of the budget, given back when it drops.
pub struct UploadReservation {
    permit: OwnedSemaphorePermit,
    budget: UploadBudget,
    /// The longest message the reservation covers.
    message_allowance: usize,
}

impl UploadReservation {
    /// Makes room for a message of `length` bytes, or refuses it.
    fn cover(&mut self, length: usize) -> Result<(), Status> {
        if length <= self.message_allowance {
            return Ok(());
        }
        let more = (2 * (length - self.message_allowance) as u64).div_ceil(KIB);
        let more = u32::try_from(more).map_err(|_| self.budget.refusal())?;
        let permit = self
            .budget
            .kib
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| self.budget.refusal())?;
        self.permit.merge(permit);
        self.message_allowance = length;
        Ok(())
    }
}

/// An upload's request body, holding its reservation and growing it for a
/// message longer than one chunk before tonic buffers that message.
pub struct BudgetedBody {
    body: Body,
    reservation: UploadReservation,
    prefix: [u8; PREFIX_BYTES],
    prefix_read: usize,
    /// Bytes of the current message still to pass.
    message_left: usize,
}

impl BudgetedBody {
    pub fn new(body: Body, reservation: UploadReservation) -> Self {
        BudgetedBody {
            body,
            reservation,
            prefix: [0; PREFIX_BYTES],
            prefix_read: 0,
            message_left: 0,
        }
    }

    /// Follows the gRPC framing through `data`, covering each message's
    /// length as its prefix completes.
    fn follow(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let passed = self.message_left.min(data.len());
                self.message_left -= passed;
                data = &data[passed..];
                continue;
            }
            let take = (PREFIX_BYTES - self.prefix_read).min(data.len());
            self.prefix[self.prefix_read..self.prefix_read + take].copy_from_slice(&data[..take]);
            self.prefix_read += take;
            data = &data[take..];
            if self.prefix_read == PREFIX_BYTES {
                self.prefix_read = 0;
                let length = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                self.reservation.cover(length)?;
                self.message_left = length;
            }
        }
        Ok(())
    }
}

impl http_body::Body for BudgetedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            this.follow(data.chunk())?;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.resize(PREFIX_BYTES + length as usize, 7);
        bytes
    }

    #[test]
    fn uploads_past_the_budget_are_refused_and_their_reservations_come_back() {
        // 64 KiB windows: an upload reserves 64 + 4 × 256 = 1,088 KiB.
        let budget = UploadBudget::new(3 * 1088 * 1024, 64 * 1024, Duration::from_secs(1));
        let held: Vec<_> = (0..3).map(|_| budget.reserve().unwrap()).collect();
        let refused = budget.reserve().err().unwrap();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "uploads in progress hold the 3342336 bytes the gateway gives them \
             (limits.upload_bytes_in_flight); retry in 1 s"
        );
        assert_eq!(
            refused.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(1))
        );
        drop(held);
        assert_eq!(budget.kib.available_permits(), 3 * 1088);
    }

    #[test]
    fn the_chunk_on_its_way_keeps_its_part_until_its_write_ends() {
        let budget = UploadBudget::new(1088 * 1024, 64 * 1024, Duration::from_secs(1));
        let (reservation, chunk) = budget.reserve().unwrap();
        let writing = chunk.clone();
        drop((reservation, chunk));
        // The call is gone; its chunk's write still holds 256 KiB.
        assert_eq!(budget.kib.available_permits(), 1088 - 256);
        assert_eq!(
            budget.reserve().err().unwrap().code(),
            Code::ResourceExhausted
        );
        drop(writing);
        assert_eq!(budget.kib.available_permits(), 1088);
    }

    #[test]
    fn a_message_longer_than_a_chunk_grows_the_reservation_by_twice_the_excess() {
        let budget = UploadBudget::new(2 * 1024 * 1024, 0, Duration::from_secs(1));
        let (reservation, on_its_way) = budget.reserve().unwrap();
        assert_eq!(budget.kib.available_permits(), 1024);
        let mut body = BudgetedBody::new(Body::empty(), reservation);
        let chunk = message((DOCUMENT_CHUNK_BYTES + CHUNK_MESSAGE_OVERHEAD) as u32);
        // Split anywhere, the prefixes are found.
        for piece in [&chunk[..3], &chunk[3..1000], &chunk[1000..]] {
            body.follow(piece).unwrap();
        }
        assert_eq!(budget.kib.available_permits(), 1024);
        let longer = message((DOCUMENT_CHUNK_BYTES + CHUNK_MESSAGE_OVERHEAD) as u32 + 256 * 1024);
        body.follow(&longer).unwrap();
        assert_eq!(budget.kib.available_permits(), 512);
        let too_long =
            message((DOCUMENT_CHUNK_BYTES + CHUNK_MESSAGE_OVERHEAD) as u32 + 1024 * 1024);
        let refused = body.follow(&too_long[..PREFIX_BYTES]).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        drop((body, on_its_way));
        assert_eq!(budget.kib.available_permits(), 2048);
    }
}
