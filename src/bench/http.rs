//! `smart-taskd bench --http`: the HTTP intake measured from outside. A daemon (`smart-taskd run`, this
//! executable, as a child process) serves the API on a fresh database; this process is the load generator
//! beside it: concurrent clients submit the benchmark's requests one per call (`POST /richieste`), then an
//! open-loop reader issues `GET /richieste/{id}` at a steady rate. The daemon's workers decide meanwhile, as
//! in production. Tokens are real ES256 JWTs, signed by a key generated for the run and trusted through a
//! JWKS file written beside the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::{percentile, request};
use crate::config::Config;
use crate::output::outln;

const BASE: &str = "/rest/smart-task/v1";
const ISSUER: &str = "https://bench.invalid";
const AUDIENCE: &str = "smart-task";

/// The load: clients, the read rate and how long reads go on.
#[derive(Debug, Clone, Copy)]
pub struct HttpLoad {
    pub requests: usize,
    pub concurrency: usize,
    pub read_rate: u32,
    pub read_seconds: u64,
}

/// The run's signing key, and the JWKS document that trusts it.
struct SigningKey {
    encoding: jsonwebtoken::EncodingKey,
    jwks: Value,
}

fn signing_key() -> anyhow::Result<SigningKey> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate the benchmark's P-256 key"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("cannot read back the benchmark's P-256 key"))?;
    // An uncompressed point: 0x04, then x and y (32 bytes each).
    let point = pair.public_key().as_ref();
    let (x, y) = (&point[1..33], &point[33..65]);
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    }]});
    Ok(SigningKey { encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), jwks })
}

/// A requester's token, valid for an hour.
fn token(key: &SigningKey, cf: &str, profilo: &str) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "portale-bench", "iat": now, "nbf": now - 5, "exp": now + 3600,
        "ruolo": "richiedente", "cf": cf, "profilo": profilo,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".into());
    jsonwebtoken::encode(&header, &claims, &key.encoding).context("cannot sign a benchmark token")
}

/// The daemon's configuration: the benchmark's database, the configured rules and workers, the API on
/// `port` trusting `jwks`, nothing sent (notifications wait in the outbox), no rate limit in the way.
fn daemon_config(config: &Config, database: &str, port: u16, jwks: &Path) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "time_zone: {zone}\n\
         database: {{ url: {db}, max_connections: {conns} }}\n\
         rules: {{ dir: {rules}, activation: directory, max_operations: {ops}, deadline_ms: {deadline} }}\n\
         worker: {{ workers: {workers}, batch_size: {batch}, poll_interval_ms: {poll}, esito_documents: false }}\n\
         intake: {{ sede_predefinita: {sede} }}\n\
         log: {{ level: warn }}\n\
         notify: {{ enabled: false }}\n\
         webhooks: {{ enabled: false }}\n\
         api:\n  listen: \"127.0.0.1:{port}\"\n  max_in_flight: 4096\n  rate_limit: {{ requests: 1000000000, window_seconds: 60 }}\n  \
         auth: {{ jwks_file: {jwks}, issuer: {ISSUER}, audience: {AUDIENCE}, algorithms: [ES256] }}\n",
        zone = quoted(&config.time_zone),
        db = quoted(database),
        conns = config.database.max_connections,
        rules = quoted(
            &std::path::absolute(&config.rules.dir).unwrap_or_else(|_| config.rules.dir.clone()).display().to_string()
        ),
        ops = config.rules.max_operations,
        deadline = config.rules.deadline_ms,
        workers = config.worker.workers,
        batch = config.worker.batch_size,
        poll = config.worker.poll_interval_ms,
        sede = quoted(&config.intake.sede_predefinita),
        jwks = quoted(&jwks.display().to_string()),
    )
}

/// The daemon under test; stopped (SIGTERM, then waited for) when dropped by [`Daemon::stop`].
struct Daemon {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Daemon {
    async fn start(dir: &Path, config_text: &str, port: u16, client: &reqwest::Client) -> anyhow::Result<Daemon> {
        let path = dir.join("daemon.yaml");
        std::fs::write(&path, config_text).with_context(|| format!("cannot write {}", path.display()))?;
        let log = dir.join("daemon.log");
        let stderr = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let exe = std::env::current_exe().context("cannot find this executable to start the daemon")?;
        let child = tokio::process::Command::new(exe)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env_remove(crate::config::DATABASE_URL_ENV)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the daemon")?;
        let mut daemon = Daemon { child, log };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.try_wait()? {
                bail!("the daemon exited ({status}) before it was ready; its log: {}", daemon.log.display());
            }
            if Instant::now() > deadline {
                bail!("the daemon was not ready within 60 s; its log: {}", daemon.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (the daemon drains and releases its leases), then waits for it.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the daemon did not stop within 60 s of SIGTERM")??;
        if !status.success() {
            bail!("the daemon stopped with {status}; its log: {}", self.log.display());
        }
        Ok(())
    }
}

/// One submitted request: its id and its requester's token, for the reads.
struct Submitted {
    id: String,
    token: Arc<str>,
}

async fn submit_all(
    client: &reqwest::Client,
    port: u16,
    bodies: Vec<(String, Arc<str>)>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Submitted>, Vec<i64>, f64)> {
    let url = format!("http://127.0.0.1:{port}{BASE}/richieste");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
        clients.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, token)) = bodies.get(i) else { return Ok::<_, anyhow::Error>(done) };
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .context("a submission failed")?;
                let status = answer.status();
                let text = answer.text().await.context("a submission's answer was cut")?;
                if status != reqwest::StatusCode::CREATED {
                    bail!("submission {i} answered {status}: {text}");
                }
                let micros = i64::try_from(sent.elapsed().as_micros()).unwrap_or(i64::MAX);
                let answer: Value = serde_json::from_str(&text).context("a submission's answer is not JSON")?;
                let id = answer["items"][0]["id"].as_str().context("a submission's answer has no id")?.to_string();
                done.push((Submitted { id, token: token.clone() }, micros));
            }
        });
    }
    let mut submitted = Vec::new();
    let mut latencies = Vec::new();
    while let Some(result) = clients.join_next().await {
        for (s, micros) in result.context("a client task panicked")?? {
            submitted.push(s);
            latencies.push(micros);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok((submitted, latencies, elapsed))
}

/// Reads at a steady `rate` for `seconds`, open loop: each read starts at its scheduled instant whatever the
/// earlier ones are doing, and its latency counts from that instant (no coordinated omission).
async fn read_steadily(
    client: &reqwest::Client,
    port: u16,
    submitted: &[Submitted],
    rate: u32,
    seconds: u64,
) -> anyhow::Result<(Vec<i64>, usize)> {
    let total = usize::try_from(u64::from(rate) * seconds).unwrap_or(usize::MAX);
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = tokio::time::Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    for k in 0..total {
        let due = started + period * u32::try_from(k).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        let one = &submitted[(k * 7919) % submitted.len()];
        let url = format!("http://127.0.0.1:{port}{BASE}/richieste/{}", one.id);
        let (client, token) = (client.clone(), one.token.clone());
        reads.spawn(async move {
            let ok = match client.get(&url).bearer_auth(&*token).send().await {
                Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                Err(_) => false,
            };
            (i64::try_from(due.elapsed().as_micros()).unwrap_or(i64::MAX), ok)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    while let Some(result) = reads.join_next().await {
        let (micros, ok) = result.context("a read task panicked")?;
        latencies.push(micros);
        failed += usize::from(!ok);
    }
    latencies.sort_unstable();
    Ok((latencies, failed))
}

fn ms(micros: i64) -> f64 {
    micros as f64 / 1000.0
}

/// Runs the HTTP benchmark on `database` (already holding the benchmark's world) in `dir`.
pub async fn run(config: &Config, database: &str, dir: &Path, load: HttpLoad) -> anyhow::Result<()> {
    if load.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let key = signing_key()?;
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, key.jwks.to_string()).with_context(|| format!("cannot write {}", jwks.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port for the daemon")?
        .port();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.concurrency.max(64))
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let today = crate::domain::time::iso_date(crate::clock::now_ms());
    let bodies = (0..load.requests)
        .map(|i| {
            let body = request(i, &today);
            let cf = body["richiedente_cf"].as_str().unwrap_or_default();
            let profilo = body["profilo_richiedente"].as_str().unwrap_or_default();
            Ok((body.to_string(), Arc::from(token(&key, cf, profilo)?)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let daemon = Daemon::start(dir, &daemon_config(config, database, port, &jwks), port, &client).await?;
    let measured = async {
        let (submitted, latencies, elapsed) = submit_all(&client, port, bodies, load.concurrency).await?;
        outln!(
            "http intake: {} submissions by {} concurrent clients in {elapsed:.2} s: {:.0} submissions/s; \
             latency p50 {:.2} ms, p99 {:.2} ms",
            submitted.len(),
            load.concurrency,
            submitted.len() as f64 / elapsed,
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
        );
        let (reads, failed) = read_steadily(&client, port, &submitted, load.read_rate, load.read_seconds).await?;
        outln!(
            "http reads: {} GET /richieste/{{id}} at a steady {}/s for {} s: p50 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms, {failed} failed",
            reads.len(),
            load.read_rate,
            load.read_seconds,
            ms(percentile(&reads, 0.50)),
            ms(percentile(&reads, 0.99)),
            ms(reads.last().copied().unwrap_or(0)),
        );
        if failed > 0 {
            bail!("{failed} reads failed");
        }
        Ok(())
    }
    .await;
    let stopped = daemon.stop().await;
    measured?;
    stopped
}
