//! Documents the daemon issues, rendered from what the store already holds: today the esito PDF of a closed
//! request ([`esito_pdf`]). Pure: the same input gives the same bytes (no clock, no randomness), so a document
//! can be regenerated at any time instead of being stored. Also the inspection of the documents requesters
//! attach ([`attachment`]): the real type by magic bytes against an allow-list, ZIP archives checked as hostile
//! input, limits — in memory, before anything is stored.

pub mod attachment;
pub mod esito_pdf;

pub use attachment::{
    AttachmentError, AttachmentLimits, ContentKind, Inspected, Refusal, Upload, ZipEntry, inspect, inspect_all,
};
pub use esito_pdf::{EffectEntry, Esito, EsitoView, PdfError, esito_pdf};
