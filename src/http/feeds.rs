//! `GET /eventi`: the change feed of request events for integrators, as JSON pages after a cursor. The
//! `next` link is always present (a feed has no last page): on an empty page it repeats the cursor, so a
//! consumer polls it until new events arrive.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{BASE, bad_query, no_store};
use super::auth::Authenticated;
use super::problem::Problem;
use crate::app::feeds::{self, FeedItem};
use crate::app::{self, MAX_PAGE};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedQuery {
    /// The `next` link's cursor, or an item's `cursore`: the page starts after it.
    cursore: Option<String>,
    /// Events per page, 1–200 (default 50).
    limite: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Link {
    href: String,
}

#[derive(Debug, Serialize)]
struct Links {
    next: Link,
}

#[derive(Debug, Serialize)]
struct FeedPageBody {
    items: Vec<FeedItem>,
    _links: Links,
}

/// `GET /eventi?cursore=…&limite=…`: committed request events after the cursor, oldest first.
pub(super) async fn events(
    State(s): State<AppState>,
    Authenticated(actor): Authenticated,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| bad_query(e.body_text(), ""))?;
    let after = match q.cursore.as_deref() {
        None => None,
        Some(c) => {
            Some(feeds::decode_cursor(c).ok_or_else(|| bad_query("not a cursor of this feed".into(), "cursore"))?)
        }
    };
    let limit = q.limite.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad_query(format!("{limit} is not between 1 and {MAX_PAGE}"), "limite"));
    }
    let page = app::feeds::events(&s.store, &actor, after, limit).await?;
    let next = Link { href: format!("{BASE}/eventi?cursore={}&limite={limit}", page.next) };
    Ok(no_store(axum::Json(FeedPageBody { items: page.items, _links: Links { next } }).into_response()))
}
