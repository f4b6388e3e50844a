//! How many connections the gateway keeps, and for how long. Once a
//! handshake gives a connection its identity it takes a place under two
//! caps (all connections, and those of its identity) that it holds until
//! it closes. A connection past a cap is not closed blind: it goes on,
//! marked with its [`ConnectionRefusal`], so the access layer can answer
//! its calls with a refusal that names the cap, and it closes itself
//! [`REFUSED_CONNECTION_GRACE`] later, or [`REFUSAL_SENDING`] after its
//! first refusal; at most [`MAX_REFUSED_CONNECTIONS`]
//! such connections are open at once, and past that a connection is closed
//! as soon as its handshake ends. Every connection records the calls in
//! progress on it ([`ConnectionActivity`]) and closes itself once it has
//! carried none for the idle timeout.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// How long a connection past a cap stays open to carry its refusals.
pub const REFUSED_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// How long a connection past a cap stays open once it has answered a
/// refusal: time to send it.
pub const REFUSAL_SENDING: Duration = Duration::from_millis(100);

/// Connections past a cap open at once (each for
/// [`REFUSED_CONNECTION_GRACE`]); more are closed after their handshake.
pub const MAX_REFUSED_CONNECTIONS: usize = 128;

/// Why a connection's calls are refused: a cap it came past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `limits.max_connections` connections were open.
    AllConnections { limit: u32 },
    /// `limits.max_connections_per_identity` connections of `identity` were open.
    IdentityConnections { identity: Arc<str>, limit: u32 },
}

impl fmt::Display for ConnectionRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionRefusal::AllConnections { limit } => write!(
                f,
                "the gateway has {limit} connections open, the most it keeps \
                 (limits.max_connections); this connection is closed"
            ),
            ConnectionRefusal::IdentityConnections { identity, limit } => write!(
                f,
                "{identity} has {limit} connections open, the most one identity may have \
                 (limits.max_connections_per_identity); this connection is closed: \
                 make calls on the ones open"
            ),
        }
    }
}

/// The caps on connections through their handshake.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_connections: u32,
    max_per_identity: u32,
    open: Mutex<OpenConnections>,
    refused: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    all: u32,
    by_identity: HashMap<Arc<str>, u32>,
}

/// What a connection is let in with.
pub enum Admission {
    /// Under both caps: its place, given back when it drops.
    Admitted(ConnectionPlace),
    /// Past a cap, and one of the [`MAX_REFUSED_CONNECTIONS`] places.
    Refused(ConnectionRefusal, OwnedSemaphorePermit),
    /// Past a cap, with every refused connection's place taken: close it.
    Closed(ConnectionRefusal),
}

/// A connection's place under the caps.
pub struct ConnectionPlace {
    limits: Arc<ConnectionLimits>,
    identity: Option<Arc<str>>,
}

impl ConnectionLimits {
    pub fn new(max_connections: u32, max_per_identity: u32) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_connections,
            max_per_identity,
            open: Mutex::default(),
            refused: Arc::new(Semaphore::new(MAX_REFUSED_CONNECTIONS)),
        })
    }

    /// Lets a connection of `identity` in, or says which cap it came past.
    /// A certificate without an identity counts under the whole cap only
    /// (its calls are refused UNAUTHENTICATED anyway).
    pub fn admit(self: &Arc<Self>, identity: Option<&Arc<str>>) -> Admission {
        let refusal = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let of_identity = identity.map_or(0, |i| open.by_identity.get(i).map_or(0, |n| *n));
            if open.all >= self.max_connections {
                ConnectionRefusal::AllConnections {
                    limit: self.max_connections,
                }
            } else if let Some(identity) = identity.filter(|_| of_identity >= self.max_per_identity)
            {
                ConnectionRefusal::IdentityConnections {
                    identity: identity.clone(),
                    limit: self.max_per_identity,
                }
            } else {
                open.all += 1;
                if let Some(identity) = identity {
                    *open.by_identity.entry(identity.clone()).or_default() += 1;
                }
                return Admission::Admitted(ConnectionPlace {
                    limits: self.clone(),
                    identity: identity.cloned(),
                });
            }
        };
        match self.refused.clone().try_acquire_owned() {
            Ok(place) => Admission::Refused(refusal, place),
            Err(_) => Admission::Closed(refusal),
        }
    }
}

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.all -= 1;
        if let Some(identity) = &self.identity
            && let Some(n) = open.by_identity.get_mut(identity)
        {
            *n -= 1;
            if *n == 0 {
                open.by_identity.remove(identity);
            }
        }
    }
}

/// The calls in progress on one connection, and since when it has had
/// none. Shared by the connection (which closes itself when idle) and the
/// access layer (which counts calls).
#[derive(Debug)]
pub struct ConnectionActivity {
    opened: Instant,
    calls: AtomicU32,
    /// Milliseconds from `opened` to the end of the last call.
    idle_since_ms: AtomicU64,
    /// Milliseconds from `opened` to when it is to close whatever it
    /// carries; `u64::MAX`: no such time.
    close_at_ms: AtomicU64,
}

impl ConnectionActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnectionActivity {
            opened: Instant::now(),
            calls: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            close_at_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// The connection is to close `after` from now (or sooner, if so set).
    pub fn close_after(&self, after: Duration) {
        let at = (self.opened.elapsed() + after).as_millis() as u64;
        self.close_at_ms.fetch_min(at, Ordering::AcqRel);
    }

    /// When the connection is to close: `timeout` after its last call
    /// ended, or at the time [`Self::close_after`] set if sooner; `None`
    /// while a call is in progress and no such time is set.
    pub fn close_deadline(&self, timeout: Duration) -> Option<Instant> {
        let set = match self.close_at_ms.load(Ordering::Acquire) {
            u64::MAX => None,
            at => Some(self.opened + Duration::from_millis(at)),
        };
        match (self.idle_deadline(timeout), set) {
            (Some(idle), Some(set)) => Some(idle.min(set)),
            (idle, set) => idle.or(set),
        }
    }

    /// A call begins; it ends when the returned guard drops.
    pub fn call_started(self: &Arc<Self>) -> CallInProgress {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallInProgress {
            activity: self.clone(),
        }
    }

    /// When the connection may be closed as idle, `timeout` after its last
    /// call ended; `None` while a call is in progress.
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.opened + since + timeout)
    }
}

/// A call in progress on a connection, counted until it drops.
pub struct CallInProgress {
    activity: Arc<ConnectionActivity>,
}

impl Drop for CallInProgress {
    fn drop(&mut self) {
        let activity = &self.activity;
        let now = activity.opened.elapsed().as_millis() as u64;
        // Stamped before the count falls, so an idle check never sees an
        // old stamp with no call in progress.
        activity.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        activity.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_either_cap_a_connection_is_refused_naming_it() {
        let limits = ConnectionLimits::new(3, 2);
        let alice: Arc<str> = Arc::from("urn:a");
        let bob: Arc<str> = Arc::from("urn:b");
        let admitted = |a: Admission| match a {
            Admission::Admitted(place) => place,
            _ => panic!("refused"),
        };
        let refusal = |a: Admission| match a {
            Admission::Refused(refusal, _) => refusal,
            _ => panic!("not refused"),
        };
        let a1 = admitted(limits.admit(Some(&alice)));
        let _a2 = admitted(limits.admit(Some(&alice)));
        assert_eq!(
            refusal(limits.admit(Some(&alice))),
            ConnectionRefusal::IdentityConnections {
                identity: alice.clone(),
                limit: 2
            }
        );
        let _b1 = admitted(limits.admit(Some(&bob)));
        assert_eq!(
            refusal(limits.admit(Some(&bob))),
            ConnectionRefusal::AllConnections { limit: 3 }
        );
        drop(a1);
        let _a3 = admitted(limits.admit(Some(&alice)));
    }

    #[test]
    fn past_the_refused_connections_places_a_connection_is_closed() {
        let limits = ConnectionLimits::new(1, 1);
        let _first = limits.admit(None);
        let refused: Vec<_> = (0..MAX_REFUSED_CONNECTIONS)
            .map(|_| limits.admit(None))
            .collect();
        assert!(refused.iter().all(|a| matches!(a, Admission::Refused(..))));
        assert!(matches!(
            limits.admit(None),
            Admission::Closed(ConnectionRefusal::AllConnections { limit: 1 })
        ));
    }

    #[tokio::test]
    async fn a_connection_is_idle_from_the_end_of_its_last_call() {
        let activity = ConnectionActivity::new();
        let timeout = Duration::from_secs(10);
        let opened = activity.opened;
        assert_eq!(activity.idle_deadline(timeout), Some(opened + timeout));
        let call = activity.call_started();
        assert_eq!(activity.idle_deadline(timeout), None);
        assert_eq!(activity.close_deadline(timeout), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(call);
        let ended = Duration::from_millis(activity.idle_since_ms.load(Ordering::Acquire));
        assert!(ended >= Duration::from_millis(20), "{ended:?}");
        assert_eq!(
            activity.idle_deadline(timeout),
            Some(opened + ended + timeout)
        );
        // A refusal sent: closed soon, before the idle timeout.
        let _call = activity.call_started();
        activity.close_after(Duration::from_secs(1));
        let set = Duration::from_millis(activity.close_at_ms.load(Ordering::Acquire));
        assert!(set >= ended + Duration::from_secs(1), "{set:?}");
        assert_eq!(activity.close_deadline(timeout), Some(opened + set));
    }
}
