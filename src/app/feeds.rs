//! The change feeds, for integrators (the portal's back end, the archives): every committed request event, or
//! every master-data change an accepted request made, in a gap-free order, a page after an opaque cursor.
//! Items refer to the request (id, protocol number, task). Event items carry only the detail fields that hold
//! no message body or error text; effect items carry what changed (a new contact's value included: the archives
//! keep the master copy of it).

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Actor, AppError, MAX_PAGE};
use crate::domain::time::rfc3339;
use crate::store::{FeedEvent, FeedPosition, FeedSource, Store};

/// The detail fields a feed item keeps: states, sedi, outcomes, reason codes and counters. Everything else —
/// an operator's or requester's `testo`, an operator's `nota`, a rule's `errore` (which can quote values) —
/// stays in the request's own history.
const PUBLIC_DETAIL: [&str; 9] =
    ["protocollo", "sede", "esito", "motivazioni", "motivo", "giorni", "tentativo", "tentativi", "nuovo_tentativo_ms"];

/// One event of the feed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeedItem {
    /// The item's cursor: a page or a stream after it starts with the next event.
    #[schema(max_length = 39, pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    pub cursore: String,
    #[schema(max_length = 19, pattern = "^[0-9]{1,19}$")]
    pub id_evento: String,
    /// The request's opaque id, for `/richieste/{id}`.
    #[schema(max_length = 19, pattern = "^[0-9]{1,19}$")]
    pub id_richiesta: String,
    #[schema(max_length = 64)]
    pub protocollo: String,
    #[schema(max_length = 1000)]
    pub task: String,
    /// The kind of event (the name of the stream's event too).
    #[schema(max_length = 64)]
    pub tipo: String,
    #[schema(format = DateTime)]
    pub istante: String,
    /// The event's public detail (states, sedi, outcomes, reason codes, counters); absent when empty.
    #[serde(skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub dettaglio: Map<String, Value>,
}

impl From<FeedEvent> for FeedItem {
    fn from(e: FeedEvent) -> Self {
        let dettaglio = match e.detail {
            Value::Object(map) => map.into_iter().filter(|(k, _)| PUBLIC_DETAIL.contains(&k.as_str())).collect(),
            _ => Map::new(),
        };
        FeedItem {
            cursore: encode_cursor(e.position),
            id_evento: e.position.id.to_string(),
            id_richiesta: e.request_id.to_string(),
            protocollo: e.protocollo,
            task: e.task,
            tipo: e.kind,
            istante: rfc3339(e.at),
            dettaglio,
        }
    }
}

/// One master-data change of the archives' feed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EffectItem {
    /// The item's cursor: a page or a stream after it starts with the next change.
    #[schema(max_length = 39, pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    pub cursore: String,
    #[schema(max_length = 19, pattern = "^[0-9]{1,19}$")]
    pub id_effetto: String,
    /// The request's opaque id, for `/richieste/{id}`.
    #[schema(max_length = 19, pattern = "^[0-9]{1,19}$")]
    pub id_richiesta: String,
    #[schema(max_length = 64)]
    pub protocollo: String,
    #[schema(max_length = 1000)]
    pub task: String,
    /// `revoca_delega`, `archiviazione_contatto`, `disabilitazione_contatto`, `nuovo_contatto`.
    #[schema(max_length = 64)]
    pub tipo: String,
    #[schema(format = DateTime)]
    pub istante: String,
    /// What changed (a new contact's value included).
    #[schema(value_type = Object)]
    pub dettaglio: Value,
}

impl From<FeedEvent> for EffectItem {
    fn from(e: FeedEvent) -> Self {
        EffectItem {
            cursore: encode_cursor(e.position),
            id_effetto: e.position.id.to_string(),
            id_richiesta: e.request_id.to_string(),
            protocollo: e.protocollo,
            task: e.task,
            tipo: e.kind,
            istante: rfc3339(e.at),
            dettaglio: e.detail,
        }
    }
}

/// A page of a feed and the cursor to ask for the next one (the last item's, or the same when the page is
/// empty: a feed has no last page, the consumer polls with it).
pub struct FeedPage<T> {
    pub items: Vec<T>,
    pub next: String,
}

/// The cursor text of a position: `TX-ID`, opaque to consumers.
pub fn encode_cursor(p: FeedPosition) -> String {
    format!("{}-{}", p.tx, p.id)
}

/// A cursor given back by a consumer; None when it is not one this feed gave.
pub fn decode_cursor(text: &str) -> Option<FeedPosition> {
    let (tx, id) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(tx) || !digits(id) {
        return None;
    }
    Some(FeedPosition { tx: tx.parse().ok()?, id: id.parse().ok()? })
}

/// The rows of `source` after `after` (the feed's start when None), oldest first, at most `limit` (bounded by
/// [`MAX_PAGE`]), as items of type `T`; integrators only.
pub async fn page<T: From<FeedEvent>>(
    store: &Store,
    actor: &Actor,
    source: FeedSource,
    after: Option<FeedPosition>,
    limit: i64,
) -> Result<FeedPage<T>, AppError> {
    if !matches!(actor, Actor::Integratore { .. }) {
        return Err(AppError::Forbidden("the change feeds are for integrators".into()));
    }
    let after = after.unwrap_or_default();
    let rows = store.feed(source, after, limit.clamp(1, MAX_PAGE)).await?;
    let last = rows.last().map_or(after, |e| e.position);
    Ok(FeedPage { items: rows.into_iter().map(T::from).collect(), next: encode_cursor(last) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let p = FeedPosition { tx: 7421, id: 12 };
        assert_eq!(decode_cursor(&encode_cursor(p)), Some(p));
        for bad in ["", "12", "-12", "1-", "a-1", "1-2-3", "99999999999999999999-1"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn message_bodies_and_errors_stay_out_of_the_feed() {
        let e = FeedEvent {
            position: FeedPosition { tx: 0, id: 3 },
            request_id: 1,
            protocollo: "INPS.7000.2026.0000001".into(),
            task: "T".into(),
            kind: "commento_operatore".into(),
            at: 0,
            detail: serde_json::json!({ "testo": "Gentile Mario Rossi", "sede": "7000", "nota": "n", "errore": "e" }),
        };
        let item = FeedItem::from(e);
        assert_eq!(item.dettaglio.keys().collect::<Vec<_>>(), ["sede"]);
    }
}
