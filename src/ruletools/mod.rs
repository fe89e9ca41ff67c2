//! Tools for rule authors that need the store: `explain` (a decision in words) and `replay` (what a
//! candidate rule set would decide on past requests, from the facts recorded with them).

pub mod explain;
pub mod replay;
