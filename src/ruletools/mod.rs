//! Tools for rule authors above the engine: the cases runner of `rules test` (`cases`: each case goes
//! through intake's validation as a submission would), `explain` (a decision in words) and `replay` (what a
//! candidate rule set would decide on past requests, from the facts recorded with them) and the gates of
//! `rules promote` (`promote`).

pub mod cases;
pub mod explain;
pub mod promote;
pub mod replay;

pub use cases::{Case, CaseOptions, Report, run_cases, task_cases};
