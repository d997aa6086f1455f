//! New-mail events: from the committer (in-process) and from Redis (other nodes)
//! to the event streams of `GET /api/v1/mailboxes/{address}/events`.
//!
//! Owns: one bounded `tokio::sync::broadcast` channel per address somebody watches,
//! and the count of watchers. Must not: block or slow the committer. `publish` is one
//! relaxed atomic load when nobody watches; otherwise a short mutex and a
//! non-blocking `send` per recipient. A watcher that falls more than
//! [`EVENTS_PER_ADDRESS`] behind loses events and is told to list again (the
//! stream's `resync` event), the committer never waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::store::MailRow;

/// Events buffered per watched address before the slowest watcher lags.
pub const EVENTS_PER_ADDRESS: usize = 64;

/// A message committed for a watched address.
#[derive(Debug)]
pub struct Arrival {
    /// The queue id (`new_mail.hash`).
    pub hash: String,
    /// The list fields, when the committer announced it (then the stream needs no
    /// query); `None` from Redis (another node), where only the queue id travels.
    pub summary: Option<Summary>,
    /// The stream bytes for this arrival, made by the first stream of the address
    /// that writes it and reused by the others.
    pub formatted: std::sync::OnceLock<String>,
}

/// The list fields of a committed message, as the committer knows them.
#[derive(Debug, Clone)]
pub struct Summary {
    pub date: String,
    pub from: String,
    pub subject: String,
    pub size: i64,
    pub has_attach: i64,
}

/// What the channels carry: one allocation per message and watched recipient,
/// shared by that recipient's watchers.
pub type ArrivalRef = Arc<Arrival>;

/// Shared by the committer, the Redis subscriber and the HTTP handlers.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Open subscriptions; 0 makes `publish` return at once.
    watchers: AtomicUsize,
    by_address: Mutex<HashMap<String, broadcast::Sender<ArrivalRef>>>,
}

impl Arrivals {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Called by the committer after COMMIT for each committed message.
    pub fn publish_row(&self, row: &MailRow) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.send(&row.recipients, || Arrival {
            hash: row.hash.clone(),
            summary: Some(Summary {
                date: row.date.clone(),
                from: row.from.clone(),
                subject: row.subject.clone(),
                size: row.size,
                has_attach: row.has_attach,
            }),
            formatted: std::sync::OnceLock::new(),
        });
    }

    /// An arrival known by its queue id only (the Redis subscriber).
    pub fn publish_hash(&self, hash: &str, recipient: &str) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.send(std::slice::from_ref(&recipient), || Arrival {
            hash: hash.to_owned(),
            summary: None,
            formatted: std::sync::OnceLock::new(),
        });
    }

    /// One event per watched recipient (so that what a stream writes for it, which
    /// names the recipient, is formatted once for all of that address's streams).
    fn send<R: AsRef<str>>(&self, recipients: &[R], make: impl Fn() -> Arrival) {
        let Ok(map) = self.by_address.lock() else {
            return;
        };
        for recipient in recipients {
            if let Some(tx) = map.get(recipient.as_ref()) {
                // No receiver left is not an error here: the entry goes when the
                // last subscription drops.
                let _ = tx.send(Arc::new(make()));
            }
        }
    }

    /// Watches `address` (already normalised) until the subscription is dropped.
    pub fn subscribe(self: &Arc<Self>, address: &str) -> Subscription {
        let rx = match self.by_address.lock() {
            Ok(mut map) => map
                .entry(address.to_owned())
                .or_insert_with(|| broadcast::channel(EVENTS_PER_ADDRESS).0)
                .subscribe(),
            // A poisoned map (a panic elsewhere) gives a stream that never fires.
            Err(_) => broadcast::channel(1).1,
        };
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx,
            address: address.to_owned(),
            arrivals: Arc::clone(self),
        }
    }

    /// Open subscriptions (for tests and logs).
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// One watcher of one address; dropping it unregisters.
pub struct Subscription {
    pub rx: broadcast::Receiver<ArrivalRef>,
    address: String,
    arrivals: Arc<Arrivals>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.arrivals.watchers.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut map) = self.arrivals.by_address.lock()
            && map
                .get(&self.address)
                // This receiver still counts until it is dropped after this body.
                .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.address);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_watched_addresses_get_events_and_entries_go_with_the_last_watcher() {
        let a = Arrivals::new();
        a.publish_hash("h0", "x@example.com");
        let mut s = a.subscribe("x@example.com");
        let s2 = a.subscribe("x@example.com");
        a.publish_hash("h1", "y@example.com");
        a.publish_hash("h2", "x@example.com");
        assert_eq!(s.rx.try_recv().unwrap().hash, "h2");
        assert!(s.rx.try_recv().is_err());
        assert_eq!(a.watchers(), 2);
        drop(s2);
        assert_eq!(a.by_address.lock().unwrap().len(), 1);
        drop(s);
        assert_eq!(a.watchers(), 0);
        assert!(a.by_address.lock().unwrap().is_empty());
    }

    #[test]
    fn a_slow_watcher_lags_instead_of_blocking() {
        let a = Arrivals::new();
        let mut s = a.subscribe("x@example.com");
        for i in 0..EVENTS_PER_ADDRESS * 2 {
            a.publish_hash(&format!("h{i}"), "x@example.com");
        }
        assert!(matches!(
            s.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
