//! The console's pages and actions. Each page reads through `app` as the logged-in operator (another sede's
//! request is "not found", as in the API); each action is a POST form that checks the session's CSRF token,
//! calls the same use case as the API (so the history records `operatore:ID`), and answers 303 back to a page
//! that says what happened (`?fatto=…`, a fixed code: no personal data in the URL).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures_util::Stream;
use minijinja::context;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::session::{LOGIN_COOKIE, PendingLogin, SESSION_COOKIE, cookie, set_cookie};
use super::{ConsoleState, Operator};
use crate::app::operator::{self as ops, Assegnata, OperatorDecision, QueueQuery};
use crate::app::{self, AppError};
use crate::clock::now_ms;
use crate::http::AppState;
use crate::notify::privacy::mask;

/// The largest form the console accepts.
pub const FORM_LIMIT: usize = 64 * 1024;

/// The 30-day legal limit of a request, and the day from which the queue warns.
const LEGAL_DAYS: i64 = 30;
const WARN_DAY: i64 = 20;

/// How often a live-update stream looks whether what its page shows changed.
const LIVE_EVERY: Duration = Duration::from_secs(1);

fn render(
    op: &Operator,
    template: &str,
    sezione: &str,
    eventi: Option<String>,
    messaggio: Option<&str>,
    extra: minijinja::Value,
) -> Response {
    render_status(op, template, StatusCode::OK, sezione, eventi, messaggio, extra)
}

/// A page with the operator's header, navigation and forms' token, answered with `status`.
fn render_status(
    op: &Operator,
    template: &str,
    status: StatusCode,
    sezione: &str,
    eventi: Option<String>,
    messaggio: Option<&str>,
    extra: minijinja::Value,
) -> Response {
    let c = &op.console;
    let ctx = context! {
        base => base(c),
        operatore => context! { sub => op.session.sub, sede => op.session.sede, agisce => op.session.agisce },
        csrf => op.csrf,
        nonce => op.nonce,
        esci => true,
        sezione => sezione,
        eventi => eventi,
        messaggio => messaggio,
        ..extra
    };
    page(c, template, ctx, status)
}

/// The path prefix for the templates, unescaped: `console.path` is checked to hold only letters, digits, `-`,
/// `_` and `/`.
fn base(c: &ConsoleState) -> minijinja::Value {
    minijinja::Value::from_safe_string(c.base().to_string())
}

fn page(c: &ConsoleState, template: &str, ctx: minijinja::Value, status: StatusCode) -> Response {
    match c.templates.get_template(template).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "a console template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "errore interno della console").into_response()
        }
    }
}

/// An action or page that could not be done, in the operator's words, with the status the API would answer.
fn refused(op: &Operator, e: AppError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let titolo = match status.as_u16() {
        403 => "Operazione non consentita",
        404 => "Richiesta non trovata",
        409 => "Operazione non possibile ora",
        412 => "La richiesta è cambiata nel frattempo",
        422 | 428 => "Dati non validi",
        _ => "Errore",
    };
    // The operator reads Italian; the machinery's own words (English) follow, marked as such, for support.
    let (dettaglio, tecnico) = match (status.as_u16(), &e) {
        (404, _) => ("Nessuna richiesta con questo identificativo è visibile dalla tua sede.", None),
        (412, _) => (
            "Un altro operatore o la regola l'hanno cambiata dopo che l'hai aperta: riaprila, controlla e riprova.",
            None,
        ),
        (s, AppError::Store(inner)) if s >= 500 => {
            tracing::error!(error = %inner, "a console action failed in the store");
            ("Il servizio non può rispondere ora: riprova tra poco.", None)
        }
        (403, _) => ("Il tuo profilo non permette questa operazione su questa richiesta.", Some(e.to_string())),
        (409, _) => (
            "Lo stato della richiesta non lo permette ora (per esempio è in carico a un altro operatore, o i dati letti dalla regola sono cambiati: in quel caso chiedi una nuova decisione).",
            Some(e.to_string()),
        ),
        (422 | 428, _) => ("Alcuni dati del modulo non sono validi: correggili e riprova.", Some(e.to_string())),
        _ => ("L'operazione non è riuscita.", Some(e.to_string())),
    };
    let extra = context! { titolo => titolo, dettaglio => dettaglio, tecnico => tecnico };
    render_status(op, "errore.html", status, "", None, None, extra)
}

/// What a `?fatto=` code says.
fn done_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "presa" => "Richiesta presa in carico.",
        "rilascio" => "Richiesta rilasciata.",
        "commento" => "Commento inviato al richiedente.",
        "chiusura" => "Richiesta chiusa.",
        "rimessa" => "Richiesta rimessa in coda ai lavoratori.",
        "decisione" => "La regola ha deciso di nuovo la richiesta.",
        "ritentata" => "Notifica rimessa in invio.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn catalogue_placeholders_are_shown_as_an_ellipsis() {
        assert_eq!(
            super::without_placeholders("Esiste già la richiesta {{ prot }} aperta."),
            "Esiste già la richiesta … aperta."
        );
        assert_eq!(super::without_placeholders("Nessun segnaposto."), "Nessun segnaposto.");
    }
}

#[derive(Deserialize, Default)]
pub struct Done {
    fatto: Option<String>,
    n: Option<usize>,
}

pub async fn home(State(s): State<AppState>) -> Response {
    match &s.console {
        Some(c) => Redirect::to(&format!("{}/coda", c.base())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn robots() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "User-agent: *\nDisallow: /\n").into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("static/console.css"))
}

pub async fn icon() -> Response {
    asset("image/svg+xml", include_str!("static/icona.svg"))
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("static/console.js"))
}

/// Starts the OpenID Connect login: the login state in a signed cookie, then the provider.
pub async fn login(State(s): State<AppState>) -> Response {
    let Some(c) = &s.console else { return StatusCode::NOT_FOUND.into_response() };
    let Some(provider) = &c.provider else {
        return (StatusCode::UNAUTHORIZED, "La console si apre dal proxy di accesso dell'ente.").into_response();
    };
    match provider.start(now_ms()).await {
        Ok((url, pending)) => {
            let cookie = set_cookie(LOGIN_COOKIE, &c.signer.seal(&pending), c.base(), 600, c.secure_cookies);
            ([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response()
        }
        Err(e) => {
            warn!(error = %e, "the console's login cannot start");
            (StatusCode::SERVICE_UNAVAILABLE, "Il servizio di accesso non risponde: riprova tra poco.").into_response()
        }
    }
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The provider's redirect back: the code exchanged, the ID token verified, the session set.
pub async fn callback(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<Callback>) -> Response {
    let Some(c) = &s.console else { return StatusCode::NOT_FOUND.into_response() };
    let Some(provider) = &c.provider else { return StatusCode::NOT_FOUND.into_response() };
    let pending = cookie(&headers, LOGIN_COOKIE).and_then(|v| c.signer.open::<PendingLogin>(v));
    let (Some(pending), Some(code), Some(state), None) = (pending, q.code, q.state, q.error.as_deref()) else {
        return (StatusCode::FORBIDDEN, "Accesso non riuscito: ricomincia dalla pagina di accesso.").into_response();
    };
    let now = now_ms();
    let hours = c.config.session_hours as i64;
    match provider.finish(&pending, &state, &code, now, hours * 3_600_000).await {
        Ok(session) => {
            let sealed = c.signer.seal(&session);
            let mut response = Redirect::to(&format!("{}/coda", c.base())).into_response();
            let headers = response.headers_mut();
            for value in [
                set_cookie(SESSION_COOKIE, &sealed, c.base(), hours * 3600, c.secure_cookies),
                set_cookie(LOGIN_COOKIE, "", c.base(), 0, c.secure_cookies),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Err(e) => {
            warn!(error = %e, "a console login was refused");
            (StatusCode::FORBIDDEN, format!("Accesso non riuscito: {e}")).into_response()
        }
    }
}

/// The fields of a form body (repeated names kept, in order).
async fn form(body: Body) -> Vec<(String, String)> {
    let bytes = to_bytes(body, FORM_LIMIT).await.unwrap_or_default();
    url::form_urlencoded::parse(&bytes).into_owned().collect()
}

fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The form's CSRF token must be the session's.
fn csrf_refused(op: &Operator, fields: &[(String, String)]) -> Option<Response> {
    let token = field(fields, "csrf").unwrap_or_default();
    (!op.console.signer.csrf_holds(&op.session, token)).then(|| {
        (StatusCode::FORBIDDEN, "Modulo scaduto o non inviato da questa console: ricarica la pagina.").into_response()
    })
}

pub async fn logout(op: Operator, body: Body) -> Response {
    let fields = form(body).await;
    if let Some(refused) = csrf_refused(&op, &fields) {
        return refused;
    }
    let c = &op.console;
    let now = now_ms();
    if let Err(e) =
        c.pipeline.store.first_use_of_jti(&op.session.ended_id(), op.session.exp / 1000 + 1, now / 1000).await
    {
        tracing::error!(error = %e, "a console logout could not be recorded");
        return (StatusCode::SERVICE_UNAVAILABLE, "Uscita non registrata: riprova tra poco.").into_response();
    }
    let clear = set_cookie(SESSION_COOKIE, "", c.base(), 0, c.secure_cookies);
    ([(header::SET_COOKIE, clear)], Html("<!doctype html><html lang=\"it\"><head><meta charset=\"utf-8\"><title>Uscita — Smart-Task</title></head><body><main><h1>Sei uscito dalla console</h1><p><a href=\"login\">Accedi di nuovo</a></p></main></body></html>")).into_response()
}

#[derive(Deserialize, Default)]
pub struct QueueFilter {
    assegnata: Option<Assegnata>,
    ordina: Option<Order>,
    fatto: Option<String>,
}

/// The queue's order (`?ordina=`): nearest to the legal limit first (the default: oldest first), newest first,
/// or by task type.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Scadenza,
    Recenti,
    Task,
}

/// One row of the queue as the page shows it.
#[derive(serde::Serialize)]
struct Row {
    id: i64,
    protocollo: String,
    task: String,
    sospesa: String,
    assegnata_a: Option<String>,
    giorni_al_termine: i64,
    in_scadenza: bool,
    fatti_cambiati: bool,
}

async fn queue_rows(op: &Operator, assegnata: Option<Assegnata>) -> Result<Vec<Row>, AppError> {
    let store = &op.console.pipeline.store;
    let q = QueueQuery { assegnata, limit: app::MAX_PAGE, ..QueueQuery::default() };
    let page = ops::queue(store, &op.actor(), q, now_ms()).await?;
    Ok(page
        .items
        .into_iter()
        .map(|i| Row {
            id: i.entry.id,
            giorni_al_termine: LEGAL_DAYS - i.giorni_aperta,
            in_scadenza: i.giorni_aperta >= WARN_DAY,
            fatti_cambiati: !i.fatti_cambiati.is_empty(),
            protocollo: i.entry.protocollo,
            task: i.entry.task,
            sospesa: i.entry.sospesa,
            assegnata_a: i.entry.assegnata_a,
        })
        .collect())
}

pub async fn queue(op: Operator, Query(f): Query<QueueFilter>) -> Response {
    let mut rows = match queue_rows(&op, f.assegnata).await {
        Ok(rows) => rows,
        Err(e) => return refused(&op, e),
    };
    let ordina = f.ordina.unwrap_or_default();
    match ordina {
        Order::Scadenza => {}
        Order::Recenti => rows.reverse(),
        Order::Task => rows.sort_by(|a, b| a.task.cmp(&b.task)),
    }
    let filtro = match f.assegnata {
        Some(Assegnata::Mie) => "mie",
        Some(Assegnata::Nessuno) => "nessuno",
        None => "",
    };
    let eventi = format!("{}/coda/eventi", op.console.base());
    let message = f.fatto.as_deref().and_then(done_message);
    let ordina = match ordina {
        Order::Scadenza => "scadenza",
        Order::Recenti => "recenti",
        Order::Task => "task",
    };
    render(
        &op,
        "coda.html",
        "coda",
        Some(eventi),
        message,
        context! { righe => rows, filtro => filtro, ordina => ordina },
    )
}

/// A stream that says `cambiato` whenever `fingerprint` changes, until the daemon stops or the client leaves.
fn live<F, Fut>(
    stop: tokio::sync::watch::Receiver<bool>,
    fingerprint: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    let start = (stop, None::<String>, false, fingerprint);
    let stream = futures_util::stream::unfold(start, |(mut stop, mut last, started, fingerprint)| async move {
        if !started {
            last = fingerprint().await;
        }
        loop {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return None,
                _ = tokio::time::sleep(LIVE_EVERY) => {}
            }
            if let Some(now) = fingerprint().await
                && last.as_ref() != Some(&now)
            {
                let event = Event::default().event("cambiato").data("1");
                return Some((Ok(event), (stop, Some(now), true, fingerprint)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn digest(text: &str) -> String {
    crate::domain::hex_prefix(&Sha256::digest(text.as_bytes()), 16)
}

pub async fn queue_events(op: Operator) -> Response {
    let (console, actor) = (op.console.clone(), op.actor());
    live(op.console.stop.clone(), move || {
        let (console, actor) = (console.clone(), actor.clone());
        async move {
            let q = QueueQuery { limit: app::MAX_PAGE, ..QueueQuery::default() };
            let page = ops::queue(&console.pipeline.store, &actor, q, now_ms()).await.ok()?;
            let shown: Vec<String> = page
                .items
                .iter()
                .map(|i| format!("{}:{}:{:?}", i.entry.id, i.entry.sospesa, i.entry.assegnata_a))
                .collect();
            Some(digest(&shown.join(",")))
        }
    })
    .into_response()
}

pub async fn request_events(op: Operator, Path(id): Path<String>) -> Response {
    let Some(key) = opaque(&id) else { return StatusCode::NOT_FOUND.into_response() };
    let (console, actor, key) = (op.console.clone(), op.actor(), key.to_string());
    live(op.console.stop.clone(), move || {
        let (console, actor, key) = (console.clone(), actor.clone(), key.clone());
        async move {
            let view = app::read(&console.pipeline.store, &actor, &key).await.ok()?;
            Some(app::tagged(&view).ok()?.etag)
        }
    })
    .into_response()
}

/// A request's id as pages name it: digits only.
fn opaque(id: &str) -> Option<&str> {
    (!id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// A catalogue message as the close form shows it: the template's placeholders (`{{ prot }}`, filled in by the
/// rule that gives the reason) as "…".
fn without_placeholders(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push('…');
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A reason of the task's catalogue, for the close form.
#[derive(serde::Serialize)]
struct CatalogueReason {
    codice: String,
    testo: String,
}

pub async fn request(op: Operator, Path(id): Path<String>, Query(d): Query<Done>) -> Response {
    let Some(key) = opaque(&id) else { return refused(&op, AppError::NotFound("no request with that id".into())) };
    let store = &op.console.pipeline.store;
    let view = match app::read(store, &op.actor(), key).await {
        Ok(view) => view,
        Err(e) => return refused(&op, e),
    };
    let rules = op.console.rules.load();
    let explanation =
        app::explanation(store, &op.actor(), key, Some(&rules), &op.console.instance).await.ok().flatten();
    let etag = match app::tagged(&view) {
        Ok(t) => t.etag,
        Err(e) => return refused(&op, e),
    };
    let catalogo: Vec<CatalogueReason> = rules
        .get(&view.task)
        .map(|rule| {
            rule.reasons
                .iter()
                .map(|(codice, testo)| CatalogueReason { codice: codice.clone(), testo: without_placeholders(testo) })
                .collect()
        })
        .unwrap_or_default();
    // What was asked: the request's own fields (the notification contacts and the files are shown apart).
    let campi: Vec<(String, String)> = view
        .richiesta
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "task" | "contatti_notifica" | "allegati"))
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect()
        })
        .unwrap_or_default();
    let aperta = view.stato != "chiusa" && view.sospesa.is_some();
    let eventi = format!("{}/richieste/{}/eventi", op.console.base(), view.id);
    let message = d.fatto.as_deref().and_then(done_message);
    render(
        &op,
        "richiesta.html",
        "coda",
        Some(eventi),
        message,
        context! { r => view, campi => campi, spiegazione => explanation, etag => etag, catalogo => catalogo, aperta => aperta },
    )
}

pub async fn attachment(op: Operator, Path((id, n)): Path<(String, String)>) -> Response {
    let (Some(key), Ok(posizione)) = (opaque(&id), n.parse::<i64>()) else {
        return refused(&op, AppError::NotFound("no such attachment".into()));
    };
    match app::attachment(&op.console.pipeline.store, &op.actor(), key, posizione).await {
        Ok(file) => crate::http::attachments::file_response(file),
        Err(e) => refused(&op, e),
    }
}

/// One action on a request (`presa`, `rilascio`, `commento`, `chiusura`, `rimessa`, `nuova-decisione`).
pub async fn act(op: Operator, Path((id, action)): Path<(String, String)>, body: Body) -> Response {
    let fields = form(body).await;
    if let Some(refused) = csrf_refused(&op, &fields) {
        return refused;
    }
    let Some(key) = opaque(&id) else { return refused(&op, AppError::NotFound("no request with that id".into())) };
    let (store, actor, now) = (&op.console.pipeline.store, op.actor(), now_ms());
    let done = match action.as_str() {
        "presa" => ops::claim(store, &actor, key, now).await.map(|_| "presa"),
        "rilascio" => ops::release(store, &actor, key, now).await.map(|_| "rilascio"),
        "commento" => {
            let testo = field(&fields, "testo").unwrap_or_default();
            let max = op.console.intake.limits.max_note_chars;
            ops::comment(store, &actor, key, testo, max, now).await.map(|_| "commento")
        }
        "chiusura" => {
            let esito = field(&fields, "esito");
            let decision = OperatorDecision {
                accolta: esito == Some("accolta"),
                codes: fields.iter().filter(|(k, _)| k == "motivi").map(|(_, v)| v.clone()).collect(),
                free_text: field(&fields, "motivo_libero")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .into_iter()
                    .collect(),
                nota: field(&fields, "nota").map(str::trim).filter(|t| !t.is_empty()).map(str::to_string),
                if_match: Some(field(&fields, "etag").unwrap_or_default().to_string()),
            };
            if esito.is_none() {
                Err(app::field_refused("esito", "choose accolta or non_accolta".into()))
            } else {
                let rules = op.console.rules.load();
                let max = op.console.intake.limits.max_note_chars;
                ops::close(store, &rules, &actor, key, decision, max, now).await.map(|_| "chiusura")
            }
        }
        "rimessa" => ops::requeue(store, &actor, key, now).await.map(|_| "rimessa"),
        "nuova-decisione" => {
            let pipeline = op.console.pipeline.clone();
            ops::redecide(store, &actor, key, |claimed| pipeline.evaluate_one(claimed, now_ms()), now_ms)
                .await
                .map(|_| "decisione")
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let base = op.console.base();
    match done {
        // A closed request leaves the queue: back to it.
        Ok("chiusura") => Redirect::to(&format!("{base}/coda?fatto=chiusura")).into_response(),
        Ok(code) => Redirect::to(&format!("{base}/richieste/{key}?fatto={code}")).into_response(),
        Err(e) => refused(&op, e),
    }
}

pub async fn parked(op: Operator, Query(d): Query<Done>) -> Response {
    let groups = match ops::parked_by_version(&op.console.pipeline.store, &op.actor(), now_ms()).await {
        Ok(g) => g,
        Err(e) => return refused(&op, e),
    };
    let message = match (d.fatto.as_deref(), d.n) {
        (Some("rimesse"), Some(n)) => Some(format!("{n} richieste rimesse in coda.")),
        _ => None,
    };
    render(&op, "sospese.html", "sospese", None, message.as_deref(), context! { gruppi => groups })
}

#[derive(Deserialize)]
pub struct Version {
    versione: String,
}

pub async fn confirm_requeue(op: Operator, Query(v): Query<Version>) -> Response {
    let groups = match ops::parked_by_version(&op.console.pipeline.store, &op.actor(), now_ms()).await {
        Ok(g) => g,
        Err(e) => return refused(&op, e),
    };
    let Some(group) = groups.into_iter().find(|g| g.versione == v.versione) else {
        return refused(&op, AppError::NotFound(format!("no request parked by {}", v.versione)));
    };
    render(
        &op,
        "conferma.html",
        "sospese",
        None,
        None,
        context! { versione => group.versione, richieste => group.richieste },
    )
}

pub async fn requeue_parked(op: Operator, body: Body) -> Response {
    let fields = form(body).await;
    if let Some(refused) = csrf_refused(&op, &fields) {
        return refused;
    }
    let version = field(&fields, "versione").unwrap_or_default();
    match ops::requeue_parked(&op.console.pipeline.store, &op.actor(), version, now_ms()).await {
        Ok(done) => {
            Redirect::to(&format!("{}/coda/sospese?fatto=rimesse&n={}", op.console.base(), done.len())).into_response()
        }
        Err(e) => refused(&op, e),
    }
}

/// A row of the rule-status table.
#[derive(serde::Serialize)]
struct RuleRow {
    istanza: String,
    insieme: String,
    attivata_il: String,
    versioni: String,
    rifiutate: String,
}

/// A row of the promoted rule sets' table.
#[derive(serde::Serialize)]
struct RuleSetRow {
    numero: i64,
    stato: &'static str,
    autore: String,
    promossa_il: String,
    motivo: String,
    approvata_da: String,
}

/// An undeliverable notification, its recipient masked.
#[derive(serde::Serialize)]
struct DeadRow {
    id: i64,
    protocollo: String,
    evento: String,
    canale: String,
    destinatario: String,
    errore: String,
}

pub async fn operations(op: Operator, Query(d): Query<Done>) -> Response {
    let view = match app::operations(&op.console.pipeline.store, &op.actor()).await {
        Ok(v) => v,
        Err(e) => return refused(&op, e),
    };
    let conteggi = vec![
        ("Aperte", view.counts.aperte),
        ("In carico ai lavoratori", view.counts.in_carico),
        ("Chiuse", view.counts.chiuse),
        ("In attesa di un operatore", view.counts.sospese),
    ];
    let regole: Vec<RuleRow> = view
        .rules
        .iter()
        .map(|s| RuleRow {
            istanza: s.instance.clone(),
            insieme: s.rule_set.map_or("cartella delle regole".to_string(), |n| n.to_string()),
            attivata_il: crate::domain::time::rfc3339(s.activated_at),
            versioni: s.active.iter().map(|(t, v)| format!("{t} {v}")).collect::<Vec<_>>().join(", "),
            rifiutate: s.candidate_errors.join("; "),
        })
        .collect();
    let versioni: Vec<RuleSetRow> = view
        .rule_sets
        .iter()
        .map(|r| RuleSetRow {
            numero: r.id,
            stato: r.state.label(),
            autore: r.author.clone(),
            promossa_il: crate::domain::time::rfc3339(r.submitted_at),
            motivo: r.reason.clone(),
            approvata_da: r.approved_by.clone().unwrap_or_default(),
        })
        .collect();
    let morte: Vec<DeadRow> = view
        .undeliverable
        .into_iter()
        .map(|n| DeadRow {
            destinatario: mask(&n.destinatario),
            errore: n.errore.clone().unwrap_or_default(),
            id: n.id,
            protocollo: n.protocollo,
            evento: n.evento,
            canale: n.canale,
        })
        .collect();
    let message = d.fatto.as_deref().and_then(done_message);
    render(
        &op,
        "operazioni.html",
        "operazioni",
        None,
        message,
        context! { conteggi => conteggi, regole => regole, versioni => versioni, ombra => view.shadow, morte => morte },
    )
}

pub async fn retry_notification(op: Operator, Path(id): Path<i64>, body: Body) -> Response {
    let fields = form(body).await;
    if let Some(refused) = csrf_refused(&op, &fields) {
        return refused;
    }
    match app::retry_notification(&op.console.pipeline.store, &op.actor(), id, now_ms()).await {
        Ok(()) => Redirect::to(&format!("{}/operazioni?fatto=ritentata", op.console.base())).into_response(),
        Err(e) => refused(&op, e),
    }
}
