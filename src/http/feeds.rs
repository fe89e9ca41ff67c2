//! The change feeds for integrators: `GET /eventi` (request events) and `GET /effetti` (the master-data changes
//! accepted requests made, for the archives), as JSON pages after a cursor or, with
//! `Accept: text/event-stream`, as Server-Sent Events. The `next` link is always present (a feed has no last
//! page): on an empty page it repeats the cursor, so a consumer polls it until new rows arrive. A stream sends
//! each item as an event whose `id` is its cursor, so a client reconnecting with `Last-Event-ID` resumes after
//! the last item it got; it ends when the daemon stops, and after [`STREAM_LIFETIME`] so that a token checked
//! once does not hold a stream open forever.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::{ApiState, BASE, bad_query, no_store};
use super::auth::Authenticated;
use super::body::Link;
use super::problem::Problem;
use crate::app::feeds::{self, EffectItem, FeedItem};
use crate::app::{Actor, MAX_PAGE};
use crate::store::{FeedEvent, FeedPosition, FeedSource, Store};

/// How often an open stream looks for new rows when it has sent everything.
const STREAM_POLL: Duration = Duration::from_millis(250);
/// How long a stream stays open; the client reconnects with `Last-Event-ID` (and a fresh token).
const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// Rows a stream reads at a time.
const STREAM_BATCH: i64 = 100;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/eventi", get(events)).route("/effetti", get(effects))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct FeedQuery {
    /// The `next` link's cursor, or an item's `cursore`: the page starts after it (default: the feed's start).
    /// A stream resumed with `Last-Event-ID` starts after that instead.
    #[param(max_length = 39, pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    cursore: Option<String>,
    /// Items per page, 1–200 (default 50); a stream ignores it.
    #[param(minimum = 1, maximum = 200)]
    limite: Option<i64>,
}

/// The header a stream reads (described for the document; [`serve`] reads it from the request's headers).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct StreamHeaders {
    /// With `Accept: text/event-stream`: the `id` of the last event received; the stream resumes after it (it
    /// wins over `cursore`).
    #[param(rename = "Last-Event-ID", required = false, max_length = 39, pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    last_event_id: String,
}

/// The links of a feed's page: the next one is always there (on an empty page it repeats the cursor).
#[derive(Debug, Serialize, ToSchema)]
struct FeedLinks {
    next: Link,
}

/// A page of a feed, oldest first.
#[derive(Debug, Serialize, ToSchema)]
struct FeedPageBody<T> {
    #[schema(min_items = 0, max_items = 200)]
    items: Vec<T>,
    _links: FeedLinks,
}

#[utoipa::path(
    get, path = "/eventi", tag = "integratori", operation_id = "flusso_eventi",
    params(FeedQuery, StreamHeaders),
    responses(
        (status = 200, description = "A page of committed request events after the cursor, oldest first; with `Accept: text/event-stream`, Server-Sent Events instead, one per item (`id`: its `cursore`, `event`: its `tipo`, `data`: the item as JSON), until the daemon stops or the stream has been open 10 minutes",
            content((FeedPageBody<FeedItem> = "application/json"), (FeedItem = "text/event-stream"))),
        (status = 400, description = "A parameter is not valid (the pointer names it: `?cursore`, `?limite`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an integrator", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /eventi?cursore=…&limite=…`: committed request events after the cursor, oldest first.
pub(super) async fn events(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    serve::<FeedItem>(s, actor, headers, query, FeedSource::Events, "eventi").await
}

#[utoipa::path(
    get, path = "/effetti", tag = "integratori", operation_id = "flusso_effetti",
    params(FeedQuery, StreamHeaders),
    responses(
        (status = 200, description = "A page of committed master-data changes after the cursor, oldest first; with `Accept: text/event-stream`, Server-Sent Events instead, one per item (`id`: its `cursore`, `event`: its `tipo`, `data`: the item as JSON), until the daemon stops or the stream has been open 10 minutes",
            content((FeedPageBody<EffectItem> = "application/json"), (EffectItem = "text/event-stream"))),
        (status = 400, description = "A parameter is not valid (the pointer names it: `?cursore`, `?limite`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an integrator", body = Problem, content_type = "application/problem+json"),
    )
)]
/// `GET /effetti?cursore=…&limite=…`: committed master-data changes after the cursor, oldest first.
pub(super) async fn effects(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    serve::<EffectItem>(s, actor, headers, query, FeedSource::Effects, "effetti").await
}

/// An item of a feed: what its stream event is called and its cursor.
trait StreamItem: From<FeedEvent> + Serialize + Send + 'static {
    fn cursor(&self) -> &str;
    fn kind(&self) -> &str;
}

impl StreamItem for FeedItem {
    fn cursor(&self) -> &str {
        &self.cursore
    }
    fn kind(&self) -> &str {
        &self.tipo
    }
}

impl StreamItem for EffectItem {
    fn cursor(&self) -> &str {
        &self.cursore
    }
    fn kind(&self) -> &str {
        &self.tipo
    }
}

async fn serve<T: StreamItem>(
    s: AppState,
    actor: Actor,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
    source: FeedSource,
    path: &str,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| bad_query(e.body_text(), ""))?;
    let cursor = |text: &str, name: &str| {
        feeds::decode_cursor(text).ok_or_else(|| bad_query("not a cursor of this feed".into(), name))
    };
    let mut after = q.cursore.as_deref().map(|c| cursor(c, "cursore")).transpose()?;
    let limit = q.limite.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad_query(format!("{limit} is not between 1 and {MAX_PAGE}"), "limite"));
    }
    let wants_stream = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim().starts_with("text/event-stream")));
    if !wants_stream {
        let page = feeds::page::<T>(&s.store, &actor, source, after, limit).await?;
        let next = Link { href: format!("{BASE}/{path}?cursore={}&limite={limit}", page.next) };
        return Ok(no_store(
            axum::Json(FeedPageBody { items: page.items, _links: FeedLinks { next } }).into_response(),
        ));
    }
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().map_err(|_| bad_query("`Last-Event-ID` is not a cursor".into(), "cursore"))?;
        after = Some(cursor(text, "cursore")?);
    }
    let api = api_state(&s)?;
    // Refused before the stream starts: a caller who may not read the feed gets a problem, not an empty stream.
    feeds::page::<T>(&s.store, &actor, source, after, 1).await?;
    let Some(permit) = api.limits.stream_permit() else {
        return Ok(super::limits::overloaded());
    };
    let stream = Stream {
        store: s.store.clone(),
        actor,
        source,
        after: after.unwrap_or_default(),
        stop: api.stop.clone(),
        until: tokio::time::Instant::now() + STREAM_LIFETIME,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(stream, |st| async move { st.next::<T>().await });
    let events = futures_util::StreamExt::flat_map(events, futures_util::stream::iter);
    Ok(no_store(Sse::new(events).keep_alive(KeepAlive::default()).into_response()))
}

fn api_state(s: &AppState) -> Result<&ApiState, Problem> {
    s.api.as_deref().ok_or_else(|| Problem::new(axum::http::StatusCode::NOT_FOUND, "the API is not configured"))
}

/// An open stream: where it is, and what ends it.
struct Stream {
    store: Store,
    actor: Actor,
    source: FeedSource,
    after: FeedPosition,
    stop: watch::Receiver<bool>,
    until: tokio::time::Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Stream {
    /// The next events to send (waiting until there are some), or None when the stream ends.
    async fn next<T: StreamItem>(mut self) -> Option<(Vec<Result<Event, Infallible>>, Stream)> {
        loop {
            if *self.stop.borrow() || tokio::time::Instant::now() >= self.until {
                return None;
            }
            let page =
                match feeds::page::<T>(&self.store, &self.actor, self.source, Some(self.after), STREAM_BATCH).await {
                    Ok(page) => page,
                    Err(e) => {
                        // The client reconnects with its Last-Event-ID; the database's words stay in the log.
                        tracing::warn!(error = %e, "a change-feed stream ended on a failure");
                        return None;
                    }
                };
            if !page.items.is_empty() {
                self.after = feeds::decode_cursor(&page.next)?;
                let events = page
                    .items
                    .iter()
                    .filter_map(|item| {
                        Event::default().id(item.cursor()).event(item.kind()).json_data(item).ok().map(Ok)
                    })
                    .collect();
                return Some((events, self));
            }
            tokio::select! {
                _ = tokio::time::sleep(STREAM_POLL) => {}
                _ = self.stop.changed() => {}
            }
        }
    }
}
