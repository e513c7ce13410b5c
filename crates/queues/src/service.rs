//! [`Queues`]: the queues as a service the API shares — one connection to
//! the file, the caller's work run off the async threads, and long polling.

use crate::messages::{ReceiveOptions, ReceivedMessage, receive, sweep_expired};
use crate::{QueueError, create_schema};
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Milliseconds since the Unix epoch, as the service reads them.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How long a writer waits for SQLite's lock before giving up, in ms (as
/// the control store).
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// How often a waiting receive looks again even if no send rang, in ms:
/// messages also become available when a visibility timeout or a delay
/// runs out, or when another connection (the async path) sends.
const LONG_POLL_RECHECK_MS: u64 = 250;

/// The queues of every tenant in one SQLite file.
pub struct Queues {
    /// One connection: SQLite serialises writers anyway, and every
    /// operation is a few short statements.
    conn: Mutex<Connection>,
    /// A bell per queue some receive is waiting on, rung by sends, so a
    /// long poll answers as soon as a message arrives. Entries go when the
    /// last waiter leaves, so the map holds at most one per waiting queue.
    bells: Mutex<HashMap<(String, String), Arc<Notify>>>,
    /// Where "now" comes from: the system clock, or a test's.
    clock: Clock,
}

impl Queues {
    /// Opens (creating if needed) the queues in the SQLite file at `path`:
    /// WAL and `synchronous=FULL`, so an acknowledged send survives power
    /// loss.
    pub fn open(path: &Path) -> Result<Queues, QueueError> {
        Queues::open_with_clock(path, Arc::new(system_now_ms))
    }

    /// Opens with another clock (tests).
    pub fn open_with_clock(path: &Path, clock: Clock) -> Result<Queues, QueueError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        create_schema(&conn)?;
        Ok(Queues {
            conn: Mutex::new(conn),
            bells: Mutex::new(HashMap::new()),
            clock,
        })
    }

    /// Now, by the service's clock.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Runs `work` on the connection with the current time. Blocking: call
    /// it off the async threads (or use [`Queues::call`]).
    pub fn with<T>(
        &self,
        work: impl FnOnce(&Connection, u64) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let now_ms = self.now_ms();
        // A panic while holding the lock cannot leave SQLite half-written (a
        // transaction not committed is rolled back), so the poison is moot.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        work(&conn, now_ms)
    }

    /// [`Queues::with`] on a blocking thread.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Connection, u64) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let queues = self.clone();
        tokio::task::spawn_blocking(move || queues.with(work))
            .await
            .map_err(|e| QueueError::Engine(format!("queue operation failed: {e}")))?
    }

    /// Wakes the receives waiting on a queue; call after a send commits.
    pub fn ring(&self, tenant: &str, queue: &str) {
        let bells = self.bells.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bell) = bells.get(&(tenant.to_string(), queue.to_string())) {
            bell.notify_waiters();
        }
    }

    /// Receives, waiting up to `wait` for a message when none is available
    /// (SQS's long polling): answers as soon as one arrives.
    pub async fn receive_waiting(
        self: &Arc<Self>,
        tenant: &str,
        queue: &str,
        options: ReceiveOptions,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let key = (tenant.to_string(), queue.to_string());
        let bell = self.bell(&key);
        let result = loop {
            // Registered before looking, so a send between the look and the
            // wait still wakes this receive.
            let rung = bell.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            let (tenant, queue) = key.clone();
            let got = self
                .call(move |conn, now_ms| receive(conn, &tenant, &queue, &options, now_ms))
                .await;
            let now = tokio::time::Instant::now();
            match got {
                Ok(messages) if messages.is_empty() && now < deadline => {}
                other => break other,
            }
            let nap = (deadline - now).min(Duration::from_millis(LONG_POLL_RECHECK_MS));
            let _ = tokio::time::timeout(nap, rung).await;
        };
        self.leave(&key, bell);
        result
    }

    fn bell(&self, key: &(String, String)) -> Arc<Notify> {
        let mut bells = self.bells.lock().unwrap_or_else(|p| p.into_inner());
        bells.entry(key.clone()).or_default().clone()
    }

    fn leave(&self, key: &(String, String), bell: Arc<Notify>) {
        let mut bells = self.bells.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: no one else is waiting.
        if Arc::strong_count(&bell) == 2 {
            bells.remove(key);
        }
    }

    #[cfg(test)]
    pub(crate) fn bells_held(&self) -> usize {
        self.bells.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Deletes every expired message in every queue; returns how many.
    pub async fn sweep(self: &Arc<Self>) -> Result<usize, QueueError> {
        self.call(sweep_expired).await
    }
}

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
