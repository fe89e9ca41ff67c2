//! Liveness of the daemon's loops (workers, dispatcher, scheduler), for `/healthz` and the systemd watchdog:
//! each loop beats on every turn; the watchdog is pinged only while every loop has beaten recently, so a
//! stuck loop makes systemd restart the service.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Health {
    beats: Mutex<BTreeMap<String, Instant>>,
    /// How long a loop may go without a beat before it counts as stuck.
    tolerance: Duration,
    ready: AtomicBool,
    /// False from a failure to reach the database until the next statement that succeeds.
    database: AtomicBool,
    /// What a ready daemon runs in a degraded way (e.g. the last activated rules, its directory refused).
    degraded: Mutex<Option<String>>,
}

impl Health {
    pub fn new(tolerance: Duration) -> Self {
        Health {
            beats: Mutex::new(BTreeMap::new()),
            tolerance,
            ready: AtomicBool::new(false),
            database: AtomicBool::new(true),
            degraded: Mutex::new(None),
        }
    }

    /// A loop made progress.
    pub fn beat(&self, loop_name: &str) {
        if let Ok(mut beats) = self.beats.lock() {
            beats.insert(loop_name.to_string(), Instant::now());
        }
    }

    /// A loop ended on purpose (shutdown): it no longer counts.
    pub fn retire(&self, loop_name: &str) {
        if let Ok(mut beats) = self.beats.lock() {
            beats.remove(loop_name);
        }
    }

    /// The first loop that has not beaten within the tolerance, if any.
    pub fn stale(&self) -> Option<String> {
        let beats = self.beats.lock().ok()?;
        beats.iter().find(|(_, at)| at.elapsed() > self.tolerance).map(|(name, _)| name.clone())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Records whether the database answered the last statement; returns the previous state, so that the
    /// caller logs the transitions only.
    pub fn set_database(&self, reachable: bool) -> bool {
        self.database.swap(reachable, Ordering::SeqCst)
    }

    /// Says (or stops saying, with None) what the daemon runs in a degraded way, for `/readyz`.
    pub fn set_degraded(&self, detail: Option<String>) {
        if let Ok(mut d) = self.degraded.lock() {
            *d = detail;
        }
    }

    pub fn degraded(&self) -> Option<String> {
        self.degraded.lock().ok().and_then(|d| d.clone())
    }

    /// Started, not stopping, and the database reachable.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.database.load(Ordering::SeqCst)
    }
}
