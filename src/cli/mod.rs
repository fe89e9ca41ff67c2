//! The `smart-taskd` command line. Exit codes: 0 success; 1 operational failure (database, I/O);
//! 2 invalid input (usage, configuration, rules, a request or a facts file); 3 not found.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{self, Actor, AppError};
use crate::clock::now_ms;
use crate::config::Config;
use crate::documents::attachment::Upload;
use crate::domain::request::{ATTACHMENTS_FIELD, Stato};
use crate::output::{StdoutError, out, outln};
use crate::store::{ListFilter, RequestView, Submitted};
use crate::{activation, bench, daemon, intake, telemetry};

mod agenda;
mod rule_sets;

#[derive(Debug, Parser)]
#[command(name = "smart-taskd", version, about = "Decides INPS Smart-Task requests with Rhai rules", long_about = None)]
pub struct Cli {
    /// Configuration file [default: config/smart-task.yaml, then /etc/smart-task/config.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: claim, decide and close queued requests until SIGTERM/SIGINT
    Run {
        /// Decide everything queued (including retries), then exit: for batch use and tests
        #[arg(long)]
        exit_when_idle: bool,
    },
    /// Submit requests from a JSON or YAML file (one request or a list; `-` reads standard input)
    Submit {
        file: String,
        /// A file to attach to the request (PDF, JPEG, PNG, TIFF, or a ZIP of those): repeat for each, up to
        /// `intake.allegati.max_files`; the document must then hold one request
        #[arg(long = "allegato", value_name = "FILE")]
        allegati: Vec<String>,
        /// Print the stored requests as JSON
        #[arg(long)]
        json: bool,
    },
    /// The retention purge, now: deletes the requests closed more than N days ago with their history,
    /// decisions, notifications and attachments (what `schedule.retention_purge` does on its schedule)
    Purge {
        #[arg(long, value_name = "N")]
        older_than_days: u32,
    },
    /// Write attachment N of a request (by id or protocol number) to a file
    Allegato {
        id_or_protocollo: String,
        /// The attachment's position (1, 2, …), as `show` lists them
        n: i64,
        /// Where to write it (`-`: standard output); an existing file is not overwritten
        #[arg(long, short)]
        out: String,
    },
    /// Show a request (by id or protocol number) with its history, reasons and effects
    Show {
        id_or_protocollo: String,
        /// Print the fields of the wire contract as JSON
        #[arg(long)]
        json: bool,
    },
    /// List requests, newest first
    List {
        /// aperta | in_carico | chiusa | annullata (withdrawn by the requester)
        #[arg(long)]
        stato: Option<String>,
        /// A task type (e.g. REVOCA_DELEGA_INTERMEDIARIO): of the rules loaded or of a stored request
        #[arg(long)]
        task: Option<String>,
        /// The subject: a matricola or a codice fiscale
        #[arg(long)]
        soggetto: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Reference data (sedi, aziende, persone, intermediari, deleghe, contatti)
    Facts {
        #[command(subcommand)]
        command: FactsCommand,
    },
    /// The operators' work: requests referred or parked for a sede
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Pilot groups: who may see and submit a task that task.yaml releases to a group only (`pilota: GROUP`)
    Pilot {
        #[command(subcommand)]
        command: PilotCommand,
    },
    /// The task types a requester may submit (their profile and pilot groups), as the API's menu shows them
    Menu {
        /// The requester's codice fiscale
        #[arg(long)]
        richiedente: String,
        /// The requester's profile (AZIENDA, INTERMEDIARIO, DIPENDENTE)
        #[arg(long)]
        profilo: String,
        #[arg(long)]
        json: bool,
    },
    /// Withdraw an open request on behalf of its requester (it closes as `annullata`)
    Annulla {
        id_or_protocollo: String,
        /// The requester's codice fiscale: only the requester may withdraw
        #[arg(long)]
        richiedente: String,
    },
    /// The bookable slots of a sede's Agenda Appuntamenti (the `agenda` section of the configuration)
    Agenda {
        /// The sede's codice (4 digits)
        sede: String,
        /// From this day, YYYY-MM-DD (default: today)
        #[arg(long)]
        dal: Option<String>,
        /// To this day, included (default: a week from `--dal`; at most 31 days)
        #[arg(long)]
        al: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The Fascicolo Elettronico of a subject: every closed request of a codice fiscale or matricola
    Fascicolo {
        /// A codice fiscale or a matricola
        soggetto: String,
        #[arg(long)]
        json: bool,
        /// Write the esito of each closed request as a PDF/A document into DIR (named by protocol number) and
        /// print each file's SHA-256 and path
        #[arg(long, value_name = "DIR")]
        pdf: Option<PathBuf>,
    },
    /// A request's decisions in words: rule version, checks with their lines, facts read, effects
    Explain {
        id_or_protocollo: String,
        #[arg(long)]
        json: bool,
    },
    /// Decide closed requests again with a candidate rule set (from the facts recorded at the time) and
    /// report what would change
    Replay {
        /// The candidate rules directory
        #[arg(long, value_name = "DIR", required_unless_present = "version", conflicts_with = "version")]
        rules: Option<PathBuf>,
        /// A promoted rule set instead, by its number (`rules versions`): an active, retired or refused one
        #[arg(long, value_name = "N")]
        version: Option<i64>,
        /// Only requests submitted on or after this date (YYYY-MM-DD)
        #[arg(long)]
        since: Option<String>,
        /// Only this task's requests
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Rule packs: test each task's cases.yaml
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Notifications: list them (those that could not be delivered with --dead) and send them again
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
    /// Validate the configuration and the rules; non-zero exit with a report on any problem
    CheckConfig,
    /// Apply pending database migrations
    Migrate,
    /// Databases: copy a SQLite database into PostgreSQL
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Measure the pipeline on a synthetic world in a temporary SQLite file
    Bench(bench::BenchArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API (what docs/openapi.json holds)
    Openapi {
        /// Write the document to this file instead of standard output
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Copy a whole SQLite database (requests, history, decisions, notifications, counters, reference data)
    /// into an empty PostgreSQL database
    #[command(long_about = "Copy a whole SQLite database (requests, history, decisions, notifications, protocol \
counters, subject versions, reference data, rule status, cron jobs) into an empty PostgreSQL database, in one \
transaction, then check that every table has as many rows in PostgreSQL as in SQLite.

Stop the daemon first (systemctl stop smart-taskd): the source is read from one snapshot and never written, so \
requests decided after the copy started would not be copied. The source must be at the latest migration (run \
`smart-taskd migrate` with the old configuration first); the target is migrated here and must be empty (nothing \
is written into a database that holds any row). Afterwards, point database.url (or SMART_TASK_DATABASE_URL) at \
the PostgreSQL database and start the daemon again.")]
    Copy {
        /// The SQLite database to copy (sqlite:PATH); opened read-only
        #[arg(long, value_name = "URL")]
        from: String,
        /// The empty PostgreSQL database to copy into (postgres://USER@HOST:PORT/DATABASE)
        #[arg(long, value_name = "URL")]
        to: String,
        /// Print the row counts per table as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NotificationsCommand {
    /// Notifications, newest first, recipients masked
    List {
        /// Only those not retried by themselves: failed permanently (SMTP 5xx, HTTP 4xx) or out of attempts
        #[arg(long)]
        dead: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue a failed or dead notification again, due now (a sent one is never sent twice)
    Retry {
        /// The notification's id (see `notifications list`)
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<i64>,
        /// Every notification that failed permanently or ran out of attempts
        #[arg(long)]
        all_dead: bool,
    },
}

#[derive(Debug, Subcommand)]
enum FactsCommand {
    /// Import a reference-data file (YAML or JSON, `version: 1`) in one transaction. Deleghe and contacts that
    /// accepted requests changed after the file's `snapshot` (or ever, without one) are kept and listed
    Import {
        file: PathBuf,
        /// Take the file's rows even where they undo the effects of accepted requests (listed)
        #[arg(long)]
        overwrite_effects: bool,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Requests waiting for an operator (referred by a rule, or parked after rule failures), oldest first
    List {
        /// Only this sede's requests (4 digits)
        #[arg(long)]
        sede: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Close a request waiting for an operator; an acceptance applies the effects the rule proposed
    Close {
        id_or_protocollo: String,
        /// accolta | non_accolta
        #[arg(long, value_parser = ["accolta", "non_accolta"])]
        esito: String,
        /// A reason code of the task's catalogue (repeatable)
        #[arg(long = "motivo")]
        motivi: Vec<String>,
        /// A reason in free text (repeatable)
        #[arg(long = "motivo-libero")]
        motivi_liberi: Vec<String>,
        /// A note kept in the history
        #[arg(long)]
        nota: Option<String>,
        /// Who closes it [default: $USER]
        #[arg(long, env = "USER", default_value = "operatore")]
        operatore: String,
    },
    /// Add a comment to a request's history; it is notified to the requester
    Comment {
        id_or_protocollo: String,
        text: String,
        #[arg(long, env = "USER", default_value = "operatore")]
        operatore: String,
    },
    /// Have the rule decide a waiting request again with the current facts and the active rules: closed if
    /// the rule decides, else referred again with what it reads now (a stale referral becomes current)
    Redecide {
        id_or_protocollo: String,
        /// Who asks for it [default: $USER]
        #[arg(long, env = "USER", default_value = "operatore")]
        operatore: String,
    },
    /// Put a referred or parked request back in the queue, for the rules to decide again
    Requeue {
        id_or_protocollo: String,
        #[arg(long, env = "USER", default_value = "operatore")]
        operatore: String,
    },
    /// Take a waiting request in hand (presa in carico): the other operators see who works it
    Claim {
        id_or_protocollo: String,
        #[arg(long, env = "USER", default_value = "operatore")]
        operatore: String,
    },
    /// Let go of a request you hold
    Release {
        id_or_protocollo: String,
        #[arg(long, env = "USER", default_value = "operatore")]
        operatore: String,
    },
}

#[derive(Debug, Subcommand)]
enum PilotCommand {
    /// Add codici fiscali to a group
    Add { group: String, cf: Vec<String> },
    /// Remove codici fiscali from a group
    Remove { group: String, cf: Vec<String> },
    /// The members of a group
    List { group: String },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Print the reference of the host API and the effects (the generated part of docs/rules.md)
    Docs,
    /// Decisions on which a task's shadow candidate disagreed with the active version
    Shadow {
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The rule versions each daemon instance runs (the promoted rule set's number), when they were
    /// activated, and why the last candidate was refused
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Vet a rules directory through every gate (compile, lint, cases, reason-code coverage, a replay of
    /// recent decisions) and record it as a rule set: active at once, awaiting a second person's approval, or
    /// refused (exit 2) with each gate's findings
    Promote {
        /// The candidate rules directory [default: rules.dir of the configuration]
        dir: Option<PathBuf>,
        /// Why: recorded with the rule set
        #[arg(long)]
        reason: String,
        /// Who promotes it [default: the login name]
        #[arg(long)]
        author: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve a rule set awaiting approval (someone other than its author): it becomes active
    Approve {
        id: i64,
        /// Who approves it [default: the login name]
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every rule set promoted, newest first: state, author, reason
    Versions {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One rule set: who, when, why, its gates' results and its diff; or its files (`--files DIR`)
    Show {
        id: i64,
        /// Write its files into DIR (new or empty) instead
        #[arg(long, value_name = "DIR")]
        files: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Compile and lint every task folder: findings with file:line:col, the source line and what to do
    Check {
        /// The rules directory [default: rules.dir of the configuration]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run the cases.yaml of every task folder (like `opa test`); exit 2 if a case fails or a file is invalid
    Test {
        /// The rules directory [default: rules.dir of the configuration]
        dir: Option<PathBuf>,
        /// Run only this task's cases
        #[arg(long)]
        task: Option<String>,
        /// Print a machine-readable report (cases, coverage, summary)
        #[arg(long)]
        json: bool,
    },
}

/// A failed command: the message and the exit code. Code 0 stops the command quietly: whoever read its
/// standard output closed it (`smart-taskd list | head -1`), which is not a failure.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

/// A write to standard output that failed: a closed pipe ends the command quietly with exit 0.
impl From<StdoutError> for Failure {
    fn from(e: StdoutError) -> Failure {
        let code = if e.closed() { 0 } else { 1 };
        Failure { code, error: e.into() }
    }
}

fn input(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: 2, error: error.into() }
}

fn runtime(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: 1, error: error.into() }
}

type Outcome = Result<(), Failure>;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::notify::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smart-taskd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let done = runtime
        .block_on(dispatch(cli))
        .and_then(|()| std::io::Write::flush(&mut std::io::stdout()).map_err(|e| StdoutError(e).into()));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.code == 0 => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("smart-taskd: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Outcome {
    if let Command::Openapi { output } = &cli.command {
        // The document depends on the code only: no configuration is read, so it can be generated anywhere.
        return openapi(output.as_deref());
    }
    let mut config = Config::load(cli.config.as_deref()).map_err(input)?;
    crate::domain::time::set_zone(config.zone());
    if matches!(cli.command, Command::Bench(_)) {
        // Per-decision log lines would dominate what the benchmark measures.
        config.log.level = "warn".into();
    }
    telemetry::init(&config.log);
    match cli.command {
        Command::Run { exit_when_idle } => {
            let store = daemon::open_store_waiting(&config).await.map_err(runtime)?;
            let evaluator = daemon::evaluator(&config);
            let active = activation::active_rules(&config, &evaluator, &store).await.map_err(input)?;
            let pipeline = daemon::pipeline_with(&config, store, evaluator, active.rules);
            let dispatcher = daemon::dispatcher(&config, &pipeline).map_err(input)?;
            let started = daemon::Started { rule_set: active.rule_set, refused: active.refused };
            daemon::run_with(&config, pipeline, dispatcher, exit_when_idle, started).await.map_err(runtime)
        }
        Command::Submit { file, allegati, json } => submit(&config, &file, &allegati, json).await,
        Command::Purge { older_than_days } => purge(&config, older_than_days).await,
        Command::Allegato { id_or_protocollo, n, out } => save_attachment(&config, &id_or_protocollo, n, &out).await,
        Command::Show { id_or_protocollo, json } => show(&config, &id_or_protocollo, json).await,
        Command::List { stato, task, soggetto, limit, json } => list(&config, stato, task, soggetto, limit, json).await,
        Command::Facts { command: FactsCommand::Import { file, overwrite_effects } } => {
            import_facts(&config, &file, overwrite_effects).await
        }
        Command::Rules { command: RulesCommand::Test { dir, task, json } } => rules_test(&config, dir, task, json),
        Command::Rules { command: RulesCommand::Check { dir, json } } => rules_check(&config, dir, json),
        Command::Rules { command: RulesCommand::Docs } => {
            out!("{}", crate::rules::reference_markdown(&daemon::evaluator(&config)));
            Ok(())
        }
        Command::Rules { command: RulesCommand::Shadow { task, json } } => {
            let store = existing_store(&config).await?;
            let found = store.shadow_disagreements(task.as_deref()).await.map_err(runtime)?;
            if json {
                let out: Vec<serde_json::Value> = found
                    .iter()
                    .map(|d| {
                        serde_json::json!({ "protocollo": d.protocollo, "task": d.task,
                            "attiva": { "versione": d.decision.rule_version, "esito": d.decision.outcome,
                                        "motivi": d.decision.reasons.iter().map(|r| &r.codice).collect::<Vec<_>>() },
                            "candidata": d.decision.trace.shadow })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&out).map_err(runtime)?);
                return Ok(());
            }
            outln!("{} disaccordi tra versione attiva e candidata", found.len());
            for d in found.iter().map(app::ShadowDisagreement::of) {
                outln!("  {}  {}  attiva {}  candidata {}", d.protocollo, d.task, d.attiva, d.candidata);
            }
            Ok(())
        }
        Command::Rules { command: RulesCommand::Status { json } } => rule_sets::status(&config, json).await,
        Command::Rules { command: RulesCommand::Promote { dir, reason, author, json } } => {
            rule_sets::promote(&config, dir, author, &reason, json).await
        }
        Command::Rules { command: RulesCommand::Approve { id, by, json } } => {
            rule_sets::approve(&config, id, by, json).await
        }
        Command::Rules { command: RulesCommand::Versions { limit, json } } => {
            rule_sets::versions(&config, limit, json).await
        }
        Command::Rules { command: RulesCommand::Show { id, files, json } } => {
            rule_sets::show(&config, id, files.as_deref(), json).await
        }
        Command::Operator { command } => operator(&config, command).await,
        Command::Explain { id_or_protocollo, json } => explain(&config, &id_or_protocollo, json).await,
        Command::Replay { rules, version, since, task, json } => {
            replay(&config, rules, version, since, task, json).await
        }
        Command::Annulla { id_or_protocollo, richiedente } => {
            let store = existing_store(&config).await?;
            let view = app::withdraw(&store, &Actor::Cli, &id_or_protocollo, &richiedente, now_ms())
                .await
                .map_err(app_failure)?;
            outln!("{}: annullata", view.protocollo);
            Ok(())
        }
        Command::Pilot { command } => pilot(&config, command).await,
        Command::Menu { richiedente, profilo, json } => menu(&config, richiedente, profilo, json).await,
        Command::Agenda { sede, dal, al, json } => agenda::slots(&config, &sede, dal, al, json),
        Command::Fascicolo { soggetto, json, pdf } => fascicolo(&config, &soggetto, json, pdf.as_deref()).await,
        Command::Notifications { command } => notifications(&config, command).await,
        Command::CheckConfig => check_config(&config),
        // Both databases are named on the command line; the configuration only sets the log level.
        Command::Db { command: DbCommand::Copy { from, to, json } } => db_copy(&from, &to, json).await,
        Command::Migrate => {
            daemon::open_store(&config).await.map_err(runtime)?;
            outln!("database is up to date");
            Ok(())
        }
        // Answered before the configuration is loaded; kept here so the match stays exhaustive without a panic.
        Command::Openapi { output } => openapi(output.as_deref()),
        Command::Bench(args) => bench::run(&config, args).await.map_err(|e| match e.downcast::<StdoutError>() {
            Ok(stdout) => stdout.into(),
            Err(e) => runtime(e),
        }),
    }
}

/// `db copy`: a SQLite database into an empty PostgreSQL database. URLs are never printed back (a
/// PostgreSQL URL may carry a password).
async fn db_copy(from: &str, to: &str, json: bool) -> Outcome {
    use crate::store::{Dialect, Store, StoreError};
    let scheme =
        |url: &str| url.split_once(':').map_or_else(|| "an unrecognised".to_string(), |(s, _)| format!("a `{s}:`"));
    if crate::store::dialect_of_url(from).ok() != Some(Dialect::Sqlite) {
        return Err(input(anyhow::anyhow!(
            "--from must be a SQLite database URL (sqlite:PATH, e.g. sqlite:/var/lib/smart-task/smart-task.db), \
             not {} URL: db copy copies from SQLite into PostgreSQL",
            scheme(from)
        )));
    }
    if crate::store::dialect_of_url(to).ok() != Some(Dialect::Postgres) {
        return Err(input(anyhow::anyhow!(
            "--to must be a PostgreSQL database URL (postgres://USER@HOST:PORT/DATABASE or postgresql://…), not {} \
             URL: db copy copies from SQLite into PostgreSQL",
            scheme(to)
        )));
    }
    let failure = |e: StoreError| match e {
        StoreError::Refused(_) | StoreError::SourceNotCurrent(_) | StoreError::TargetNotEmpty(_) => input(e),
        other => runtime(other),
    };
    let source = Store::open_read_only(from).await.map_err(|e| match e {
        StoreError::Refused(_) => input(e),
        other => runtime(anyhow::Error::new(other).context("cannot open the source database (--from)")),
    })?;
    let target =
        Store::connect(to, 2).await.context("cannot connect to the target database (--to)").map_err(runtime)?;
    let report = source.copy_into(&target).await.map_err(failure)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report).map_err(runtime)?);
        return Ok(());
    }
    outln!("{:<18} {:>10} {:>10}", "table", "sqlite", "postgresql");
    for t in &report.tables {
        outln!("{:<18} {:>10} {:>10}", t.table, t.source, t.target);
    }
    let total = |f: fn(&crate::store::CopiedTable) -> i64| report.tables.iter().map(f).sum::<i64>();
    outln!("{:<18} {:>10} {:>10}", "total", total(|t| t.source), total(|t| t.target));
    outln!(
        "copied: every table has as many rows in PostgreSQL as in SQLite; point database.url (or \
         SMART_TASK_DATABASE_URL) at the PostgreSQL database and start the daemon"
    );
    Ok(())
}

async fn explain(config: &Config, key: &str, json: bool) -> Outcome {
    let store = existing_store(config).await?;
    let decisions = store.decisions_of(key).await.map_err(runtime)?;
    if decisions.is_empty() {
        return match store.request(key).await.map_err(runtime)? {
            None => Err(Failure { code: 3, error: anyhow::anyhow!("no request with id or protocol number `{key}`") }),
            Some(v) => Err(input(anyhow::anyhow!("request {} has no decision yet (stato: {})", v.protocollo, v.stato))),
        };
    }
    if json {
        let out: Vec<serde_json::Value> = decisions
            .iter()
            .map(|d| {
                serde_json::json!({ "protocollo": d.protocollo, "task": d.task,
                                    "decisa_il": crate::domain::time::rfc3339(d.decided_at), "decisione": d.decision })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out).map_err(runtime)?);
    } else {
        // Decided before sources were kept: the rules directory may still hold that version.
        let rules = activation::load_rules(config, &daemon::evaluator(config)).ok();
        let text = app::explanation(&store, &Actor::Cli, key, rules.as_ref(), &config.instance_name())
            .await
            .map_err(app_failure)?;
        out!("{}", text.unwrap_or_default());
    }
    Ok(())
}

async fn replay(
    config: &Config,
    dir: Option<PathBuf>,
    version: Option<i64>,
    since: Option<String>,
    task: Option<String>,
    json: bool,
) -> Outcome {
    let since = since
        .map(|d| {
            chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
                .ok_or_else(|| input(anyhow::anyhow!("--since `{d}`: expected a date YYYY-MM-DD")))
        })
        .transpose()?;
    let evaluator = std::sync::Arc::new(daemon::evaluator(config));
    let store = existing_store(config).await?;
    let candidate = match (dir, version) {
        (Some(dir), _) => crate::rules::load_rule_set(&dir, &evaluator)
            .with_context(|| format!("cannot load the candidate rules in {}", dir.display()))
            .map_err(input)?,
        (None, Some(id)) => {
            let set = app::rule_sets::rule_set(&store, &Actor::Cli, id).await.map_err(app_failure)?;
            app::rule_sets::compile(&set, &evaluator).map_err(app_failure)?
        }
        (None, None) => {
            return Err(input(anyhow::anyhow!("replay: name the candidate with --rules DIR or --version N")));
        }
    };
    let loader = std::sync::Arc::new(crate::worker::StoreLoader::new(store.clone()));
    let report = crate::ruletools::replay::replay(
        &store,
        std::sync::Arc::new(candidate),
        evaluator,
        loader,
        since,
        task.as_deref(),
    )
    .await
    .map_err(runtime)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report).map_err(runtime)?);
    } else {
        out!("{}", report.render());
    }
    Ok(())
}

/// `list`: requests, newest first. An unknown state or task type is refused (a typo would list nothing).
async fn list(
    config: &Config,
    stato: Option<String>,
    task: Option<String>,
    soggetto: Option<String>,
    limit: i64,
    json: bool,
) -> Outcome {
    let stato = stato
        .map(|s| {
            Stato::parse(&s).ok_or_else(|| {
                let known: Vec<&str> = Stato::ALL.iter().map(|st| st.as_str()).collect();
                input(anyhow::anyhow!("--stato `{s}` is not a state: expected one of {}", known.join(", ")))
            })
        })
        .transpose()?;
    let store = existing_store(config).await?;
    if let Some(t) = &task {
        check_task(config, &store, t).await?;
    }
    let rows = store.list(&ListFilter { stato, task, soggetto, limit, ..Default::default() }).await.map_err(runtime)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows).map_err(runtime)?);
        return Ok(());
    }
    for r in rows {
        let esito =
            r.esito.as_deref().or(r.sospesa.as_deref().map(|s| if s == "rinvio" { "rinviata" } else { "sospesa" }));
        outln!(
            "{:<18} {:>6}  {:<36} {:<10} {:<12} {}",
            r.protocollo,
            r.id,
            r.task,
            r.stato,
            esito.unwrap_or("-"),
            r.creata_il
        );
    }
    Ok(())
}

/// Refuses a task type that is neither in the rules directory nor among the stored requests, listing both.
async fn check_task(config: &Config, store: &crate::store::Store, task: &str) -> Outcome {
    let mut known: std::collections::BTreeSet<String> =
        store.stored_tasks().await.map_err(runtime)?.into_iter().collect();
    if known.contains(task) {
        return Ok(());
    }
    let rules = activation::load_rules(config, &daemon::evaluator(config)).map_err(input)?;
    known.extend(rules.tasks.keys().cloned());
    if known.contains(task) {
        return Ok(());
    }
    let known: Vec<String> = known.into_iter().collect();
    Err(input(anyhow::anyhow!("--task `{task}` is not a known task type: expected one of {}", known.join(", "))))
}

/// The configured database for the commands that do not submit or import: it must exist and be at the
/// latest migration (nothing is created or migrated; `migrate`, `submit`, `facts import` and `run` do that).
async fn existing_store(config: &Config) -> Result<crate::store::Store, Failure> {
    use crate::store::{Store, StoreError};
    Store::open_existing(&config.database.url, config.database.max_connections).await.map_err(|e| match e {
        StoreError::Missing(_) | StoreError::NotCurrent(_) | StoreError::UnsupportedUrl(_) => input(e),
        other => runtime(anyhow::Error::new(other).context("cannot open the database (database.url)")),
    })
}

/// Maps a store error to the exit code it deserves.
fn store_failure(e: crate::store::StoreError) -> Failure {
    app_failure(AppError::Store(e))
}

/// A use case's failure with its exit code.
fn app_failure(e: AppError) -> Failure {
    Failure { code: e.exit_code(), error: e.into() }
}

async fn operator(config: &Config, command: OperatorCommand) -> Outcome {
    use crate::app::operator::{self, OperatorDecision, QueueQuery};
    let store = existing_store(config).await?;
    let named = |id: String| Actor::OperatoreCli { id };
    let max_chars = config.intake.limits.max_note_chars;
    match command {
        OperatorCommand::List { sede, json } => {
            let q = QueueQuery { sede, limit: app::MAX_PAGE, ..Default::default() };
            let page = operator::queue(&store, &Actor::Cli, q, now_ms()).await.map_err(app_failure)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&page.items).map_err(runtime)?);
            } else if page.items.is_empty() {
                outln!("no request is waiting for an operator");
            }
            if !json {
                for item in &page.items {
                    let q = &item.entry;
                    let why = match q.sospesa.as_str() {
                        "rinvio" => {
                            q.motivazioni.iter().filter_map(|m| m["codice"].as_str()).collect::<Vec<_>>().join(", ")
                        }
                        _ => format!("errore: {}", q.errore.as_deref().unwrap_or("-")),
                    };
                    let stale = if item.fatti_cambiati.is_empty() {
                        String::new()
                    } else {
                        let facts: Vec<String> = item.fatti_cambiati.iter().map(ToString::to_string).collect();
                        format!("  SUPERATO — fatti cambiati dal rinvio: {}", facts.join("; "))
                    };
                    let held = q.assegnata_a.as_deref().map(|a| format!("  in carico a {a}")).unwrap_or_default();
                    outln!(
                        "{:<18} sede {}  {:<36} {:<7} {} ({} gg){held}  {why}{stale}",
                        q.protocollo,
                        q.sede,
                        q.task,
                        q.sospesa,
                        q.creata_il,
                        item.giorni_aperta
                    );
                }
                if page.next_after.is_some() {
                    outln!("… more requests are waiting than the {} shown: narrow with --sede", app::MAX_PAGE);
                }
            }
            Ok(())
        }
        OperatorCommand::Close { id_or_protocollo, esito, motivi, motivi_liberi, nota, operatore } => {
            let evaluator = daemon::evaluator(config);
            let rules = activation::intake_rules(config, &evaluator, &store).await.map_err(input)?;
            let decision = OperatorDecision {
                accolta: esito == "accolta",
                codes: motivi,
                free_text: motivi_liberi,
                nota,
                if_match: None,
            };
            let protocollo =
                operator::close(&store, &rules, &named(operatore), &id_or_protocollo, decision, max_chars, now_ms())
                    .await
                    .map_err(app_failure)?;
            outln!("{protocollo}: chiusa, esito {esito}");
            Ok(())
        }
        OperatorCommand::Redecide { id_or_protocollo, operatore } => {
            let evaluator = daemon::evaluator(config);
            let rules = activation::intake_rules(config, &evaluator, &store).await.map_err(input)?;
            let pipeline = daemon::pipeline_with(config, store.clone(), evaluator, rules);
            let done = operator::redecide(
                &store,
                &named(operatore),
                &id_or_protocollo,
                |claimed| pipeline.evaluate_one(claimed, now_ms()),
                now_ms,
            )
            .await
            .map_err(app_failure)?;
            if done.esito == crate::domain::decision::Outcome::Rinvio {
                outln!(
                    "{}: rinviata di nuovo all'operatore, con i fatti attuali (ora `operator close` la chiude)",
                    done.protocollo
                );
            } else {
                outln!("{}: chiusa dalla regola, esito {}", done.protocollo, done.esito.as_str());
            }
            for r in &done.motivazioni {
                outln!("  {}: {}", r.codice, r.messaggio);
            }
            Ok(())
        }
        OperatorCommand::Comment { id_or_protocollo, text, operatore } => {
            let protocollo =
                operator::comment(&store, &named(operatore), &id_or_protocollo, &text, max_chars, now_ms())
                    .await
                    .map_err(app_failure)?;
            outln!("{protocollo}: commento registrato");
            Ok(())
        }
        OperatorCommand::Requeue { id_or_protocollo, operatore } => {
            let protocollo =
                operator::requeue(&store, &named(operatore), &id_or_protocollo, now_ms()).await.map_err(app_failure)?;
            outln!("{protocollo}: rimessa in coda");
            Ok(())
        }
        OperatorCommand::Claim { id_or_protocollo, operatore } => {
            let held = operator::claim(&store, &named(operatore.clone()), &id_or_protocollo, now_ms())
                .await
                .map_err(app_failure)?;
            outln!("{}: in carico a {operatore}", held.protocollo);
            Ok(())
        }
        OperatorCommand::Release { id_or_protocollo, operatore } => {
            let held =
                operator::release(&store, &named(operatore), &id_or_protocollo, now_ms()).await.map_err(app_failure)?;
            outln!("{}: rilasciata", held.protocollo);
            Ok(())
        }
    }
}

async fn fascicolo(config: &Config, soggetto: &str, json: bool, pdf: Option<&Path>) -> Outcome {
    let store = existing_store(config).await?;
    let entries = app::fascicolo(&store, &Actor::Cli, soggetto).await.map_err(app_failure)?;
    if let Some(dir) = pdf {
        if entries.is_empty() && !json {
            outln!(
                "Fascicolo di {}: nessuna richiesta chiusa, nessun documento scritto",
                soggetto.trim().to_uppercase()
            );
            return Ok(());
        }
        return fascicolo_pdf(&store, &entries, dir, json).await;
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&entries).map_err(runtime)?);
        return Ok(());
    }
    if entries.is_empty() {
        outln!("Fascicolo di {}: nessuna richiesta chiusa", soggetto.trim().to_uppercase());
        return Ok(());
    }
    outln!("Fascicolo di {}", soggetto.trim().to_uppercase());
    for e in entries {
        outln!(
            "  {}  {:<36} inviata {}  esito {} il {}",
            e.protocollo,
            e.task,
            e.data_invio,
            e.esito.as_deref().unwrap_or("-"),
            e.data_esito.as_deref().unwrap_or("-")
        );
        for m in &e.motivazioni {
            outln!("      {}: {}", m["codice"].as_str().unwrap_or("?"), m["messaggio"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// `fascicolo --pdf DIR`: one esito PDF per closed request, named by its protocol number (never by text a
/// client gave), written to a temporary name and renamed; prints `SHA256  PATH` lines as `sha256sum` does.
async fn fascicolo_pdf(
    store: &crate::store::Store,
    entries: &[crate::store::FascicoloEntry],
    dir: &Path,
    json: bool,
) -> Outcome {
    std::fs::create_dir_all(dir).map_err(|e| {
        input(anyhow::anyhow!(
            "cannot create the directory {}: {e}; name a directory you may write (--pdf DIR)",
            dir.display()
        ))
    })?;
    let mut written = Vec::with_capacity(entries.len());
    for entry in entries {
        let doc = app::esito(store, &Actor::Cli, &entry.protocollo).await.map_err(app_failure)?;
        let path = dir.join(format!("{}.pdf", file_stem(&doc.protocollo)));
        let tmp = dir.join(format!(".{}.{}.tmp", file_stem(&doc.protocollo), std::process::id()));
        std::fs::write(&tmp, &doc.pdf).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| {
            runtime(anyhow::anyhow!(
                "cannot write {}: {e}; check the directory's permissions and free space",
                path.display()
            ))
        })?;
        written.push((doc, path));
    }
    if json {
        let list: Vec<_> = written
            .iter()
            .map(|(d, p)| serde_json::json!({ "protocollo": d.protocollo, "file": p, "sha256": d.sha256 }))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list).map_err(runtime)?);
        return Ok(());
    }
    for (doc, path) in &written {
        outln!("{}  {}", doc.sha256, path.display());
    }
    Ok(())
}

/// A file name from a protocol number: ASCII letters, digits, `-` and `_` kept, anything else (`/`, `.`) `_`.
fn file_stem(protocollo: &str) -> String {
    protocollo.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// `pilot add|remove|list`. Codici fiscali are checked for form (a pilot member is a person or a firm).
async fn pilot(config: &Config, command: PilotCommand) -> Outcome {
    let check_group = |group: &str| {
        if crate::rules::is_group_name(group) {
            Ok(())
        } else {
            Err(input(anyhow::anyhow!("`{group}` is not a group name: 1-64 of lower-case letters, digits, `-`, `_`")))
        }
    };
    let codici = |cfs: Vec<String>| -> Result<Vec<String>, Failure> {
        if cfs.is_empty() {
            return Err(input(anyhow::anyhow!("name at least one codice fiscale")));
        }
        cfs.into_iter()
            .enumerate()
            .map(|(i, cf)| {
                let cf = cf.trim().to_uppercase();
                if crate::domain::validators::cf_or_partita_iva(&cf) {
                    Ok(cf)
                } else {
                    Err(input(anyhow::anyhow!(
                        "codice fiscale {} of the list is not formally valid (16 characters, or 11 digits)",
                        i + 1
                    )))
                }
            })
            .collect()
    };
    let store = existing_store(config).await?;
    match command {
        PilotCommand::Add { group, cf } => {
            check_group(&group)?;
            let added = store.pilot_add(&group, &codici(cf)?, now_ms()).await.map_err(store_failure)?;
            outln!("{added} added to pilot group {group}");
        }
        PilotCommand::Remove { group, cf } => {
            check_group(&group)?;
            let removed = store.pilot_remove(&group, &codici(cf)?).await.map_err(store_failure)?;
            outln!("{removed} removed from pilot group {group}");
        }
        PilotCommand::List { group } => {
            check_group(&group)?;
            for cf in store.pilot_members(&group).await.map_err(store_failure)? {
                outln!("{cf}");
            }
        }
    }
    Ok(())
}

/// `menu`: the tasks a requester may submit.
async fn menu(config: &Config, richiedente: String, profilo: String, json: bool) -> Outcome {
    let store = existing_store(config).await?;
    let evaluator = daemon::evaluator(config);
    let rules = activation::intake_rules(config, &evaluator, &store).await.map_err(input)?;
    let actor = Actor::Richiedente { cf: richiedente.trim().to_uppercase(), profilo: profilo.trim().to_uppercase() };
    let items = app::menu(&store, &rules, &actor).await.map_err(app_failure)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&items).map_err(runtime)?);
        return Ok(());
    }
    for item in items {
        let pilot = if item.sperimentale { "  (sperimentale)" } else { "" };
        outln!("{:<36} {}{pilot}", item.task, item.label);
    }
    Ok(())
}

/// Reads a submission (`-`: standard input) up to `intake.limits.max_document_bytes`.
fn read_input(config: &Config, file: &str) -> Result<String, Failure> {
    let limit = config.intake.limits.max_document_bytes;
    const LIMIT: &str = "intake.limits.max_document_bytes";
    if file == "-" {
        intake::read_document(std::io::stdin().lock(), limit, LIMIT, "<stdin>").map_err(input)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot read {file}")).map_err(input)?;
        intake::read_document(f, limit, LIMIT, file).map_err(input)
    }
}

/// Reads the files to attach, each up to one byte past `intake.allegati.max_file_bytes` (the inspection refuses
/// it by name); more files than `max_files` are not read. The name is the file's own, without its directory.
fn read_attachments(config: &Config, paths: &[String]) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    use std::io::Read;
    let limits = &config.intake.allegati;
    let mut files = Vec::new();
    for path in paths.iter().take(limits.max_files.saturating_add(1)) {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot read the attachment {path}")).map_err(input)?;
        let mut bytes = Vec::new();
        f.take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the attachment {path}"))
            .map_err(input)?;
        let name = std::path::Path::new(path).file_name().map_or(path.clone(), |n| n.to_string_lossy().into_owned());
        files.push((name, bytes));
    }
    Ok(files)
}

async fn submit(config: &Config, file: &str, attachments: &[String], json: bool) -> Outcome {
    let text = read_input(config, file)?;
    let files = read_attachments(config, attachments)?;
    let uploads: Vec<Upload<'_>> = files.iter().map(|(name, bytes)| Upload { name, bytes }).collect();
    let name = if file == "-" { "<stdin>" } else { file };
    let store = daemon::open_store(config).await.map_err(runtime)?;
    let evaluator = daemon::evaluator(config);
    let rules = activation::intake_rules(config, &evaluator, &store).await.map_err(input)?;
    let submission = app::Submission { text: &text, source_name: name, files: &uploads };
    let stored =
        app::submit(&store, &rules, &config.intake, &Actor::Cli, &submission, now_ms()).await.map_err(|e| match e {
            AppError::Invalid(_) | AppError::AttachmentRefused(_) => input(anyhow::anyhow!("{e}\nnothing was queued")),
            other => app_failure(other),
        })?;
    if json {
        let submitted: Vec<&Submitted> = stored.iter().map(|(s, _)| s).collect();
        outln!("{}", serde_json::to_string_pretty(&submitted).map_err(runtime)?);
    } else {
        for (s, r) in &stored {
            let note = if s.duplicate { "  (già presentata: stessa chiave_idempotenza)" } else { "" };
            outln!("{}  id {}  {}  aperta{note}", s.protocollo, s.id, r.envelope.task);
        }
    }
    Ok(())
}

async fn purge(config: &Config, older_than_days: u32) -> Outcome {
    let store = existing_store(config).await?;
    let cutoff = now_ms() - i64::from(older_than_days) * 86_400_000;
    let purged = store.purge_closed(cutoff).await.map_err(|e| app_failure(e.into()))?;
    outln!("{purged} closed request(s) purged (closed more than {older_than_days} day(s) ago)");
    let today = crate::domain::time::iso_date(now_ms());
    let invitations = store.questionnaire_purge(&today).await.map_err(|e| app_failure(e.into()))?;
    outln!("{invitations} expired questionnaire invitation(s) purged");
    Ok(())
}

async fn save_attachment(config: &Config, key: &str, n: i64, out: &str) -> Outcome {
    let store = existing_store(config).await?;
    let file = app::attachment(&store, &Actor::Cli, key, n).await.map_err(app_failure)?;
    if out == "-" {
        use std::io::Write;
        return std::io::stdout()
            .lock()
            .write_all(&file.content)
            .context("cannot write to standard output")
            .map_err(runtime);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {out} (an existing file is not overwritten)"))
        .map_err(input)?;
    std::io::Write::write_all(&mut f, &file.content).with_context(|| format!("cannot write {out}")).map_err(runtime)?;
    outln!("{out}: {} ({}, {} byte, sha256 {})", file.nome, file.tipo, file.content.len(), file.sha256);
    Ok(())
}

async fn show(config: &Config, key: &str, json: bool) -> Outcome {
    let store = existing_store(config).await?;
    let view = app::read(&store, &Actor::Cli, key).await.map_err(app_failure)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&view).map_err(runtime)?);
    } else {
        out!("{}", render_view(&view));
    }
    Ok(())
}

/// The readable form of `show`.
pub fn render_view(v: &RequestView) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Richiesta {} (id {})", v.protocollo, v.id);
    let _ = writeln!(s, "  task:       {}", v.task);
    let stato = match (&v.esito, &v.sospesa) {
        (Some(e), _) => format!("{} — esito: {e}", v.stato),
        (None, Some(p)) if p == "rinvio" => {
            format!("{} — rinviata all'operatore della sede {}", v.stato, v.assegnata_sede.as_deref().unwrap_or("?"))
        }
        (None, Some(_)) => format!("{} — sospesa per errore della regola", v.stato),
        (None, None) => v.stato.clone(),
    };
    let _ = writeln!(s, "  stato:      {stato}");
    let _ = writeln!(s, "  sede:       {}", v.sede);
    // What was asked: the envelope's and the task's fields (contacts for notifications excepted).
    if let Some(fields) = v.richiesta.as_object() {
        for (name, value) in
            fields.iter().filter(|(n, _)| !matches!(n.as_str(), "task" | "contatti_notifica" | ATTACHMENTS_FIELD))
        {
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
            let _ = writeln!(s, "  {:<11} {text}", format!("{name}:"));
        }
    }
    if !v.allegati.is_empty() {
        let _ = writeln!(s, "  allegati:   (smart-taskd allegato {} N --out FILE)", v.id);
        for a in &v.allegati {
            let with = if a.messaggio { "  (con un messaggio)" } else { "" };
            let _ = writeln!(
                s,
                "    {}. {}  {}, {} byte, sha256 {}{with}",
                a.posizione, a.nome, a.tipo, a.dimensione, a.sha256
            );
        }
    }
    let _ = writeln!(s, "  creata il:  {}", v.creata_il);
    if let Some(c) = &v.chiusa_il {
        let _ = writeln!(s, "  chiusa il:  {c}");
    }
    if let Some(r) = &v.versione_regola {
        let _ = writeln!(s, "  regola:     {r}");
    }
    if let Some(e) = &v.errore {
        let _ = writeln!(s, "  errore:     {e}");
    }
    if !v.motivazioni.is_empty() {
        let _ = writeln!(s, "  motivazioni:");
        for m in &v.motivazioni {
            let _ =
                writeln!(s, "    - {}: {}", m["codice"].as_str().unwrap_or("?"), m["messaggio"].as_str().unwrap_or(""));
        }
    }
    if !v.effetti.is_empty() {
        let _ = writeln!(s, "  effetti:");
        for e in &v.effetti {
            let _ = writeln!(s, "    - {e}");
        }
    }
    let _ = writeln!(s, "  storico:");
    for e in &v.eventi {
        let _ = writeln!(s, "    {}  {:<22} {}", e.istante, e.tipo, e.attore);
        // Comments and operators' notes, in full.
        for key in ["testo", "nota"] {
            if let Some(text) = e.dettaglio.get(key).and_then(serde_json::Value::as_str) {
                let _ = writeln!(s, "        {key}: {text}");
            }
        }
    }
    s
}

async fn import_facts(config: &Config, path: &Path, overwrite_effects: bool) -> Outcome {
    let limits = &config.intake.limits;
    let name = path.display().to_string();
    let reader = std::fs::File::open(path).with_context(|| format!("cannot read {name}")).map_err(input)?;
    let text = crate::intake::read_document(reader, limits.max_facts_bytes, "intake.limits.max_facts_bytes", &name)
        .map_err(|e| input(anyhow::Error::from(e)))?;
    let file = crate::facts_file::parse(&text, &name, limits.max_field_chars)
        .map_err(|e| input(anyhow::anyhow!("{e}; nothing was imported")))?;
    let store = daemon::open_store(config).await.map_err(runtime)?;
    let report = store.import_facts(&file, overwrite_effects).await.map_err(|e| match e {
        crate::store::StoreError::Reference { .. } => input(anyhow::anyhow!("{name}: {e}; nothing was imported")),
        other => runtime(other),
    })?;
    outln!(
        "imported {name}: {} sedi, {} aziende, {} persone, {} intermediari, {} deleghe, {} contatti",
        report.sedi,
        report.aziende,
        report.persone,
        report.intermediari,
        report.deleghe,
        report.contatti
    );
    let since = file
        .snapshot
        .map_or("ever (the file has no `snapshot`)".to_string(), |s| format!("after the snapshot {}", s.to_rfc3339()));
    for (rows, what) in [
        (&report.kept, "kept as accepted requests left them: the file would undo their effects"),
        (
            &report.overwritten,
            "overwritten with the file's rows (--overwrite-effects): effects of accepted requests undone",
        ),
    ] {
        if rows.is_empty() {
            continue;
        }
        outln!("{} row(s) changed by accepted requests {since} {what}:", rows.len());
        for r in rows {
            outln!(
                "  {}: changed by {} on {}; the file differs in {}",
                r.record,
                r.protocollo.as_deref().unwrap_or("an accepted request"),
                r.modificata_il,
                r.campi.join(", ")
            );
        }
    }
    if !report.kept.is_empty() {
        outln!("to take the file's rows anyway: smart-taskd facts import --overwrite-effects {name}");
    }
    Ok(())
}

/// `rules test`: runs the cases (synchronously: a few rule evaluations, nothing else to schedule).
fn rules_check(config: &Config, dir: Option<PathBuf>, json: bool) -> Outcome {
    let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
    let findings = crate::rules::check_rules(&dir, &daemon::evaluator(config))
        .with_context(|| format!("cannot read the rules in {}", dir.display()))
        .map_err(input)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&findings).map_err(runtime)?);
    } else {
        for f in &findings {
            outln!("{}", f.render());
        }
    }
    // Notices (what the scanner could not verify) are printed and counted, and pass.
    let errors = findings.iter().filter(|f| f.is_error()).count();
    if !json {
        outln!(
            "{}: {} finding(s): {errors} error(s), {} notice(s)",
            dir.display(),
            findings.len(),
            findings.len() - errors
        );
    }
    if errors == 0 { Ok(()) } else { Err(input(anyhow::anyhow!("rules check: {errors} error(s)"))) }
}

fn rules_test(config: &Config, dir: Option<PathBuf>, task: Option<String>, json: bool) -> Outcome {
    let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
    let options =
        crate::ruletools::CaseOptions { task, sede_predefinita: config.intake.sede_predefinita.clone(), now: now_ms() };
    let report = crate::ruletools::run_cases(&dir, &daemon::evaluator(config), &options)
        .with_context(|| format!("cannot test the rules in {}", dir.display()))
        .map_err(input)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report).map_err(runtime)?);
    } else {
        out!("{}", report.render());
    }
    if report.all_passed() {
        Ok(())
    } else {
        Err(input(anyhow::anyhow!("rules test: {} failed", report.summary.failed)))
    }
}

fn check_config(config: &Config) -> Outcome {
    outln!("config:  {} — ok", config.source.display());
    outln!("database: {}", crate::notify::privacy::mask_password(&config.database.url));
    match &config.api.auth {
        Some(auth) => {
            crate::http::auth::Verifier::load(auth).map_err(input)?;
            outln!("api:     /rest/smart-task/v1 — tokens of {} for {}", auth.issuer, auth.audience);
        }
        None => outln!("api:     not served (no api.auth)"),
    }
    let w = &config.webhooks;
    match w.enabled {
        true => outln!(
            "webhooks: delivered every {} ms, timeout {} ms, {} attempts, backoff {} ms to {} ms{}",
            w.poll_interval_ms,
            w.timeout_ms,
            w.max_attempts,
            w.retry_base_ms,
            w.retry_max_ms,
            if w.allow_http_loopback { "; http allowed for loopback hosts" } else { "" }
        ),
        false => outln!("webhooks: not delivered by this instance (webhooks.enabled: false)"),
    }
    let evaluator = daemon::evaluator(config);
    // Vetted as a reload or a start would: a directory that passes here is one the daemon activates.
    match activation::vet_rules(config, &evaluator) {
        Ok(rules) => {
            outln!("rules:   {} — {} task(s)", config.rules.dir.display(), rules.tasks.len());
            for r in rules.tasks.values() {
                outln!("  {:<36} {}  {} reason code(s)  — {}", r.id, r.version, r.reasons.len(), r.label);
            }
            check_notify(config)
        }
        Err(e) => {
            outln!("rules:   FAILED");
            Err(input(e))
        }
    }
}

/// `check-config`: the notification channels, templates (each rendered with sample data) and providers.
fn check_notify(config: &Config) -> Outcome {
    match crate::notify::check(&config.notify) {
        Ok((lines, warnings)) => {
            for l in lines {
                outln!("{l}");
            }
            for w in warnings {
                outln!("  warning: {w}");
            }
            Ok(())
        }
        Err(e) => {
            outln!("notify:  FAILED");
            Err(input(anyhow::anyhow!("notify: {e}")))
        }
    }
}

/// `notifications list` and `notifications retry`.
async fn notifications(config: &Config, command: NotificationsCommand) -> Outcome {
    use crate::notify::privacy::mask;
    let store = existing_store(config).await?;
    match command {
        NotificationsCommand::List { dead, limit, json } => {
            let mut rows = store.list_notifications(dead, limit).await.map_err(runtime)?;
            for r in &mut rows {
                r.destinatario = mask(&r.destinatario);
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows).map_err(runtime)?);
            } else if rows.is_empty() {
                outln!("{}", if dead { "no notification failed or ran out of attempts" } else { "no notification" });
            } else {
                for r in rows {
                    let when = r.inviata_il.as_deref().or(r.prossimo_tentativo.as_deref()).unwrap_or(&r.creata_il);
                    outln!(
                        "{:>6}  {:<18} {:<18} {:<5} {:<24} {:<7} {} tentativi  {when}",
                        r.id,
                        r.protocollo,
                        r.evento,
                        r.canale,
                        r.destinatario,
                        r.stato,
                        r.tentativi
                    );
                    if let Some(e) = r.errore.as_deref().filter(|_| r.stato != "sent") {
                        outln!("        errore: {e}");
                    }
                }
            }
            Ok(())
        }
        NotificationsCommand::Retry { id, all_dead } => {
            let target = match (id, all_dead) {
                (Some(id), false) => crate::store::RetryTarget::One(id),
                _ => crate::store::RetryTarget::AllUndeliverable,
            };
            let ids = store.retry_notifications(target, now_ms()).await.map_err(store_failure)?;
            match ids.as_slice() {
                [] => outln!("no notification to retry"),
                [one] => outln!("notification {one}: queued again"),
                many => outln!("{} notifications queued again", many.len()),
            }
            Ok(())
        }
    }
}

/// `smart-taskd openapi [--output FILE]`.
fn openapi(output: Option<&Path>) -> Outcome {
    let document = crate::http::openapi::document();
    match output {
        None => {
            out!("{document}");
            Ok(())
        }
        Some(path) => {
            std::fs::write(path, document).with_context(|| format!("cannot write {}", path.display())).map_err(runtime)
        }
    }
}
