//! `smart-taskd bench`: a synthetic world and a realistic mix of requests, decided by the real pipeline on
//! a real database — a SQLite file in a temporary directory, or an empty PostgreSQL database with one or more
//! daemon processes sharing it — measured end to end.

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::config::Config;
use crate::domain::facts::{
    Azienda, Delega, IMPORT_VERSION, ImportFile, Intermediario, Persona, Sede, StatoDelega, TipoDelega,
};
use crate::domain::validators::{complete_codice_fiscale, complete_partita_iva};
use crate::output::outln;
use crate::{daemon, intake};

mod http;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Requests to decide
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent workers [default: worker.workers of the configuration]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Requests per batch [default: worker.batch_size of the configuration]
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Keep the database file and print its path
    #[arg(long)]
    pub keep: bool,
    /// An empty PostgreSQL database to run on (postgres://...) [default: a SQLite file in a temporary directory]
    #[arg(long)]
    pub database: Option<String>,
    /// Daemon processes deciding together (PostgreSQL only): this one and `instances - 1` started beside it
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// Measure the HTTP API instead: a daemon serves it, concurrent clients submit the requests one per call,
    /// then reads at a steady rate
    #[arg(long)]
    pub http: bool,
    /// With --http: concurrent submitting clients
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// With --http: reads per second after the submissions
    #[arg(long, default_value_t = 1_000)]
    pub read_rate: u32,
    /// With --http: how long the reads go on, in seconds
    #[arg(long, default_value_t = 10)]
    pub read_seconds: u64,
    /// Internal: run as one of the extra instances of a benchmark (decide until nothing is left, then exit)
    #[arg(long, hide = true)]
    pub join: Option<String>,
}

/// Starts extra instance `k` of a benchmark on `database`: this executable, same configuration and overrides.
fn join(config: &Config, database: &str, k: usize) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("cannot find this executable to start another instance")?;
    tokio::process::Command::new(exe)
        .arg("--config")
        .arg(&config.source)
        .args(["bench", "--join", &format!("bench-{k}")])
        .args(["--workers", &config.worker.workers.to_string()])
        .args(["--batch-size", &config.worker.batch_size.to_string()])
        .env(crate::config::DATABASE_URL_ENV, database)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start another instance")
}

/// A synthetic personal codice fiscale, unique per `n`.
fn person_cf(n: usize) -> String {
    let mut letters = [b'A'; 6];
    let mut x = n;
    for l in letters.iter_mut().rev() {
        *l = b'A' + (x % 26) as u8;
        x /= 26;
    }
    let prefix = String::from_utf8_lossy(&letters).into_owned();
    complete_codice_fiscale(&format!("{prefix}80A01H501")).unwrap_or_default()
}

/// A world of `n` companies, each with a legal representative and an intermediary holding an ATTIVA delega.
pub fn world(n: usize) -> ImportFile {
    let sedi = [("7000", "Roma Tiburtino", "RM"), ("1300", "Milano Nord", "MI"), ("5100", "Napoli", "NA")];
    let mut file = ImportFile {
        version: IMPORT_VERSION,
        sedi: sedi
            .iter()
            .map(|(c, d, p)| Sede {
                codice: c.to_string(),
                denominazione: d.to_string(),
                provincia: p.to_string(),
                email: format!("aziende.{}@inps.it", p.to_lowercase()),
            })
            .collect(),
        ..Default::default()
    };
    for i in 0..n {
        let matricola = format!("{:010}", 5_000_000_000_u64 + i as u64);
        let (rep, intermediary) = (person_cf(3 * i), person_cf(3 * i + 1));
        file.aziende.push(Azienda {
            matricola: matricola.clone(),
            cf: complete_partita_iva(&format!("{:07}{:03}", 1_000_000 + i % 8_000_000, 1 + i % 100))
                .unwrap_or_default(),
            ragione_sociale: format!("Azienda sintetica {i} S.r.l."),
            sede: sedi[i % sedi.len()].0.to_string(),
            pec_registro_imprese: Some(format!("azienda{i}@pec.example.it")),
            rappresentanti_legali: vec![rep.clone()],
        });
        for (cf, nome) in [(&rep, "Rappresentante"), (&intermediary, "Consulente")] {
            file.persone.push(Persona { cf: cf.clone(), nome: nome.into(), cognome: format!("Sintetico{i}") });
        }
        file.intermediari.push(Intermediario {
            cf: intermediary.clone(),
            categoria: "CONSULENTE_LAVORO".into(),
            albo: None,
            sede: None,
        });
        file.deleghe.push(Delega {
            id: format!("B-{i}"),
            matricola,
            delegato_cf: intermediary,
            tipo: TipoDelega::Intermediario,
            stato: StatoDelega::Attiva,
            data_inizio: "2023-01-10".into(),
            data_fine: None,
            data_revoca: None,
            padre: None,
        });
    }
    file
}

/// Request `i` of the mix: 65% accepted (the intermediary or the company), the rest rejected for one of
/// RDI-01, RDI-02, RDI-05, GEN-02 and GEN-03.
pub fn request(i: usize, today: &str) -> Value {
    let matricola = format!("{:010}", 5_000_000_000_u64 + i as u64);
    let (rep, intermediary, stranger) = (person_cf(3 * i), person_cf(3 * i + 1), person_cf(3 * i + 2));
    let mut r = json!({
        "task": "REVOCA_DELEGA_INTERMEDIARIO",
        "richiedente_cf": intermediary,
        "profilo_richiedente": "INTERMEDIARIO",
        "matricola": matricola,
        "cf_intermediario": intermediary,
        "motivazione": "RINUNCIA",
        "data_decorrenza": today,
        "contatti_notifica": { "email": format!("richiedente{i}@example.it"), "consenso_email": true,
                               "cellulare": "+393471234567", "consenso_sms": i.is_multiple_of(2) },
        "chiave_idempotenza": format!("bench-{i}"),
    });
    match i % 20 {
        0..=9 => {}
        10..=12 => {
            r["richiedente_cf"] = rep.into();
            r["profilo_richiedente"] = "AZIENDA".into();
            r["motivazione"] = "REVOCA".into();
        }
        13 | 14 => r["cf_intermediario"] = stranger.into(),
        15 | 16 => r["richiedente_cf"] = stranger.into(),
        17 => r["data_decorrenza"] = "2020-01-01".into(),
        18 => {
            let mut bad = intermediary.clone();
            bad.replace_range(15..16, if bad.ends_with('A') { "B" } else { "A" });
            r["cf_intermediario"] = bad.into();
        }
        _ => r["matricola"] = format!("{:010}", 9_900_000_000_u64 + i as u64).into(),
    }
    r
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    let mut config = config.clone();
    if let Some(w) = args.workers {
        config.worker.workers = w.max(1);
    }
    if let Some(b) = args.batch_size {
        config.worker.batch_size = b.max(1);
    }
    config.worker.poll_interval_ms = config.worker.poll_interval_ms.min(50);
    // Deciding is what is measured: the esito PDFs rendered after each close (milliseconds of CPU each) would
    // take the same cores at the same time.
    config.worker.esito_documents = false;
    if let Some(name) = &args.join {
        // An extra instance: the leader imported and queued everything; decide until the queue is empty.
        config.instance = Some(name.clone());
        let store = daemon::open_store(&config).await?;
        return daemon::run(&config, daemon::pipeline(&config, store)?, true).await;
    }
    let dir = std::env::temp_dir().join(format!("smart-task-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let database = match &args.database {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url.clone(),
        Some(url) => anyhow::bail!("--database `{url}`: expected an empty PostgreSQL database (postgres://...)"),
        None => crate::config::sqlite_url(&dir.join("bench.db")),
    };
    if args.instances > 1 && args.database.is_none() {
        anyhow::bail!(
            "--instances {}: several instances share a PostgreSQL database (--database postgres://...)",
            args.instances
        );
    }
    config.database.url = database.clone();
    let n = args.requests;
    outln!(
        "bench: {n} requests, {} instance(s) x {} workers, batch {}, database {} (esito PDFs not rendered)",
        args.instances.max(1),
        config.worker.workers,
        config.worker.batch_size,
        if args.database.is_some() { "PostgreSQL".to_string() } else { dir.join("bench.db").display().to_string() }
    );

    let store = daemon::open_store(&config).await?;
    if store.counts().await? != Default::default() {
        anyhow::bail!("the benchmark needs an empty database: this one has requests (create a new one)");
    }
    let started = Instant::now();
    store.import_facts(&world(n), false).await?;
    outln!("world: {n} aziende imported in {:.2} s", started.elapsed().as_secs_f64());
    if args.http {
        drop(store);
        let load = http::HttpLoad {
            requests: n,
            concurrency: args.concurrency,
            read_rate: args.read_rate,
            read_seconds: args.read_seconds,
        };
        let result = http::run(&config, &database, &dir, load).await;
        // A failed run keeps its directory: the daemon's log is there.
        if args.keep || result.is_err() {
            outln!("kept: {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return result;
    }

    let pipeline = daemon::pipeline(&config, store.clone())?;
    let today = crate::domain::time::iso_date(now_ms());
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        let items = chunk.iter().filter_map(|&i| request(i, &today).as_object().cloned()).collect();
        let valid = intake::validate_all(items, &pipeline.rules.load(), "bench")
            .map_err(|e| anyhow::anyhow!("synthetic request refused: {}", e[0]))?;
        store.submit(&valid, &config.intake.sede_predefinita, now_ms()).await?;
    }
    let intake_s = started.elapsed().as_secs_f64();
    outln!("intake: {n} requests in {intake_s:.2} s ({:.0}/s)", n as f64 / intake_s);

    let started = Instant::now();
    let others = (1..args.instances.max(1)).map(|k| join(&config, &database, k)).collect::<anyhow::Result<Vec<_>>>()?;
    daemon::run(&config, pipeline, true).await?;
    for mut other in others {
        let status = other.wait().await.context("cannot wait for an extra instance")?;
        if !status.success() {
            anyhow::bail!("an extra instance failed ({status}); its log is above");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let counts = store.counts().await?;
    let decisions = store.decisions_per_request().await?;
    let twice = decisions.values().filter(|&&c| c != 1).count();
    let latencies = store.close_latencies().await?;
    outln!(
        "decide: {} closed, {} referred/parked, {} decided more than once, in {elapsed:.2} s",
        counts.chiuse,
        counts.sospese,
        twice
    );
    outln!("throughput: {:.0} decisions/s", counts.chiuse as f64 / elapsed);
    outln!(
        "enqueue-to-close latency: p50 {} ms, p99 {} ms (burn-down: all {n} were queued before the first decision)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    if let Some(kib) = peak_rss_kib() {
        outln!("peak memory (VmHWM): {:.1} MiB", kib as f64 / 1024.0);
    }
    if args.keep {
        outln!("kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if counts.chiuse as usize != n || twice != 0 {
        anyhow::bail!(
            "expected {n} requests closed exactly once, got {} closed and {twice} with other than one decision",
            counts.chiuse
        );
    }
    Ok(())
}
