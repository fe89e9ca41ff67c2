//! Notifications end to end, through the real binary: a real SMTP server (Python aiosmtpd writing a Maildir,
//! `tests/support/smtp_sink.py`, read back with Python's own MIME parser) and a real local HTTP server as the
//! SMS gateway (wiremock, answering like Skebby), driven by the shipped templates and provider file.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Db, Env, Settings, repo, stderr};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

// ---------------------------------------------------------------------------------------------------------
// The SMTP server

/// aiosmtpd on 127.0.0.1:`port`, delivering into a Maildir; stop it to make the server "down".
struct Sink {
    port: u16,
    maildir: PathBuf,
    control: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn sink_script() -> PathBuf {
    repo().join("tests/support/smtp_sink.py")
}

impl Sink {
    /// A sink that is not running yet (the server is down).
    fn down(dir: &Path) -> Sink {
        common::python::smtp_python(); // installed now (first use), not later while a daemon's retries run
        Sink { port: free_port(), maildir: dir.join("maildir"), control: dir.join("smtp-control.json"), child: None }
    }

    fn start(dir: &Path) -> Sink {
        let mut sink = Sink::down(dir);
        sink.up();
        sink
    }

    fn up(&mut self) {
        let mut child = Command::new(common::python::smtp_python())
            .arg(sink_script())
            .args(["serve", "--port", &self.port.to_string()])
            .arg("--maildir")
            .arg(&self.maildir)
            .arg("--control")
            .arg(&self.control)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed to run the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the sink's first line");
        if line.trim() != "ready" {
            let out = child.wait_with_output().expect("wait for the sink");
            panic!(
                "the SMTP sink did not start (exit {:?}): {}\n(see tests/common/python.rs)",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Scripts the server's answers (see smtp_sink.py).
    fn control(&self, value: Value) {
        std::fs::write(&self.control, value.to_string()).expect("write the sink's control file");
    }

    /// Every delivered message, decoded.
    fn messages(&self) -> Vec<Mail> {
        if !self.maildir.exists() {
            return Vec::new();
        }
        let out = Command::new(common::python::smtp_python())
            .arg(sink_script())
            .args(["decode", "--maildir"])
            .arg(&self.maildir)
            .output()
            .expect("decode the Maildir");
        assert!(out.status.success(), "decode failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("decoded messages")
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Mail {
    file: String,
    message_id: String,
    subject: String,
    from: String,
    to: String,
    rcpt_to: String,
    auto_submitted: String,
    content_type: String,
    text: Option<String>,
    html: Option<String>,
    attachments: Vec<MailAttachment>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct MailAttachment {
    filename: String,
    content_type: String,
    sha256: String,
}

fn count_by_message_id(mails: &[Mail]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for m in mails {
        *out.entry(m.message_id.clone()).or_default() += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// The SMS gateway

/// A Skebby-like gateway: 201 {"result": "OK", "order_id": <the client's order_id>}; per-number scripted
/// answers (status, extra headers) are used up in order.
#[derive(Clone, Default)]
struct GatewayScript {
    answers: Arc<Mutex<HashMap<String, Vec<Answer>>>>,
}

/// A scripted gateway answer: status and extra headers.
type Answer = (u16, Vec<(String, String)>);

impl Respond for GatewayScript {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = request.body_json().unwrap_or(Value::Null);
        let to = body["recipient"][0].as_str().unwrap_or_default().to_string();
        let scripted =
            self.answers.lock().expect("lock").get_mut(&to).and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
        match scripted {
            Some((status, headers)) => {
                // Like real gateways, the refusal quotes the number and the text it was given.
                let mut r = ResponseTemplate::new(status).set_body_json(json!({
                    "result": "KO", "error": format!("recipient {to} refused"), "message": body["message"]
                }));
                for (k, v) in headers {
                    r = r.insert_header(k.as_str(), v.as_str());
                }
                r
            }
            None => ResponseTemplate::new(201).set_body_json(json!({
                "result": "OK", "order_id": body["order_id"], "total_sent": 1, "internal_order_id": "IOID-1"
            })),
        }
    }
}

struct Gateway {
    rt: tokio::runtime::Runtime,
    server: MockServer,
    script: GatewayScript,
}

impl Gateway {
    fn start() -> Gateway {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let script = GatewayScript::default();
        let server = rt.block_on(async {
            let server = MockServer::start().await;
            Mock::given(matchers::method("POST"))
                .and(matchers::path("/API/v1.0/REST/sms"))
                .respond_with(script.clone())
                .mount(&server)
                .await;
            server
        });
        Gateway { rt, server, script }
    }

    /// What SMART_TASK_SMS_URL points at.
    fn url(&self) -> String {
        format!("{}/API/v1.0/REST/sms", self.server.uri())
    }

    fn script(&self, number: &str, answers: Vec<(u16, Vec<(&str, &str)>)>) {
        self.script.answers.lock().expect("lock").insert(
            number.to_string(),
            answers
                .into_iter()
                .map(|(s, h)| (s, h.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
                .collect(),
        );
    }

    fn requests(&self) -> Vec<Request> {
        self.rt.block_on(self.server.received_requests()).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------------------
// The daemon's configuration and requests

struct Notify<'a> {
    /// The configured SMTP URL (SMART_TASK_SMTP_URL may override it).
    smtp_url: String,
    sms: bool,
    /// SMS written as files in this directory (relative to the configuration) instead of the gateway.
    sms_dir: Option<&'a str>,
    max_attempts: i64,
    batch_size: u32,
    concurrency: usize,
    lease_seconds: u64,
    timeout_ms: u64,
    log_level: &'a str,
    /// The requests' lease (a killed daemon's claims expire after it).
    worker_lease_seconds: u64,
}

impl Default for Notify<'_> {
    fn default() -> Self {
        Notify {
            smtp_url: "smtp://127.0.0.1:9".into(),
            sms: true,
            sms_dir: None,
            max_attempts: 100,
            batch_size: 16,
            concurrency: 4,
            lease_seconds: 30,
            timeout_ms: 2_000,
            log_level: "info",
            worker_lease_seconds: 30,
        }
    }
}

/// An environment with the example world and a `notify` section using the shipped templates and the
/// shipped Skebby provider file (its credentials in files, as under systemd).
fn env_with(db: Db, n: Notify) -> Env {
    let env = Env::with(db, Settings { batch_size: 16, lease_seconds: n.worker_lease_seconds, ..Default::default() });
    env.import_examples();
    let credentials = env.path("credentials");
    std::fs::create_dir_all(&credentials).expect("mkdir");
    std::fs::write(credentials.join("skebby-user-key"), "UK-test-1234\n").expect("write");
    std::fs::write(credentials.join("skebby-access-token"), "AT-test-5678\n").expect("write");
    let sms = if let Some(dir) = n.sms_dir {
        format!("  sms:\n    dir: {dir}\n    sender: INPS\n    max_segments: 2\n")
    } else if n.sms {
        format!(
            "  sms:\n    provider_file: {}\n    sender: INPS\n    max_segments: 2\n",
            repo().join("config/sms-providers/skebby.yaml").display()
        )
    } else {
        String::new()
    };
    let config = std::fs::read_to_string(&env.config)
        .expect("config")
        .replace("level: info", &format!("level: {}", n.log_level));
    let text = format!(
        "{config}notify:\n  templates_dir: {templates}\n  credentials_dir: {credentials}\n  email:\n    url: {url}\n\
         \x20   from: \"INPS - Smart-Task <noreply.smarttask@inps.test>\"\n    reply_to: \"Sede INPS <aziende.roma@inps.it>\"\n\
         \x20   timeout_ms: {timeout}\n    pool_size: 2\n{sms}  retry:\n    max_attempts: {attempts}\n    base_ms: 20\n    max_ms: 150\n\
         \x20 dispatcher:\n    batch_size: {batch}\n    concurrency: {concurrency}\n    lease_seconds: {lease}\n    poll_interval_ms: 20\n",
        templates = repo().join("config/templates").display(),
        credentials = credentials.display(),
        url = n.smtp_url,
        timeout = n.timeout_ms,
        attempts = n.max_attempts,
        batch = n.batch_size,
        concurrency = n.concurrency,
        lease = n.lease_seconds,
    );
    std::fs::write(&env.config, text).expect("write config");
    env
}

fn daemon(env: &Env, args: &[&str], smtp: Option<&str>, sms: Option<&str>) -> Command {
    let mut c = env.command(args);
    c.env_remove("SMART_TASK_SMTP_URL").env_remove("SMART_TASK_SMS_URL").env_remove("CREDENTIALS_DIRECTORY");
    if let Some(url) = smtp {
        c.env("SMART_TASK_SMTP_URL", url);
    }
    if let Some(url) = sms {
        c.env("SMART_TASK_SMS_URL", url);
    }
    c
}

/// `run --exit-when-idle`; fails the test unless it exits 0.
fn run_until_idle(env: &Env, smtp: Option<&str>, sms: Option<&str>) -> Output {
    let started = Instant::now();
    let out = common::output_within(&mut daemon(env, &["run", "--exit-when-idle"], smtp, sms), common::RUN_LIMIT);
    assert!(out.status.success(), "run failed: {}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "the run took {:?}", started.elapsed());
    out
}

/// A REVOCA_DELEGA_INTERMEDIARIO request of the example world with the given notification contacts.
/// `accolta`: the consultant renounces her delega (accepted); otherwise a retroactive revocation asked by the
/// wrong party (Non Accolta, RDI-02 and RDI-05).
fn request(accolta: bool, key: &str, email: Option<&str>, cellulare: Option<&str>, consenso: (bool, bool)) -> String {
    let mut contatti = String::new();
    if let Some(e) = email {
        contatti.push_str(&format!("  email: {e}\n"));
    }
    if let Some(c) = cellulare {
        contatti.push_str(&format!("  cellulare: \"{c}\"\n"));
    }
    contatti.push_str(&format!("  consenso_email: {}\n  consenso_sms: {}\n", consenso.0, consenso.1));
    let body = if accolta {
        "richiedente_cf: VRDGPP80A41H501Y\nprofilo_richiedente: INTERMEDIARIO\nmatricola: \"1234567890\"\n\
         cf_intermediario: VRDGPP80A41H501Y\nmotivazione: RINUNCIA\n"
    } else {
        "richiedente_cf: CLMNNA82R55F205H\nprofilo_richiedente: INTERMEDIARIO\nmatricola: \"5678901234\"\n\
         cf_intermediario: GLLSFN88H10L219C\ndata_decorrenza: 2024-01-01\nmotivazione: CESSAZIONE_INCARICO\n"
    };
    format!("task: REVOCA_DELEGA_INTERMEDIARIO\n{body}contatti_notifica:\n{contatti}chiave_idempotenza: {key}\n")
}

fn submit(env: &Env, text: &str) -> String {
    env.submit(text)[0]["protocollo"].as_str().expect("protocollo").to_string()
}

/// Outbox rows: (id, protocollo, event, channel, recipient, state, reference, attempts, last_error, provider_id).
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    protocollo: String,
    event: String,
    channel: String,
    recipient: String,
    state: String,
    reference: Option<String>,
    attempts: i64,
    last_error: Option<String>,
    provider_id: Option<String>,
}

fn outbox(env: &Env) -> Vec<Row> {
    env.sql(
        "SELECT o.id, r.protocollo, o.event, o.channel, o.recipient, o.state, o.reference, o.attempts, o.last_error,
                o.provider_id
         FROM outbox o JOIN requests r ON r.id = o.request_id ORDER BY o.id",
    )
    .into_iter()
    .map(|r| {
        let s = |i: usize| r[i].as_str().map(str::to_string);
        Row {
            id: r[0].as_i64().expect("id"),
            protocollo: s(1).expect("protocollo"),
            event: s(2).expect("event"),
            channel: s(3).expect("channel"),
            recipient: s(4).expect("recipient"),
            state: s(5).expect("state"),
            reference: s(6),
            attempts: r[7].as_i64().unwrap_or(0),
            last_error: s(8),
            provider_id: s(9),
        }
    })
    .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sms_body(r: &Request) -> Value {
    r.body_json().expect("the gateway got JSON")
}

const LABEL: &str = "Revoca delega intermediario";
const TASK: &str = "REVOCA_DELEGA_INTERMEDIARIO";
const RDI_02: &str =
    "La revoca può essere richiesta esclusivamente dall'intermediario titolare della delega o dall'azienda delegante.";
const RDI_05: &str = "La data di decorrenza della revoca non può essere antecedente alla data della richiesta.";

// ---------------------------------------------------------------------------------------------------------

fn the_three_events_arrive_by_email_and_sms_in_italian_with_every_reason(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let gateway = Gateway::start();
    // The configured SMTP URL is wrong on purpose: SMART_TASK_SMTP_URL points at the sink.
    let env = env_with(db, Notify::default());
    let ok =
        submit(&env, &request(true, "n-1", Some("studio.verdi@example.it"), Some("+39 347 765 4321"), (true, true)));
    let ko = submit(&env, &request(false, "n-2", Some("anna.colombo@example.it"), Some("333 123 4567"), (true, true)));
    run_until_idle(&env, Some(&sink.url()), Some(&gateway.url()));

    let rows = outbox(&env);
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:#?}");
    let mails = sink.messages();
    let counts = count_by_message_id(&mails);
    // Every e-mail row arrived exactly once, under its own stable Message-ID.
    let email_rows: Vec<&Row> = rows.iter().filter(|r| r.channel == "email").collect();
    assert_eq!(mails.len(), email_rows.len());
    for r in &email_rows {
        let reference = r.reference.as_deref().expect("reference");
        assert_eq!(reference, format!("<outbox-{}@smart-task>", r.id));
        assert_eq!(counts.get(reference), Some(&1), "{reference}");
        assert!(r.provider_id.as_deref().unwrap_or_default().starts_with("250"), "{r:?}");
    }
    let mail_of = |protocollo: &str, event: &str, to: &str| -> Mail {
        let row = email_rows
            .iter()
            .find(|r| r.protocollo == protocollo && r.event == event && r.recipient == to)
            .unwrap_or_else(|| panic!("no {event} e-mail row for {protocollo} to {to}: {email_rows:#?}"));
        mails.iter().find(|m| Some(m.message_id.as_str()) == row.reference.as_deref()).expect("delivered").clone()
    };
    for (protocollo, to) in [(&ok, "studio.verdi@example.it"), (&ko, "anna.colombo@example.it")] {
        let p = mail_of(protocollo, "protocollazione", to);
        let s = mail_of(protocollo, "smistamento", to);
        let c = mail_of(protocollo, "chiusura", to);
        assert!(p.subject.contains(protocollo.as_str()) && p.subject.contains("protocollata"), "{}", p.subject);
        assert!(s.subject.contains("presa in carico"), "{}", s.subject);
        for m in [&p, &s, &c] {
            assert_eq!(m.rcpt_to, to);
            assert!(m.from.contains("noreply.smarttask@inps.test"), "{}", m.from);
            assert_eq!(m.auto_submitted, "auto-generated");
            let text = m.text.as_deref().expect("text part");
            let html = m.html.as_deref().expect("html part");
            assert!(text.contains(protocollo.as_str()) && text.contains(LABEL), "{text}");
            assert!(html.contains(protocollo.as_str()) && html.contains(LABEL), "{html}");
            assert!(text.contains("Roma Tiburtino") || text.contains("Milano Nord"), "the sede: {text}");
        }
        assert!(p.text.as_deref().unwrap_or_default().contains("protocollata"));
        // The chiusura carries the esito PDF, the one whose SHA-256 the history recorded; the others nothing.
        assert_eq!(
            (p.content_type.as_str(), s.content_type.as_str()),
            ("multipart/alternative", "multipart/alternative")
        );
        assert!(p.attachments.is_empty() && s.attachments.is_empty());
        assert_eq!(c.content_type, "multipart/mixed");
        let [pdf] = c.attachments.as_slice() else { panic!("one attachment: {:?}", c.attachments) };
        assert_eq!(pdf.content_type, "application/pdf");
        assert_eq!(pdf.filename, format!("esito-{}.pdf", protocollo.replace(['.', '/'], "_")));
        let view = env.show(protocollo);
        let recorded = view["eventi"].as_array().and_then(|e| e.iter().find(|e| e["tipo"] == "esito_documento"));
        assert_eq!(recorded.map(|e| &e["dettaglio"]["sha256"]), Some(&Value::from(pdf.sha256.clone())), "{view}");
    }
    let accepted = mail_of(&ok, "chiusura", "studio.verdi@example.it");
    assert!(accepted.subject.contains("accolta") && !accepted.subject.contains("non accolta"), "{}", accepted.subject);
    assert!(accepted.text.as_deref().unwrap_or_default().contains("con esito: Accolta"));
    let rejected = mail_of(&ko, "chiusura", "anna.colombo@example.it");
    assert!(rejected.subject.contains("non accolta"), "{}", rejected.subject);
    let text = rejected.text.as_deref().expect("text");
    assert!(text.contains("con esito: Non accolta"), "{text}");
    for (code, message) in [("RDI-02", RDI_02), ("RDI-05", RDI_05)] {
        assert!(text.contains(code) && text.contains(message), "{code} missing from\n{text}");
    }
    let html = rejected.html.as_deref().expect("html");
    assert!(html.contains("RDI-02") && html.contains(RDI_05), "{html}");

    // SMS: the shipped Skebby request shape, credentials from files, E.164 numbers, our reference as order_id.
    let sms_rows: Vec<&Row> = rows.iter().filter(|r| r.channel == "sms").collect();
    assert_eq!(sms_rows.len(), 6, "three events × two requests: {sms_rows:#?}");
    let requests = gateway.requests();
    assert_eq!(requests.len(), 6);
    for r in &requests {
        assert_eq!(r.headers.get("user_key").and_then(|v| v.to_str().ok()), Some("UK-test-1234"));
        assert_eq!(r.headers.get("Access_token").and_then(|v| v.to_str().ok()), Some("AT-test-5678"));
        let body = sms_body(r);
        assert_eq!(body["message_type"], "GP");
        assert_eq!(body["sender"], "INPS");
        assert_eq!(body["encoding"], "gsm");
        assert_eq!(body["returnCredits"], false);
    }
    for row in &sms_rows {
        let reference = row.reference.as_deref().expect("reference");
        assert_eq!(reference, format!("outbox-{}", row.id));
        assert_eq!(row.provider_id.as_deref(), Some(reference), "the gateway's order_id is stored");
        let sent: Vec<Value> = requests.iter().map(sms_body).filter(|b| b["order_id"] == reference).collect();
        assert_eq!(sent.len(), 1, "{reference} sent once");
        assert_eq!(sent[0]["recipient"], json!([row.recipient]));
        let message = sent[0]["message"].as_str().expect("message");
        assert!(message.contains(&row.protocollo) && message.contains(LABEL), "{message}");
        match row.event.as_str() {
            "protocollazione" => assert!(message.contains("protocollata"), "{message}"),
            "smistamento" => assert!(message.contains("presa in carico"), "{message}"),
            _ if row.protocollo == ko => {
                assert!(message.contains("non accolta") && message.contains("RDI-02, RDI-05"), "{message}")
            }
            _ => assert!(message.contains("è stata accolta"), "{message}"),
        }
    }
    assert!(
        sms_rows.iter().any(|r| r.recipient == "+393477654321")
            && sms_rows.iter().any(|r| r.recipient == "+393331234567")
    );
}

fn without_consent_nothing_is_sent_on_that_channel(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let gateway = Gateway::start();
    let env = env_with(db, Notify { smtp_url: sink.url(), ..Default::default() });
    // E-mail only: a mobile number is given but SMS not consented.
    let mail_only =
        submit(&env, &request(false, "c-1", Some("solo.email@example.it"), Some("+39 320 111 2222"), (true, false)));
    // SMS only: an address is given but e-mail not consented.
    let sms_only =
        submit(&env, &request(false, "c-2", Some("solo.sms@example.it"), Some("+39 320 333 4444"), (false, true)));
    run_until_idle(&env, None, Some(&gateway.url()));

    let mails = sink.messages();
    assert_eq!(mails.iter().filter(|m| m.rcpt_to == "solo.email@example.it").count(), 3);
    assert!(mails.iter().all(|m| m.rcpt_to != "solo.sms@example.it"), "e-mail sent without consent");
    let to: Vec<String> =
        gateway.requests().iter().map(|r| sms_body(r)["recipient"][0].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(to.iter().filter(|t| *t == "+393203334444").count(), 3, "{to:?}");
    assert!(!to.contains(&"+393201112222".to_string()), "SMS sent without consent: {to:?}");
    let rows = outbox(&env);
    assert!(!rows.iter().any(|r| r.protocollo == mail_only && r.channel == "sms"));
    assert!(!rows.iter().any(|r| r.protocollo == sms_only && r.channel == "email"));
    assert!(rows.iter().all(|r| r.state == "sent"));
}

fn a_server_down_for_a_while_then_up_gets_every_notification_exactly_once(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut sink = Sink::down(tmp.path());
    let env = env_with(db, Notify { smtp_url: sink.url(), sms: false, ..Default::default() });
    for i in 0..8 {
        submit(&env, &request(i == 0, &format!("d-{i}"), Some(&format!("utente{i}@example.it")), None, (true, false)));
    }
    let mut child =
        daemon(&env, &["run"], None, None).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    // Down: every notification is tried and retried, none is lost or given up.
    wait_for("every request decided and every e-mail tried twice", Duration::from_secs(30), || {
        // Decided first, then the outbox: a closing writes its notifications in its transaction, so every row
        // exists once every request is closed (read the other way round, a row may land in between).
        env.sql("SELECT COUNT(*) FROM requests WHERE stato <> 'chiusa' AND parked IS NULL")[0][0] == 0 && {
            let rows = outbox(&env);
            rows.len() >= 24 && rows.iter().all(|r| r.state == "pending" && r.attempts >= 2)
        }
    });
    let rows = outbox(&env);
    assert!(
        rows.iter().all(|r| r.last_error.as_deref().unwrap_or_default().contains("Connection refused")),
        "{rows:#?}"
    );
    // Up again: everything goes out.
    sink.up();
    wait_for("every e-mail sent", Duration::from_secs(30), || outbox(&env).iter().all(|r| r.state == "sent"));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "the daemon did not stop cleanly");
    let counts = count_by_message_id(&sink.messages());
    let rows = outbox(&env);
    assert_eq!(counts.len(), rows.len(), "one message per notification");
    for r in &rows {
        assert_eq!(counts.get(r.reference.as_deref().expect("reference")), Some(&1), "{r:?}");
    }
    let mut stderr_text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr_text).expect("read stderr");
    assert!(stderr_text.contains("nuovo tentativo"), "{stderr_text}");
}

fn permanent_failures_are_recorded_listed_flag_the_contact_and_can_be_retried(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let gateway = Gateway::start();
    let env = env_with(db, Notify { smtp_url: sink.url(), max_attempts: 3, ..Default::default() });
    // Laura Bianchi's address is on file as a VALID contact (C-4): the server says it does not exist.
    let bounced = "laura.bianchi@rossicostruzioni.it";
    sink.control(
        json!({ "rcpt": { bounced: format!("550 5.1.1 <{bounced}>: Recipient address rejected: User unknown") } }),
    );
    let versions_before: Vec<i64> = env
        .sql("SELECT subject, version FROM subject_versions WHERE subject IN ('cp:BNCLRA90E50F205S', 'cm:1234567890') ORDER BY 1")
        .iter()
        .map(|r| r[1].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(versions_before.len(), 2);
    submit(&env, &request(false, "p-1", Some(bounced), None, (true, false)));
    // One number is refused by the gateway (400), one makes it busy for good (503), one asks to wait (429).
    gateway.script("+393200000001", vec![(400, vec![]); 3]);
    gateway.script("+393200000002", vec![(503, vec![]); 9]); // three events × three attempts
    gateway.script("+393200000003", vec![(429, vec![("Retry-After", "1")])]);
    submit(&env, &request(false, "p-2", None, Some("+39 320 000 0001"), (false, true)));
    submit(&env, &request(false, "p-3", None, Some("+39 320 000 0002"), (false, true)));
    submit(&env, &request(false, "p-4", None, Some("+39 320 000 0003"), (false, true)));
    let out = run_until_idle(&env, None, Some(&gateway.url()));
    let mut logs = stderr(&out);
    // Retry-After: 1 is honoured, and a row waiting for a later retry does not hold `--exit-when-idle`.
    let waits = env.sql(
        "SELECT attempts, available_at - updated_at FROM outbox WHERE recipient = '+393200000003' AND state = 'pending'",
    );
    assert!(!waits.is_empty() && waits.iter().all(|w| w[0] == 1 && w[1].as_i64().unwrap_or(0) >= 900), "{waits:?}");
    // Transient failures back off (20 to 150 ms here) until the attempts run out; each run exits as soon as
    // nothing is due now, so run until nothing is pending.
    for _ in 0..20 {
        if env.sql("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(160));
        logs.push_str(&stderr(&run_until_idle(&env, None, Some(&gateway.url()))));
    }

    let rows = outbox(&env);
    let of = |recipient: &str| -> Vec<&Row> { rows.iter().filter(|r| r.recipient == recipient).collect() };
    for r in of(bounced) {
        assert_eq!(r.state, "failed", "{r:?}");
        assert_eq!(r.attempts, 1, "a permanent failure is not retried: {r:?}");
        let error = r.last_error.as_deref().expect("error");
        // Only the codes are kept of the server's answer: it quoted the address.
        assert_eq!(error, "SMTP 550 5.1.1: indirizzo del destinatario rifiutato");
    }
    for r in of("+393200000001") {
        assert_eq!((r.state.as_str(), r.attempts), ("failed", 1), "{r:?}");
        assert_eq!(r.last_error.as_deref(), Some("HTTP 400 Bad Request"), "only the status is kept: {r:?}");
    }
    for r in of("+393200000002") {
        assert_eq!((r.state.as_str(), r.attempts), ("dead", 3), "{r:?}");
        assert!(r.last_error.as_deref().unwrap_or_default().contains("HTTP 503"), "{r:?}");
    }
    assert!(of("+393200000003").iter().all(|r| r.state == "sent"), "sent after the Retry-After");
    // The bounce flagged the contact on file, and bumped its subjects' versions for rules that read it.
    assert_eq!(
        env.sql("SELECT stato, anomalia FROM contatti WHERE id = 'C-4'"),
        vec![vec![json!("ANOMALO"), json!("EMAIL_HARD_BOUNCE")]]
    );
    let versions = || {
        env.sql("SELECT subject, version FROM subject_versions WHERE subject IN ('cp:BNCLRA90E50F205S', 'cm:1234567890') ORDER BY 1")
    };
    let bumped: Vec<i64> = versions().iter().map(|r| r[1].as_i64().unwrap_or(0)).collect();
    assert_eq!(bumped, versions_before.iter().map(|v| v + 1).collect::<Vec<_>>(), "contact subjects bumped once");
    assert!(logs.contains("contacts flagged ANOMALO"), "{logs}");

    // Listed, with the reason; recipients masked.
    let listed: Vec<Value> =
        serde_json::from_str(&env.ok(&["notifications", "list", "--dead", "--json"])).expect("json");
    let failed_ids: Vec<i64> = rows.iter().filter(|r| r.state == "failed" || r.state == "dead").map(|r| r.id).collect();
    let mut listed_ids: Vec<i64> = listed.iter().map(|l| l["id"].as_i64().expect("id")).collect();
    listed_ids.sort();
    assert_eq!(listed_ids, failed_ids);
    for l in &listed {
        assert!(l["errore"].as_str().is_some_and(|e| !e.is_empty()), "{l}");
        assert!(!l["destinatario"].as_str().unwrap_or_default().contains("laura.bianchi"), "{l}");
    }
    let text = env.ok(&["notifications", "list", "--dead"]);
    assert!(
        text.contains("SMTP 550 5.1.1")
            && text.contains("failed")
            && text.contains("dead")
            && text.contains("HTTP 503"),
        "{text}"
    );
    assert!(!text.contains(bounced) && !text.contains("3200000002"), "{text}");

    // The server accepts the address again; the gateway recovered: retry one, then all the others.
    sink.control(json!({}));
    let one = of(bounced).iter().find(|r| r.event == "chiusura").expect("chiusura").id;
    assert!(env.ok(&["notifications", "retry", &one.to_string()]).contains("queued again"));
    assert!(env.ok(&["notifications", "retry", "--all-dead"]).contains("notifications queued again"));
    run_until_idle(&env, None, Some(&gateway.url()));
    let rows = outbox(&env);
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:#?}");
    let counts = count_by_message_id(&sink.messages());
    for r in rows.iter().filter(|r| r.channel == "email") {
        assert_eq!(counts.get(r.reference.as_deref().expect("reference")), Some(&1), "{r:?}");
    }
    let to_3 = gateway.requests().iter().filter(|r| sms_body(r)["recipient"][0] == "+393200000003").count();
    assert_eq!(to_3, 4, "three events, one answered 429 then sent again");
    assert_eq!(env.ok(&["notifications", "list", "--dead"]).trim(), "no notification failed or ran out of attempts");

    // A confirmed notification is never sent again; an unknown one is not found.
    let sent = env.run(&["notifications", "retry", &one.to_string()]);
    assert_eq!(sent.status.code(), Some(2), "{}", stderr(&sent));
    assert!(stderr(&sent).contains("already sent"), "{}", stderr(&sent));
    let unknown = env.run(&["notifications", "retry", "999999"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
}

fn a_daemon_killed_while_sending_resumes_without_losing_or_resending_confirmed_notifications(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    // Each message is stored at once and acknowledged a little later, so the kill lands on messages that are
    // delivered but not yet confirmed: those are the ones a restart sends again, under the same Message-ID.
    sink.control(json!({ "ack_delay_ms": 15 }));
    let env = env_with(
        db,
        Notify {
            smtp_url: sink.url(),
            sms: false,
            batch_size: 8,
            concurrency: 4,
            lease_seconds: 3,
            timeout_ms: 1_000,
            worker_lease_seconds: 1,
            ..Default::default()
        },
    );
    let requests: Vec<String> = (0..40)
        .map(|i| request(false, &format!("k-{i}"), Some(&format!("k{i}@example.it")), None, (true, false)))
        .map(|r| format!("- {}", r.trim_end().replace('\n', "\n  ")))
        .collect();
    let file = env.write("many.yaml", &requests.join("\n"));
    env.ok(&["submit", file.to_str().expect("path")]);
    let mut child =
        daemon(&env, &["run"], None, None).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    wait_for("some notifications confirmed", Duration::from_secs(30), || {
        outbox(&env).iter().filter(|r| r.state == "sent").count() >= 30
    });
    let _ = Command::new("kill").arg("-KILL").arg(child.id().to_string()).status();
    child.wait().expect("wait");
    let before = outbox(&env);
    let confirmed: BTreeMap<String, i64> =
        before.iter().filter(|r| r.state == "sent").map(|r| (r.reference.clone().expect("reference"), r.id)).collect();
    assert!(confirmed.len() < before.len(), "killed too late to test anything");
    let delivered_before = count_by_message_id(&sink.messages());
    for reference in confirmed.keys() {
        assert_eq!(delivered_before.get(reference), Some(&1), "a confirmed notification was delivered once");
    }
    // A new daemon takes the expired leases over and sends the rest.
    run_until_idle(&env, None, None);
    let after = outbox(&env);
    assert!(after.iter().all(|r| r.state == "sent"), "{after:#?}");
    let delivered = count_by_message_id(&sink.messages());
    let mut resent_in_flight = 0;
    for r in &after {
        let reference = r.reference.as_deref().expect("reference");
        let n = delivered.get(reference).copied().unwrap_or(0);
        assert!(n >= 1, "{reference} lost");
        if confirmed.contains_key(reference) {
            assert_eq!(n, delivered_before[reference], "{reference} was confirmed, then sent again");
        } else if n > 1 {
            // In flight at the kill: delivered but not yet recorded. At least once, same Message-ID.
            resent_in_flight += n - 1;
        }
    }
    eprintln!(
        "killed with {} of {} confirmed; {resent_in_flight} in flight were delivered twice",
        confirmed.len(),
        after.len()
    );
    assert!(resent_in_flight <= 8, "at most one batch in flight is sent twice, found {resent_in_flight}");
}

fn logs_carry_no_address_number_codice_fiscale_or_body(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let gateway = Gateway::start();
    let env = env_with(db, Notify { smtp_url: sink.url(), log_level: "debug", max_attempts: 2, ..Default::default() });
    sink.control(json!({ "rcpt": { "anna.colombo@example.it": "550 5.1.1 <anna.colombo@example.it>: no such user" } }));
    gateway.script("+393331234567", vec![(400, vec![]); 3]);
    submit(&env, &request(true, "l-1", Some("studio.verdi@example.it"), Some("+39 347 765 4321"), (true, true)));
    submit(&env, &request(false, "l-2", Some("anna.colombo@example.it"), Some("333 123 4567"), (true, true)));
    let out = run_until_idle(&env, None, Some(&gateway.url()));
    let logs = stderr(&out);
    assert!(
        logs.contains("notifica inviata") && logs.contains("s***@example.it"),
        "the sends are logged, masked:\n{logs}"
    );
    assert!(logs.contains("+39*******321"), "numbers are logged masked:\n{logs}");
    assert!(logs.contains("errore permanente"), "{logs}");
    let forbidden = [
        // addresses and numbers, in every form they travel in
        "studio.verdi@example.it",
        "anna.colombo@example.it",
        "+393477654321",
        "393477654321",
        "3477654321",
        "347 765 4321",
        "3331234567",
        // codici fiscali of the requests
        "VRDGPP80A41H501Y",
        "CLMNNA82R55F205H",
        "GLLSFN88H10L219C",
        // bodies: templates' text, reason messages, SMS text
        "Gentile utente",
        "Cordiali saluti",
        "antecedente alla data della richiesta",
        "Dettagli nel Cassetto",
        "è stata presa in carico",
        // secrets
        "UK-test-1234",
        "AT-test-5678",
    ];
    for f in forbidden {
        assert!(!logs.contains(f), "`{f}` appears in the logs:\n{logs}");
    }
    assert!(outbox(&env).iter().filter(|r| r.state == "sent").count() >= 6);
}

/// A daemon whose stderr is collected as it runs.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().expect("lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        Running { child, log }
    }

    fn wait_log(&self, needle: &str) {
        wait_for(needle, Duration::from_secs(20), || self.log.lock().expect("lock").contains(needle));
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
    }

    fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "the daemon did not stop cleanly");
        self.log.lock().expect("lock").clone()
    }
}

fn sighup_reloads_the_templates_and_keeps_the_running_ones_when_new_ones_are_broken(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let templates = tmp.path().join("templates");
    for channel in ["email", "sms"] {
        std::fs::create_dir_all(templates.join(channel)).expect("mkdir");
        for entry in std::fs::read_dir(repo().join("config/templates").join(channel)).expect("read_dir").flatten() {
            std::fs::copy(entry.path(), templates.join(channel).join(entry.file_name())).expect("copy");
        }
    }
    let env = env_with(db, Notify { smtp_url: sink.url(), sms: false, ..Default::default() });
    let config = std::fs::read_to_string(&env.config).expect("config");
    let shipped = repo().join("config/templates").display().to_string();
    std::fs::write(&env.config, config.replace(&shipped, &templates.display().to_string())).expect("config");
    assert!(env.ok(&["check-config"]).contains("notify:  on"));

    let daemon = Running::start(daemon(&env, &["run"], None, None));
    let subjects = |protocollo: &str| -> Vec<String> {
        sink.messages().into_iter().filter(|m| m.subject.contains(protocollo)).map(|m| m.subject).collect()
    };
    let first = submit(&env, &request(false, "h-1", Some("primo@example.it"), None, (true, false)));
    wait_for("the first request's three e-mails", Duration::from_secs(20), || subjects(&first).len() == 3);
    assert!(subjects(&first).iter().all(|s| s.starts_with("Richiesta")));

    let protocollazione = templates.join("email/protocollazione.txt");
    let text = std::fs::read_to_string(&protocollazione).expect("read");
    std::fs::write(&protocollazione, text.replace("Oggetto: Richiesta", "Oggetto: [Nuovo modello] Richiesta"))
        .expect("write");
    daemon.signal("HUP");
    daemon.wait_log("notification templates reloaded");
    let second = submit(&env, &request(false, "h-2", Some("secondo@example.it"), None, (true, false)));
    wait_for("the second request's three e-mails", Duration::from_secs(20), || subjects(&second).len() == 3);
    assert_eq!(
        subjects(&second).iter().filter(|s| s.starts_with("[Nuovo modello]")).count(),
        1,
        "{:?}",
        subjects(&second)
    );

    // A broken template is refused: the running ones go on.
    std::fs::write(templates.join("email/smistamento.txt"), "Oggetto: {{ protocollo \n").expect("write");
    daemon.signal("HUP");
    daemon.wait_log("new notification templates refused");
    let third = submit(&env, &request(false, "h-3", Some("terzo@example.it"), None, (true, false)));
    wait_for("the third request's three e-mails", Duration::from_secs(20), || subjects(&third).len() == 3);
    assert!(subjects(&third).iter().any(|s| s.starts_with("[Nuovo modello]")));
    let log = daemon.stop();
    assert!(log.contains("smistamento.txt"), "the refusal names the file:\n{log}");
    assert!(outbox(&env).iter().all(|r| r.state == "sent"));
}

fn two_daemons_dispatching_together_send_each_notification_once(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let env =
        env_with(db, Notify { smtp_url: sink.url(), sms: false, batch_size: 4, concurrency: 2, ..Default::default() });
    let requests: Vec<String> = (0..30)
        .map(|i| request(i % 2 == 0, &format!("d-{i}"), Some(&format!("d{i}@example.it")), None, (true, false)))
        .map(|r| format!("- {}", r.trim_end().replace('\n', "\n  ")))
        .collect();
    let file = env.write("many.yaml", &requests.join("\n"));
    env.ok(&["submit", file.to_str().expect("path")]);
    // Two processes with two dispatchers claiming from one outbox (SQLite: one file; PostgreSQL: one database).
    let (a, b) =
        (Running::start(daemon(&env, &["run"], None, None)), Running::start(daemon(&env, &["run"], None, None)));
    wait_for("every notification sent", Duration::from_secs(60), || {
        let rows = outbox(&env);
        rows.len() >= 90 && rows.iter().all(|r| r.state == "sent")
    });
    let (log_a, log_b) = (a.stop(), b.stop());
    let rows = outbox(&env);
    let delivered = count_by_message_id(&sink.messages());
    for r in &rows {
        let reference = r.reference.as_deref().expect("reference");
        assert_eq!(delivered.get(reference), Some(&1), "{reference} delivered other than once");
    }
    assert_eq!(delivered.len(), rows.len(), "a message outside the outbox");
    let sent = |log: &str| log.matches("notifica inviata").count();
    assert_eq!(sent(&log_a) + sent(&log_b), rows.len(), "each send logged once, by the process that made it");
    eprintln!("two dispatchers: {} and {} notifications sent", sent(&log_a), sent(&log_b));
}

/// Runs `run --exit-when-idle` until no notification is pending (transient failures back off between runs);
/// returns the logs of every run.
fn run_until_settled(env: &Env, sms: Option<&str>) -> String {
    let mut logs = String::new();
    for _ in 0..30 {
        logs.push_str(&stderr(&run_until_idle(env, None, sms)));
        if env.sql("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0] == 0 {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(160));
    }
    panic!("notifications still pending: {:#?}", outbox(env));
}

fn without_servers_emails_go_to_a_maildir_and_sms_to_text_files_one_file_per_notification(db: Db) {
    // As in the shipped configuration: file transports, paths relative to the configuration file.
    let env = env_with(db, Notify { smtp_url: "maildir:mail".into(), sms_dir: Some("sms"), ..Default::default() });
    let ko = submit(&env, &request(false, "f-1", Some("anna.colombo@example.it"), Some("333 123 4567"), (true, true)));
    submit(&env, &request(true, "f-2", Some("studio.verdi@example.it"), None, (true, false)));
    run_until_idle(&env, None, None);
    let rows = outbox(&env);
    assert!(rows.len() >= 9, "{rows:#?}");
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:#?}");

    // Each e-mail a complete message in mail/new, named after its outbox id, read by Python's MIME parser.
    let maildir = env.path("mail");
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mails = Sink { port: 0, maildir: maildir.clone(), control: env.path("unused"), child: None }.messages();
    let email_rows: Vec<&Row> = rows.iter().filter(|r| r.channel == "email").collect();
    assert_eq!(mails.len(), email_rows.len());
    for r in &email_rows {
        let name = format!("outbox-{}.eml", r.id);
        assert_eq!(r.provider_id.as_deref(), Some(format!("maildir new/{name}").as_str()), "{r:?}");
        let mail = mails.iter().find(|m| m.file == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(Some(mail.message_id.as_str()), r.reference.as_deref());
        assert!(mail.subject.contains(&r.protocollo), "{}", mail.subject);
        assert!(mail.to.contains(&r.recipient), "{}", mail.to);
        assert_eq!(mail.auto_submitted, "auto-generated");
        assert!(mail.text.as_deref().is_some_and(|t| t.contains(LABEL)), "{mail:?}");
    }
    let rejected = email_rows.iter().find(|r| r.protocollo == ko && r.event == "chiusura").expect("chiusura");
    let text = mails.iter().find(|m| m.file == format!("outbox-{}.eml", rejected.id)).and_then(|m| m.text.clone());
    assert!(text.is_some_and(|t| t.contains("RDI-02") && t.contains(RDI_05)));
    assert!(files(&maildir.join("tmp")).is_empty(), "nothing half-written");

    // Each SMS a text file: recipient, sender, reference, encoding, then the text.
    let sms_rows: Vec<&Row> = rows.iter().filter(|r| r.channel == "sms").collect();
    assert_eq!(sms_rows.len(), 3);
    assert_eq!(files(&env.path("sms")).len(), 3, "{:?}", files(&env.path("sms")));
    for r in &sms_rows {
        let name = format!("outbox-{}.txt", r.id);
        assert_eq!(r.provider_id.as_deref(), Some(format!("file {name}").as_str()));
        let text = std::fs::read_to_string(env.path("sms").join(&name)).expect("SMS file");
        assert!(text.starts_with("Destinatario: +393331234567\nMittente: INPS\n"), "{text}");
        assert!(text.contains(&format!("Riferimento: outbox-{}\n", r.id)), "{text}");
        assert!(text.contains(&r.protocollo) && text.contains(LABEL), "{text}");
    }

    // A resend (a crash between writing and recording) replaces the copy: still one file per notification.
    env.sql("UPDATE outbox SET state = 'pending', available_at = 0, sent_at = NULL RETURNING id");
    run_until_idle(&env, None, None);
    assert!(outbox(&env).iter().all(|r| r.state == "sent" && r.attempts == 2));
    let eml = files(&maildir.join("new"));
    assert_eq!(eml.len(), email_rows.len(), "{eml:?}");
    assert!(email_rows.iter().all(|r| eml.contains(&format!("outbox-{}.eml", r.id))), "{eml:?}");
    assert_eq!(files(&env.path("sms")).len(), 3);
}

#[test]
fn the_shipped_configuration_writes_notifications_as_files() {
    let out = Command::new(common::BIN)
        .arg("--config")
        .arg(repo().join("config/smart-task.yaml"))
        .arg("check-config")
        .env_remove("SMART_TASK_SMTP_URL")
        .env_remove("SMART_TASK_SMS_URL")
        .output()
        .expect("check-config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let var = repo().join("config/../var");
    assert!(text.contains(&format!("email: maildir:{}/mail", var.display())), "{text}");
    assert!(text.contains(&format!("sms:   files in {}/sms", var.display())), "{text}");
}

fn sms_without_an_sms_channel_fail_at_once_saying_so_and_go_out_once_it_is_configured(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let env = env_with(db, Notify { smtp_url: sink.url(), sms: false, ..Default::default() });
    let anomalous = || env.sql("SELECT id FROM contatti WHERE stato = 'ANOMALO' ORDER BY id");
    let anomalous_before = anomalous();
    let protocollo =
        submit(&env, &request(false, "s-1", Some("anna.colombo@example.it"), Some("333 123 4567"), (true, true)));
    // The run ends: nothing waits for a channel that is not there.
    let logs = stderr(&run_until_idle(&env, None, None));
    let rows = outbox(&env);
    let sms: Vec<&Row> = rows.iter().filter(|r| r.channel == "sms").collect();
    assert_eq!(sms.len(), 3, "{rows:#?}");
    for r in &sms {
        assert_eq!((r.state.as_str(), r.attempts), ("failed", 1), "{r:?}");
        assert_eq!(r.last_error.as_deref(), Some("SMS non configurato (notify.sms)"), "{r:?}");
    }
    assert!(rows.iter().filter(|r| r.channel == "email").all(|r| r.state == "sent"), "{rows:#?}");
    assert!(logs.contains("SMS non configurato"), "{logs}");
    let listed = env.ok(&["notifications", "list", "--dead"]);
    assert_eq!(listed.matches("errore: SMS non configurato (notify.sms)").count(), 3, "{listed}");
    assert!(listed.contains(&protocollo), "{listed}");
    assert!(env.ok(&["check-config"]).contains("sms: SMS non configurato"), "check-config says so");
    // Not a bounce: the number on file is not flagged.
    assert_eq!(anomalous(), anomalous_before);

    // Nothing is lost: configured later, they are retried and sent.
    let gateway = Gateway::start();
    let config = std::fs::read_to_string(&env.config).expect("config");
    let sms_section = format!(
        "  sms:\n    provider_file: {}\n    sender: INPS\n    max_segments: 2\n  retry:\n",
        repo().join("config/sms-providers/skebby.yaml").display()
    );
    std::fs::write(&env.config, config.replacen("  retry:\n", &sms_section, 1)).expect("config");
    assert!(env.ok(&["notifications", "retry", "--all-dead"]).contains("3 notifications queued again"));
    run_until_idle(&env, None, Some(&gateway.url()));
    assert!(outbox(&env).iter().all(|r| r.state == "sent"), "{:#?}", outbox(&env));
    assert_eq!(gateway.requests().len(), 3);
}

fn a_relay_refusing_the_transaction_is_retried_and_never_flags_the_recipient(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let env = env_with(db, Notify { smtp_url: sink.url(), sms: false, max_attempts: 2, ..Default::default() });
    // Laura Bianchi's address is a VALID contact on file (C-4): a relay refusing everything must not flag it.
    let address = "laura.bianchi@rossicostruzioni.it";
    let versions = || env.sql("SELECT subject, version FROM subject_versions WHERE subject = 'cp:BNCLRA90E50F205S'");
    let before = versions();
    submit(&env, &request(false, "r-1", Some(address), None, (true, false)));
    for (phase, control) in [
        ("MAIL FROM", json!({ "mail": "554 5.7.1 <noreply.smarttask@inps.test>: Relay access denied" })),
        ("DATA", json!({ "data": "554 5.6.0 Message refused by policy" })),
        ("RCPT TO, not about the address", json!({ "rcpt_all": "550 5.7.1 Relaying denied" })),
    ] {
        sink.control(control);
        let logs = run_until_settled(&env, None);
        let rows = outbox(&env);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        for r in &rows {
            assert_eq!((r.state.as_str(), r.attempts), ("dead", 2), "{phase}: retried, then dead: {r:?}");
            let error = r.last_error.as_deref().unwrap_or_default();
            assert!(error.starts_with("SMTP 55") && error.contains("errore del server"), "{phase}: {error}");
        }
        assert!(!logs.contains("contacts flagged"), "{phase}: {logs}");
        assert_eq!(env.sql("SELECT stato FROM contatti WHERE id = 'C-4'"), vec![vec![json!("VALIDO")]], "{phase}");
        assert_eq!(versions(), before, "{phase}: no subject bumped");
        assert!(sink.messages().is_empty());
        env.ok(&["notifications", "retry", "--all-dead"]);
    }
    // The relay works again: everything goes out.
    sink.control(json!({}));
    run_until_settled(&env, None);
    assert!(outbox(&env).iter().all(|r| r.state == "sent"));
    assert_eq!(sink.messages().len(), 3);
}

fn what_servers_and_gateways_quote_is_neither_logged_nor_stored(db: Db) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(tmp.path());
    let gateway = Gateway::start();
    let env = env_with(db, Notify { smtp_url: sink.url(), log_level: "debug", max_attempts: 2, ..Default::default() });
    // The server quotes the address in another form; the gateway echoes the number and the text it got.
    sink.control(json!({ "rcpt": {
        "anna.colombo@example.it": "550 5.1.1 mailbox anna.colombo (Anna Colombo) unknown at example.it",
        "studio.verdi@example.it": "452 4.2.2 mailbox studio.verdi over quota"
    } }));
    gateway.script("+393331234567", vec![(400, vec![]); 3]);
    gateway.script("+393477654321", vec![(503, vec![]); 6]);
    submit(&env, &request(false, "q-1", Some("anna.colombo@example.it"), Some("333 123 4567"), (true, true)));
    submit(&env, &request(true, "q-2", Some("studio.verdi@example.it"), Some("+39 347 765 4321"), (true, true)));
    let logs = run_until_settled(&env, Some(&gateway.url()));
    let stored: Vec<String> = env
        .sql("SELECT COALESCE(last_error, '') || ' ' || COALESCE(provider_id, '') FROM outbox")
        .into_iter()
        .map(|r| r[0].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(stored.iter().any(|e| e.contains("SMTP 550 5.1.1")), "{stored:#?}");
    assert!(stored.iter().any(|e| e.contains("HTTP 400 Bad Request")), "{stored:#?}");
    assert!(stored.iter().any(|e| e.contains("HTTP 503 Service Unavailable")), "{stored:#?}");
    let forbidden = [
        "anna.colombo",
        "Anna Colombo",
        "studio.verdi",
        "3331234567",
        "3477654321",
        "over quota",
        "unknown at",
        "INPS: la richiesta",
        "protocollata il",
    ];
    for f in forbidden {
        assert!(!logs.contains(f), "`{f}` appears in the logs:\n{logs}");
    }
    for f in forbidden.iter().chain(&["refused", LABEL]) {
        for e in &stored {
            assert!(!e.contains(f), "`{f}` stored in the outbox: {e}");
        }
    }
}

#[test]
fn check_config_masks_the_passwords_of_urls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("smart-task.yaml");
    std::fs::write(
        &config,
        format!(
            "database:\n  url: postgres://smart:Db-S3cret@127.0.0.1:9/st?sslmode=disable\nrules:\n  dir: {}\n\
             intake:\n  sede_predefinita: \"7000\"\nnotify:\n  templates_dir: {}\n  email:\n\
             \x20   url: smtp://mailer:Mail-S3cret@127.0.0.1:2525\n    from: \"INPS <noreply@inps.test>\"\n  sms:\n\
             \x20   provider_file: {}\n    url: https://sms:Sms-S3cret@gateway.test/send?token=Tok-S3cret\n    sender: INPS\n",
            repo().join("rules").display(),
            repo().join("config/templates").display(),
            repo().join("config/sms-providers/skebby.yaml").display()
        ),
    )
    .expect("write");
    for env_url in [None, Some("postgres://smart:Env-S3cret@127.0.0.1:9/st")] {
        let mut command = Command::new(common::BIN);
        command.arg("--config").arg(&config).arg("check-config").env_remove("SMART_TASK_DATABASE_URL");
        command.env_remove("SMART_TASK_SMTP_URL").env_remove("SMART_TASK_SMS_URL");
        if let Some(url) = env_url {
            command.env("SMART_TASK_DATABASE_URL", url);
        }
        let out = command.output().expect("check-config");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        for secret in ["Db-S3cret", "Env-S3cret", "Mail-S3cret", "Sms-S3cret", "Tok-S3cret"] {
            assert!(!text.contains(secret), "`{secret}` printed:\n{text}");
        }
        assert!(text.contains("database: postgres://smart:***@127.0.0.1:9/st"), "{text}");
        assert!(text.contains("email: smtp://mailer:***@127.0.0.1:2525"), "{text}");
        assert!(text.contains("https://sms:***@gateway.test/send?token=***"), "{text}");
    }
}

/// The questionnaire link of a mail: the 64 hex digits after `#t=`, if any.
fn questionnaire_token(text: &str) -> Option<String> {
    let at = text.find("#t=")? + 3;
    let token: String = text[at..].chars().take_while(char::is_ascii_hexdigit).collect();
    (token.len() == 64).then_some(token)
}

fn the_chiusura_email_of_a_consulente_carries_a_one_time_questionnaire_link_answered_anonymously(db: Db) {
    let env = env_with(db, Notify { smtp_url: "maildir:mail".into(), sms: false, ..Default::default() });
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!(
            "{config}questionario:\n  gruppo_minimo: 2\n  validita_giorni: 30\n  link_base: https://portale.test/questionario\n\
             \x20 domande:\n    - {{ id: soddisfazione, testo: \"Quanto è soddisfatto?\", tipo: scala }}\n\
             \x20   - {{ id: tempi, testo: \"Tempi adeguati?\", tipo: scelta, opzioni: [SI, IN_PARTE, NO] }}\n"
        ),
    )
    .expect("config");
    // A consulente del lavoro (a registered intermediary) is invited; a requester with no category is not.
    let ok = submit(&env, &request(true, "q-1", Some("studio.verdi@example.it"), None, (true, false)));
    let ko = submit(&env, &request(false, "q-2", Some("anna.colombo@example.it"), None, (true, false)));
    run_until_idle(&env, None, None);
    let maildir = env.path("mail");
    let read = || Sink { port: 0, maildir: maildir.clone(), control: env.path("unused"), child: None }.messages();
    let mails = read();
    let rows = outbox(&env);
    let mail = |protocollo: &str, event: &str| -> Mail {
        let row = rows
            .iter()
            .find(|r| r.protocollo == protocollo && r.event == event && r.channel == "email")
            .unwrap_or_else(|| panic!("no {event} e-mail of {protocollo}: {rows:#?}"));
        let name = format!("outbox-{}.eml", row.id);
        mails.iter().find(|m| m.file == name).unwrap_or_else(|| panic!("{name} missing")).clone()
    };
    let invited = mail(&ok, "chiusura");
    let text = invited.text.as_deref().expect("text part");
    let token = questionnaire_token(text).unwrap_or_else(|| panic!("no link in the chiusura: {text}"));
    assert!(text.contains(&format!("https://portale.test/questionario#t={token}")), "{text}");
    assert!(invited.html.as_deref().is_some_and(|h| h.contains(&token)), "the html part has the link too");
    for (protocollo, event) in [(&ok, "protocollazione"), (&ko, "protocollazione"), (&ko, "chiusura")] {
        let m = mail(protocollo, event);
        assert_eq!(questionnaire_token(m.text.as_deref().unwrap_or_default()), None, "{event} of {protocollo}");
    }
    // The token is in the message alone: one invitation row, by its hash, and nothing else holds it.
    let invitations = env.sql("SELECT token_sha256, task, categoria, mese FROM questionnaire_invitations");
    assert_eq!(invitations.len(), 1, "{invitations:?}");
    assert_eq!((&invitations[0][1], &invitations[0][2]), (&json!(TASK), &json!("CONSULENTE_LAVORO")));
    for table in ["outbox", "events", "requests", "questionnaire_invitations"] {
        let dump = format!("{:?}", env.sql(&format!("SELECT * FROM {table}")));
        assert!(!dump.contains(&token), "{table} holds the token");
    }

    // Through the API: the questions, bad answers named (the link still usable), one use, then 409.
    let (child, port) = common::api::daemon(&env);
    let requester = common::api::bearer(&common::api::token(
        "portale.key.pem",
        json!({"cf": "VRDGPP80A41H501Y", "profilo": "INTERMEDIARIO"}),
    ));
    let ops =
        common::api::bearer(&common::api::token("portale.key.pem", json!({"ruolo": "operazioni", "sub": "anna"})));
    let base = common::api::BASE;
    let json_body = |headers: &str| format!("{headers}Content-Type: application/json\r\n");
    let (status, _, body) = common::daemon::request(port, &format!("{base}/questionario"), &requester);
    assert_eq!(status, 200, "{body}");
    let questions: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(questions["domande"][1]["opzioni"], json!(["SI", "IN_PARTE", "NO"]), "{questions}");
    let post = |token: &str, risposte: Value| {
        let body = json!({"token": token, "risposte": risposte}).to_string();
        common::daemon::http(port, "POST", &format!("{base}/questionario/risposte"), &json_body(&requester), &body)
    };
    let (status, head, body) = post(&token, json!({"soddisfazione": 9, "tempi": "FORSE"}));
    assert_eq!(status, 422, "{body}");
    let p = common::api::problem(&head, &body);
    let pointers: Vec<&str> =
        p["errors"].as_array().expect("errors").iter().filter_map(|e| e["pointer"].as_str()).collect();
    assert_eq!(pointers, ["/risposte/soddisfazione", "/risposte/tempi"], "{p}");
    let (status, _, body) = post(&token, json!({"soddisfazione": 4, "tempi": "SI"}));
    assert_eq!(status, 204, "{body}");
    let (status, head, body) = post(&token, json!({"soddisfazione": 1}));
    assert_eq!(status, 409, "{body}");
    assert!(common::api::problem(&head, &body)["detail"].as_str().unwrap_or_default().contains("già stato usato"));
    assert_eq!(env.sql("SELECT COUNT(*) FROM questionnaire_invitations")[0][0], json!(0));

    // One answer set is below gruppo_minimo (2): withheld from the results and the metrics.
    let results = || {
        let (status, _, body) = common::daemon::request(port, &format!("{base}/questionario/risultati"), &ops);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("json")
    };
    let r = results();
    assert_eq!((r["gruppi"].as_array().map(Vec::len), &r["gruppi_non_mostrati"]), (Some(0), &json!(1)), "{r}");
    assert!(!common::daemon::get(port, "/metrics").1.contains("smart_task_questionario_risposte{"));
    let (status, _, _) = common::daemon::request(port, &format!("{base}/questionario/risultati"), &requester);
    assert_eq!(status, 403, "a requester does not read the results");

    // A second close in the same group (the delega is revoked now: Non Accolta, but a close all the same).
    let again = submit(&env, &request(true, "q-3", Some("studio.verdi@example.it"), None, (true, false)));
    let second = || {
        let rows = outbox(&env);
        let row = rows.iter().find(|r| r.protocollo == again && r.event == "chiusura" && r.state == "sent")?;
        let name = format!("outbox-{}.eml", row.id);
        read().into_iter().find(|m| m.file == name)
    };
    wait_for("the second chiusura e-mail", Duration::from_secs(30), || second().is_some());
    let text = second().and_then(|m| m.text).unwrap_or_default();
    let token2 = questionnaire_token(&text).unwrap_or_else(|| panic!("no link: {text}"));
    assert_ne!(token2, token);
    let (status, _, body) = post(&token2, json!({"soddisfazione": 5}));
    assert_eq!(status, 204, "{body}");
    let r = results();
    let month = &invitations[0][3];
    assert_eq!(
        r["gruppi"],
        json!([{"task": TASK, "categoria": "CONSULENTE_LAVORO", "mese": month, "risposte": 2,
                "domande": {"soddisfazione": {"4": 1, "5": 1}, "tempi": {"SI": 1}}}]),
        "{r}"
    );
    let metrics = common::daemon::get(port, "/metrics").1;
    let series =
        format!("smart_task_questionario_risposte{{task=\"{TASK}\",categoria=\"CONSULENTE_LAVORO\",mese={month}}} 2");
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    // What is stored names nobody: the answer sets' columns are the group and the answers.
    let stored = format!("{:?}", env.sql("SELECT * FROM questionnaire_answers"));
    for secret in [token.as_str(), token2.as_str(), ok.as_str(), again.as_str(), "VRDGPP80A41H501Y", "studio.verdi"] {
        assert!(!stored.contains(secret), "the answers hold {secret}: {stored}");
    }
    common::daemon::stop(child);
}

backends!(
    the_chiusura_email_of_a_consulente_carries_a_one_time_questionnaire_link_answered_anonymously,
    two_daemons_dispatching_together_send_each_notification_once,
    the_three_events_arrive_by_email_and_sms_in_italian_with_every_reason,
    without_consent_nothing_is_sent_on_that_channel,
    a_server_down_for_a_while_then_up_gets_every_notification_exactly_once,
    permanent_failures_are_recorded_listed_flag_the_contact_and_can_be_retried,
    a_daemon_killed_while_sending_resumes_without_losing_or_resending_confirmed_notifications,
    logs_carry_no_address_number_codice_fiscale_or_body,
    sighup_reloads_the_templates_and_keeps_the_running_ones_when_new_ones_are_broken,
    without_servers_emails_go_to_a_maildir_and_sms_to_text_files_one_file_per_notification,
    sms_without_an_sms_channel_fail_at_once_saying_so_and_go_out_once_it_is_configured,
    a_relay_refusing_the_transaction_is_retried_and_never_flags_the_recipient,
    what_servers_and_gateways_quote_is_neither_logged_nor_stored,
);
