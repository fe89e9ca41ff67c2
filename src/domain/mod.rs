//! The pure domain: requests, decisions, reference data and the validators of domain.md §6.
//!
//! Nothing here performs I/O or reads the clock; every other module may import it, it imports none of them.

pub mod agenda;
pub mod calendar;
pub mod closing;
pub mod decision;
pub mod event;
pub mod facts;
pub mod request;
pub mod time;
pub mod validators;

/// The first `n` bytes of a digest in lower-case hex: rule versions, ETags.
pub fn hex_prefix(digest: &[u8], n: usize) -> String {
    digest.iter().take(n).map(|b| format!("{b:02x}")).collect()
}
