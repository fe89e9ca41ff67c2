//! The API's test client: a daemon serving the API (trusting `tests/support/jwt/jwks.json`), bearer tokens
//! signed by the test keys, and problem+json answers read back.

use std::process::{Child, Stdio};

use serde_json::{Value, json};

use super::daemon::{free_port, get, wait_for, with_api};
use super::{Env, repo};

pub const BASE: &str = "/rest/smart-task/v1";
/// The legal representative of 1234567890 in the example facts.
pub const ROSSI: &str = "RSSMRA80A01H501U";

/// A daemon serving the API, trusting `tests/support/jwt/jwks.json`.
pub fn daemon(env: &Env) -> (Child, u16) {
    daemon_with(env, "")
}

/// As [`daemon`], with more of the `api` section (lines indented by two spaces, e.g.
/// `"  rate_limit: { requests: 3 }\n"`).
pub fn daemon_with(env: &Env, api_settings: &str) -> (Child, u16) {
    let port = free_port();
    with_api(env, port);
    let jwks = repo().join("tests/support/jwt/jwks.json");
    let text = std::fs::read_to_string(&env.config).expect("config");
    let listen = format!("  listen: \"127.0.0.1:{port}\"");
    let auth = format!(
        "{listen}\n  auth:\n    jwks_file: {}\n    issuer: https://portale.test\n    audience: smart-task\n    algorithms: [ES256]\n{api_settings}",
        jwks.display()
    );
    let limits = "  sede_predefinita: \"7000\"\n  limits: { max_document_bytes: 200000 }";
    let text = text.replace(&listen, &auth).replace("  sede_predefinita: \"7000\"", limits);
    std::fs::write(&env.config, text).expect("config");
    env.import_examples();
    let child = env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_for("the daemon", 60, || get(port, "/readyz").0 == 200);
    (child, port)
}

/// A token signed with `key` (a file of tests/support/jwt) carrying `claims` over valid defaults.
pub fn token(key: &str, claims: Value) -> String {
    let pem = std::fs::read(repo().join("tests/support/jwt").join(key)).expect("key");
    let now = chrono::Utc::now().timestamp();
    let mut all = json!({
        "iss": "https://portale.test", "aud": "smart-task", "sub": "portale", "iat": now, "nbf": now - 5,
        "exp": now + 300, "ruolo": "richiedente", "cf": ROSSI, "profilo": "AZIENDA",
    });
    for (k, v) in claims.as_object().expect("claims") {
        all[k] = v.clone();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("test-portale".into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("pem");
    jsonwebtoken::encode(&header, &all, &key).expect("sign")
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// A JSON answer's body.
pub fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The `ETag` header of an answer's head.
pub fn etag_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("etag")).map(|(_, v)| v.trim()))
        .expect("etag")
        .to_string()
}

pub fn problem(head: &str, body: &str) -> Value {
    assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}
