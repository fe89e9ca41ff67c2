//! Documents the daemon issues, rendered from what the store already holds: today the esito PDF of a closed
//! request ([`esito_pdf`]). Pure: the same input gives the same bytes (no clock, no randomness), so a document
//! can be regenerated at any time instead of being stored.

pub mod esito_pdf;

pub use esito_pdf::{EffectEntry, Esito, EsitoView, PdfError, esito_pdf};
