//! The wall clock: the one place production code reads the current time. Everything below takes the instant
//! as an argument (`now: Millis`), so the domain stays pure and tests pass the instant they need.

use crate::domain::time::Millis;

/// The wall clock, in unix milliseconds.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
