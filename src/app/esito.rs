//! The esito document of a closed request: the view built from the stored request and its latest decision,
//! rendered by [`crate::documents::esito_pdf`]. Same authorization as reading the request.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Actor, AppError, read};
use crate::documents::{EffectEntry, Esito, EsitoView, PdfError, esito_pdf};
use crate::domain::decision::{Effect, Reason};
use crate::domain::time::Millis;
use crate::store::{ESITO_NOT_RENDERED, RequestView, Store};

/// A rendered esito: the protocol number it belongs to, the PDF and its SHA-256 in hex.
pub struct EsitoPdf {
    pub id: i64,
    pub protocollo: String,
    pub pdf: Vec<u8>,
    pub sha256: String,
}

/// The esito PDF of a request by id or protocol number, if the actor may see it (else not found) and it is
/// closed (else a conflict).
pub async fn esito(store: &Store, actor: &Actor, key: &str) -> Result<EsitoPdf, AppError> {
    render(read(store, actor, key).await?)
}

/// The esito PDF of a closed request for the daemon itself (the chiusura e-mail to its requester): no actor, since
/// no caller asks; rendered on a blocking thread.
pub async fn esito_of(store: &Store, request_id: i64) -> Result<EsitoPdf, AppError> {
    let view = store
        .request(&request_id.to_string())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no request with id {request_id}")))?;
    render_off_runtime(view).await
}

/// [`render`] on a blocking thread: rendering is CPU work that must not hold a runtime thread.
async fn render_off_runtime(view: RequestView) -> Result<EsitoPdf, AppError> {
    let id = view.id;
    tokio::task::spawn_blocking(move || render(view))
        .await
        .map_err(|e| PdfError::Encode(format!("the rendering of the esito of request {id} stopped: {e}")))?
}

fn render(view: RequestView) -> Result<EsitoPdf, AppError> {
    let pdf = esito_pdf(&esito_view(&view)?)?;
    let sha256 = Sha256::digest(&pdf).iter().map(|b| format!("{b:02x}")).collect();
    Ok(EsitoPdf { id: view.id, protocollo: view.protocollo, pdf, sha256 })
}

/// Renders the esito PDF of up to `limit` closed requests whose document is not recorded yet and records each
/// one's SHA-256 in its history (`esito_documento`); returns how many this call recorded. Rendering is CPU work:
/// it runs on a blocking thread, off the workers' runtime threads. A document that cannot be rendered is logged
/// and recorded as not rendered, so it is not tried again and again (the API still renders it on demand).
pub async fn record_esiti(store: &Store, limit: i64, now: Millis) -> Result<usize, AppError> {
    let mut recorded = 0;
    for id in store.pending_esiti(limit).await? {
        let Some(view) = store.request(&id.to_string()).await? else { continue };
        let sha256 = match render_off_runtime(view).await {
            Ok(document) => document.sha256,
            Err(e) => {
                tracing::error!(richiesta = id, error = %e, "the esito PDF of a closed request cannot be rendered");
                ESITO_NOT_RENDERED.to_string()
            }
        };
        if store.record_esito(id, &sha256, now).await? {
            recorded += 1;
        }
    }
    Ok(recorded)
}

/// What the document shows, from what the store returned; a request not yet closed has no esito.
pub fn esito_view(view: &RequestView) -> Result<EsitoView, AppError> {
    let not_closed =
        || AppError::Conflict(format!("request {} is not closed yet: its esito exists once it is closed", view.id));
    let (Some(esito), Some(chiusa_il)) = (view.esito.as_deref().and_then(Esito::from_stored), &view.chiusa_il) else {
        return Err(not_closed());
    };
    if view.stato != "chiusa" {
        return Err(not_closed());
    }
    let millis = |field: &str, s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .map_err(|e| PdfError::Encode(format!("request {}: stored `{field}` is not an instant: {e}", view.id)))
    };
    let text = |field: &str| view.richiesta.get(field).and_then(Value::as_str).map(str::to_string);
    let motivazioni = view
        .motivazioni
        .iter()
        .map(|m| {
            serde_json::from_value::<Reason>(m.clone()).unwrap_or_else(|_| Reason {
                codice: m.get("codice").and_then(Value::as_str).unwrap_or("?").to_string(),
                messaggio: m.get("messaggio").and_then(Value::as_str).unwrap_or_default().to_string(),
            })
        })
        .collect();
    let effetti = view
        .effetti
        .iter()
        .map(|e| match serde_json::from_value::<Effect>(e.clone()) {
            Ok(effect) => EffectEntry::Known(effect),
            Err(_) => EffectEntry::Unrecognised {
                tipo: e.get("tipo").and_then(Value::as_str).unwrap_or("sconosciuto").to_string(),
            },
        })
        .collect();
    Ok(EsitoView {
        protocollo: view.protocollo.clone(),
        task: view.task.clone(),
        richiedente_cf: text("richiedente_cf").unwrap_or_else(|| view.soggetto.clone()),
        matricola: text("matricola"),
        apertura: millis("creata_il", &view.creata_il)?,
        chiusura: millis("chiusa_il", chiusa_il)?,
        esito,
        motivazioni,
        effetti,
        sede: view.sede.clone(),
        versione_regola: view.versione_regola.clone(),
    })
}
