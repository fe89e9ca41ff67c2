//! Files sent with a request or with a message to the sede: inspected before anything is stored (their type
//! read from their content, archives opened in memory, `documents::attachment`), then handed to the store with
//! what they came with; downloaded by whoever may see the request (its requester, the sede's operators).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Actor, AppError, read};
use crate::documents::attachment::{AttachmentLimits, Inspected, Upload, inspect_all};
use crate::store::{AttachmentContent, NewAttachment, Store};

/// Inspects the files of one request or message: all accepted, or the first refusal (naming the file and the
/// rule it broke) and nothing kept.
pub(super) fn accept(uploads: &[Upload<'_>], limits: &AttachmentLimits) -> Result<Vec<NewAttachment>, AppError> {
    let inspected = inspect_all(uploads, limits).map_err(AppError::AttachmentRefused)?;
    Ok(inspected.into_iter().zip(uploads).map(|(meta, upload)| new_attachment(meta, upload)).collect())
}

fn new_attachment(meta: Inspected, upload: &Upload<'_>) -> NewAttachment {
    NewAttachment {
        nome: meta.name,
        tipo: meta.kind.mime().to_string(),
        sha256: meta.sha256,
        content: Arc::from(upload.bytes),
    }
}

/// What the request records of its files (`allegati` in its payload): what rules see through
/// `ctx.attachments()` and what a retry with the same `chiave_idempotenza` must repeat.
pub(super) fn payload_entry(files: &[NewAttachment]) -> Value {
    files
        .iter()
        .map(|f| json!({ "nome": f.nome, "tipo": f.tipo, "dimensione": f.content.len(), "sha256": f.sha256 }))
        .collect::<Vec<_>>()
        .into()
}

/// Attachment `posizione` of a request the actor may see, with its bytes.
pub async fn attachment(
    store: &Store,
    actor: &Actor,
    key: &str,
    posizione: i64,
) -> Result<AttachmentContent, AppError> {
    let view = read(store, actor, key).await?;
    store
        .attachment(view.id, posizione)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("request {} has no attachment {posizione}", view.protocollo)))
}
