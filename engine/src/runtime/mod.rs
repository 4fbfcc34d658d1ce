//! The running engine: intake commits events, workers turn them into
//! decisions, the outbox writes decisions back.
//!
//! ```text
//! webhook ─► intake (verify, dedupe, commit) ─► queue ─► worker: map → lookup → rule → reserve
//!                                                          └─► outbox ─► platform (retried)
//! ```

pub mod daemon;
pub mod intake;
pub mod orders;
pub mod poll;
pub mod process;
pub mod push;
pub mod retention;
pub mod stock_events;
pub mod waitlist;
pub mod writeback;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::connector::client::HttpClient;
use crate::reload::registry::Registry;
use crate::store::Store;

/// State shared by every part of the running daemon.
pub struct Runtime {
    pub store: Store,
    pub registry: Registry,
    pub http: HttpClient,
    pub clock: Arc<dyn Clock>,
    /// Event ids ready for a worker.
    pub queue: mpsc::UnboundedSender<u64>,
    /// Flips to true when the daemon is asked to stop.
    pub stopping: watch::Receiver<bool>,
    /// Failed attempts per queued event, for its backoff (in memory only:
    /// the event's age, which limits retries, is in the store).
    pub attempts: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    /// SKUs whose available stock rose, for waitlist re-evaluation.
    pub waitlist: mpsc::UnboundedSender<Vec<String>>,
    /// Wakes the stock pusher.
    pub pushes: tokio::sync::Notify,
}

impl Runtime {
    pub fn now(&self) -> String {
        self.clock.now_rfc3339()
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub fn count_attempt(&self, event_id: u64) -> u32 {
        let mut a = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = a.entry(event_id).or_insert(0);
        *n += 1;
        *n
    }

    pub fn forget_attempts(&self, event_id: u64) {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&event_id);
    }

    /// Follow up a committed ledger change: move the waitlist, push stock.
    pub fn after_commit(&self, effects: &crate::inventory::ledger::Effects) {
        if effects.is_empty() {
            return;
        }
        let up = effects.increased();
        if !up.is_empty() {
            let _ = self.waitlist.send(up);
        }
        self.pushes.notify_one();
    }

    /// Resolves once the daemon is asked to stop.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}
