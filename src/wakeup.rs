//! Wake-ups across instances on PostgreSQL. A transaction that gives the others work (new requests, requests
//! released or put back in the queue, new notifications) sends `NOTIFY` on a channel at commit — one per
//! transaction, however many rows it wrote, because PostgreSQL folds repeats within a transaction. Each
//! instance listens on one dedicated connection and wakes its idle workers or its dispatcher at once
//! instead of at their next poll.
//!
//! Polling stays: a notification sent while the listening connection is down is lost, and a
//! transaction-pooling proxy (PgBouncer in transaction mode) does not carry `LISTEN` at all, so the loops
//! still poll every `poll_interval_ms` and the listener only makes them faster.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::store::{OUTBOX_CHANNEL, REQUESTS_CHANNEL};

/// What to wake for each channel.
pub struct Wakers {
    pub requests: Box<dyn Fn() + Send + Sync>,
    pub outbox: Box<dyn Fn() + Send + Sync>,
}

impl Wakers {
    fn wake(&self, channel: &str) {
        match channel {
            REQUESTS_CHANNEL => (self.requests)(),
            OUTBOX_CHANNEL => (self.outbox)(),
            _ => {}
        }
    }

    fn wake_all(&self) {
        (self.requests)();
        (self.outbox)();
    }
}

/// Listens until shutdown, reconnecting with backoff; after a reconnection wakes everything, since what was
/// notified meanwhile is lost.
pub async fn listen(url: String, wakers: Wakers, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(250);
    while !*shutdown.borrow() {
        let mut listener = match connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot listen for wake-ups; polling meanwhile");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        debug!("listening for wake-ups");
        backoff = Duration::from_millis(250);
        wakers.wake_all();
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => wakers.wake(n.channel()),
                    Ok(None) => {
                        // The connection dropped; `try_recv` reconnects on its next call.
                        warn!("wake-up connection lost; reconnecting (polling meanwhile)");
                        wakers.wake_all();
                    }
                    Err(e) => {
                        warn!(error = %e, "wake-up listener failed; reconnecting (polling meanwhile)");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen_all([REQUESTS_CHANNEL, OUTBOX_CHANNEL]).await?;
    Ok(listener)
}
