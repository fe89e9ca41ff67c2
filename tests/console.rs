//! The operators' console over real HTTP, behind a trusted proxy (the API's bearer tokens, signed by the test
//! keys): the queue of the operator's sede only, another sede's request answers 404, every page carries a CSP
//! whose script nonce is the page's own and `no-store`; forms refuse a missing CSRF token and a cross-site
//! origin; a claim and a close through the forms land in the history with the operator's identity, and a close
//! on a stale ETag is refused with nothing changed. The browser tests (login through a real OpenID provider,
//! live updates, accessibility) are in tests/console_browser.rs.

mod common;

use common::api::{BASE, bearer, daemon, token};
use common::daemon::{http, stop, wait_for};
use common::{Db, Env, rdi};
use serde_json::{Value, json};

const VERDI: &str = "VRDGPP80A41H501Y";
const RICCI: &str = "RCCFNC79B12H501Q";
const CONSOLE: &str = "/console";

fn operatore(id: &str, sede: &str) -> String {
    bearer(&token("portale.key.pem", json!({"ruolo": "operatore", "sub": id, "sede": sede})))
}

/// A daemon serving the API and the console behind a trusted proxy.
fn console_daemon(env: &Env) -> (std::process::Child, u16) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, format!("{text}console:\n  path: {CONSOLE}\n  trusted_proxy: true\n")).expect("config");
    daemon(env)
}

/// Ricci's request referred to sede 7000 (motivazione ALTRO); its id.
fn referred(port: u16) -> String {
    let ricci = format!(
        "{}Content-Type: application/json\r\n",
        bearer(&token("portale.key.pem", json!({"cf": RICCI, "profilo": "AZIENDA"})))
    );
    let body: Value =
        serde_saphyr::from_str(&rdi(RICCI, "AZIENDA", "6789012345", VERDI, "").replace("REVOCA\n", "ALTRO\n"))
            .expect("yaml");
    let (status, _, out) = http(port, "POST", &format!("{BASE}/richieste"), &ricci, &body.to_string());
    assert_eq!(status, 201, "{out}");
    let id = serde_json::from_str::<Value>(&out).expect("json")["items"][0]["id"].as_str().expect("id").to_string();
    wait_for("the referral", 30, || {
        let (_, _, out) = http(port, "GET", &format!("{BASE}/richieste/{id}"), &ricci, "");
        serde_json::from_str::<Value>(&out).is_ok_and(|v| v["sospesa"] == "rinvio")
    });
    id
}

/// The value of `name="…" value="…"` in a page's form.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.find(&marker).unwrap_or_else(|| panic!("no field {name} in the page")) + marker.len();
    let raw = page[at..].split('"').next().expect("value");
    // As a browser sends it: the entities the template escaped, decoded.
    raw.replace("&quot;", "\"")
        .replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn post_form(port: u16, path: &str, who: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
    let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let headers = format!("{who}Content-Type: application/x-www-form-urlencoded\r\n");
    http(port, "POST", path, &headers, &body)
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn the_console_shows_the_sede_its_queue_and_guards_every_form(db: Db) {
    let env = Env::new(db);
    let (child, port) = console_daemon(&env);
    let id = referred(port);
    let (anna, carla) = (operatore("op-anna", "7000"), operatore("op-carla", "1300"));

    // The queue of sede 7000 lists the referral; every answer is private, unframed, with a nonce-only CSP.
    let (status, head, page) = http(port, "GET", &format!("{CONSOLE}/coda"), &anna, "");
    assert_eq!(status, 200, "{head}");
    assert!(page.contains("Coda della sede 7000") && page.contains(&format!("{CONSOLE}/richieste/{id}")), "{page}");
    let csp = header(&head, "content-security-policy").expect("CSP");
    let nonce = csp.split("'nonce-").nth(1).and_then(|r| r.split('\'').next()).expect("a script nonce");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.contains(&format!("nonce=\"{nonce}\"")), "the page's script carries the answer's nonce");
    assert!(!page.contains("<script>"), "no inline script");
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"));
    let (_, head2, _) = http(port, "GET", &format!("{CONSOLE}/coda"), &anna, "");
    assert_ne!(header(&head2, "content-security-policy"), Some(csp), "a fresh nonce per answer");
    let (status, _, sorted) = http(port, "GET", &format!("{CONSOLE}/coda?ordina=recenti&assegnata=nessuno"), &anna, "");
    assert!(status == 200 && sorted.contains(&format!("/richieste/{id}")), "filters and order in the URL");
    let (status, _, operations) = http(port, "GET", &format!("{CONSOLE}/operazioni"), &anna, "");
    assert!(status == 200 && operations.contains("Disaccordi delle regole candidate"), "{operations}");
    assert!(operations.contains("Versioni promosse delle regole") && operations.contains("Nessuna versione promossa"));
    let (status, _, robots) = http(port, "GET", &format!("{CONSOLE}/robots.txt"), "", "");
    assert_eq!((status, robots.as_str()), (200, "User-agent: *\nDisallow: /\n"));

    // Without an identity: to the login; another sede: its queue is empty and the request is not found.
    let (status, head, _) = http(port, "GET", &format!("{CONSOLE}/coda"), "", "");
    assert_eq!((status, header(&head, "location")), (303, Some("/console/login")), "{head}");
    let (_, _, other) = http(port, "GET", &format!("{CONSOLE}/coda"), &carla, "");
    assert!(other.contains("Coda della sede 1300") && !other.contains(&format!("/richieste/{id}")), "{other}");
    let (status, _, missing) = http(port, "GET", &format!("{CONSOLE}/richieste/{id}"), &carla, "");
    assert_eq!(status, 404, "another sede's request is not found");
    assert!(missing.contains("Richiesta non trovata"), "{missing}");

    // The request page: the explanation, the catalogue, the forms with their CSRF token and the ETag.
    let path = format!("{CONSOLE}/richieste/{id}");
    let (status, _, page) = http(port, "GET", &path, &anna, "");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"spiegazione\"") && page.contains("GEN-05"), "the rule's explanation: {page}");
    let (csrf, etag) = (hidden(&page, "csrf"), hidden(&page, "etag"));

    // CSRF: no token, a token of another operator, a cross-site origin: refused, nothing done.
    let (status, _, _) = post_form(port, &format!("{path}/presa"), &anna, &[]);
    assert_eq!(status, 403);
    let (_, _, carla_page) = http(port, "GET", &format!("{CONSOLE}/coda"), &carla, "");
    let (status, _, _) = post_form(port, &format!("{path}/presa"), &anna, &[("csrf", &hidden(&carla_page, "csrf"))]);
    assert_eq!(status, 403, "another session's token");
    let cross = format!("{anna}Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n");
    let (status, _, _) = post_form(port, &format!("{path}/presa"), &cross, &[("csrf", &csrf)]);
    assert_eq!(status, 403, "a cross-site form post");
    assert_eq!(env.show(&id)["assegnata_a"], Value::Null, "nothing was claimed");

    // The claim, with the token: back to the page, in the history as the operator.
    let (status, head, _) = post_form(port, &format!("{path}/presa"), &anna, &[("csrf", &csrf)]);
    assert_eq!(status, 303, "{head}");
    assert_eq!(header(&head, "location"), Some(format!("{path}?fatto=presa").as_str()));
    let view = env.show(&id);
    assert_eq!(view["assegnata_a"], "op-anna");
    let claimed = view["eventi"].as_array().expect("eventi").iter().find(|e| e["tipo"] == "presa_in_carico").cloned();
    assert_eq!(claimed.map(|e| e["attore"].clone()), Some(Value::from("operatore:op-anna")));

    // The ETag read before the claim is stale: the close is refused and the request stays open.
    let close = |etag: &str| {
        post_form(
            port,
            &format!("{path}/chiusura"),
            &anna,
            &[("csrf", &csrf), ("etag", etag), ("esito", "accolta"), ("nota", "Diffida verificata")],
        )
    };
    let (status, _, refused) = close(&etag);
    assert_eq!(status, 412, "{refused}");
    assert!(refused.contains("La richiesta è cambiata nel frattempo"), "{refused}");
    assert_eq!(env.show(&id)["stato"], "in_carico");
    // With the current one: closed, the operator's note in the history.
    let (_, _, page) = http(port, "GET", &path, &anna, "");
    let (status, head, _) = close(&hidden(&page, "etag"));
    assert_eq!(status, 303, "{head}");
    assert_eq!(header(&head, "location"), Some("/console/coda?fatto=chiusura"));
    let view = env.show(&id);
    assert_eq!((view["stato"].as_str(), view["esito"].as_str()), (Some("chiusa"), Some("accolta")), "{view}");
    let closing =
        view["eventi"].as_array().expect("eventi").iter().find(|e| e["tipo"] == "chiusura").cloned().expect("chiusura");
    assert_eq!(
        (closing["attore"].as_str(), closing["dettaglio"]["nota"].as_str()),
        (Some("operatore:op-anna"), Some("Diffida verificata"))
    );
    stop(child);
}

backends!(the_console_shows_the_sede_its_queue_and_guards_every_form);
