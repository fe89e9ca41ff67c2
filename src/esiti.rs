//! The loop that records the esito PDF of each closed request soon after its close (`app::record_esiti`): the
//! document is rendered here, at a bounded rate, not in the workers' closing transaction, so deciding never
//! waits for a PDF. A batch run (`run --exit-when-idle`) records every pending one before it exits.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::app::{self, AppError};
use crate::clock::now_ms;
use crate::store::Store;

/// Documents rendered per round, and the pause between rounds: at most 160 a second, a fraction of one core.
const BATCH: i64 = 32;
const EVERY: Duration = Duration::from_millis(200);

/// Records pending esito documents until the daemon stops.
pub async fn run(store: Store, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => match app::record_esiti(&store, BATCH, now_ms()).await {
                Ok(0) => {}
                Ok(recorded) => debug!(recorded, "esito documents recorded"),
                Err(e) => warn!(error = %e, "cannot record the esito documents now: trying again"),
            },
        }
    }
}

/// Records every pending esito document; returns how many.
pub async fn record_all(store: &Store) -> Result<usize, AppError> {
    let mut total = 0;
    loop {
        match app::record_esiti(store, BATCH, now_ms()).await? {
            0 => return Ok(total),
            recorded => total += recorded,
        }
    }
}
