//! The daemon's configuration: `config/smart-task.yaml`, typed, unknown keys refused.
//!
//! Relative paths in the file are resolved against the file's own directory, so the daemon behaves the same
//! whatever its working directory. `SMART_TASK_DATABASE_URL` overrides `database.url` (taken as written).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::documents::AttachmentLimits;

mod agenda;
mod api;
mod console;
mod notify;
mod questionnaire;
mod rules;
mod schedule;

pub use agenda::*;
pub use api::*;
pub use console::*;
pub use notify::*;
pub use questionnaire::*;
pub use rules::*;
pub use schedule::*;

use api::{check_api_limits, check_webhooks};
use console::check_console;
use notify::check_notify;
use questionnaire::check_questionnaire;

/// Where the configuration is looked for when `--config` is not given, in order.
pub const DEFAULT_PATHS: &[&str] = &["config/smart-task.yaml", "/etc/smart-task/config.yaml"];

/// Environment variable that overrides `database.url`.
pub const DATABASE_URL_ENV: &str = "SMART_TASK_DATABASE_URL";

/// Environment variable that overrides `notify.email.url` (staging, tests).
pub const SMTP_URL_ENV: &str = "SMART_TASK_SMTP_URL";

/// `notify.email.url: maildir:PATH`: e-mails written into a Maildir instead of sent.
pub const MAILDIR_SCHEME: &str = "maildir:";

/// Environment variable that overrides the SMS gateway's URL (`notify.sms.url`, else the provider's).
pub const SMS_URL_ENV: &str = "SMART_TASK_SMS_URL";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration file found (looked for {}); pass --config FILE", DEFAULT_PATHS.join(", "))]
    NotFound,
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{field}`: {problem}")]
    Invalid { path: PathBuf, field: &'static str, problem: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    pub intake: IntakeConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Notifications (the outbox dispatcher); absent: nothing is sent and notifications wait in the outbox.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// The operations endpoint (/metrics, /healthz, /readyz).
    #[serde(default)]
    pub api: ApiConfig,
    /// Cron-scheduled maintenance jobs.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Webhooks: the event feed pushed to integrators' subscriptions.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// The operators' web console; absent: not served.
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    /// Each sede's Agenda Appuntamenti, by codice (the slots requesters may search); absent: none.
    #[serde(default)]
    pub agenda: AgendaConfig,
    /// The satisfaction questionnaire of professional requesters; absent: not offered.
    #[serde(default)]
    pub questionario: Option<QuestionnaireConfig>,
    /// Stable identity of this instance in logs, metrics and `rules status` (default: the host name). Give each
    /// instance sharing one PostgreSQL database its own.
    #[serde(default)]
    pub instance: Option<String>,
    /// The civil time zone of dates and printed times (`ctx.today`, protocol years, the CLI, notifications): an
    /// IANA name. Default: Europe/Rome.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The file this configuration came from.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` (a relative PATH is taken from the config file's directory).
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_time_zone() -> String {
    crate::domain::time::DEFAULT_ZONE.name().into()
}

fn default_max_connections() -> u32 {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Concurrent claim → decide → close loops.
    pub workers: usize,
    /// Requests claimed (and closed) per batch.
    pub batch_size: u32,
    /// How long a claim holds a request before another worker may take it over.
    pub lease_seconds: u64,
    /// How often an idle worker looks for work (new submissions also wake it at once, in-process).
    pub poll_interval_ms: u64,
    /// Rule failures (error, timeout, budget) before a request is parked for an operator.
    pub max_failures: i64,
    pub retry_base_ms: i64,
    pub retry_max_ms: i64,
    /// On SIGTERM, how long in-flight batches may take before their leases are released.
    pub shutdown_grace_seconds: u64,
    /// Render the esito PDF of each closed request soon after its close and record its SHA-256 in the history
    /// (the `esiti` loop). Off only to measure deciding alone (`bench` turns it off and says so).
    pub esito_documents: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            workers: 2,
            batch_size: 256,
            lease_seconds: 60,
            poll_interval_ms: 500,
            max_failures: 3,
            retry_base_ms: 2_000,
            retry_max_ms: 300_000,
            shutdown_grace_seconds: 30,
            esito_documents: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Sede that takes requests whose matricola is unknown or absent (4 digits).
    pub sede_predefinita: String,
    #[serde(default)]
    pub limits: IntakeLimits,
    /// Bounds on the files sent with a request or a message (count, sizes, what a ZIP may hold).
    #[serde(default)]
    pub allegati: AttachmentLimits,
}

/// Bounds on what `submit` and `facts import` read: anything larger is refused, naming the limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeLimits {
    /// Bytes of one submission (file or standard input); reading stops past it.
    pub max_document_bytes: u64,
    /// Requests in one submission.
    pub max_requests: usize,
    /// Characters of any string field of a request (and of any string in a facts file), `note` excepted.
    pub max_field_chars: usize,
    /// Characters of a request's free-text `note`.
    pub max_note_chars: usize,
    /// Bytes of one reference-data file (`facts import`): a whole archive extract.
    pub max_facts_bytes: u64,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        IntakeLimits {
            max_document_bytes: 8 * 1024 * 1024,
            max_requests: 10_000,
            max_field_chars: 1_000,
            max_note_chars: 4_000,
            max_facts_bytes: 512 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(from = "LogSection")]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
    /// The line of `level` in the file, for its error (0 when not given there).
    level_line: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into(), level_line: 0 }
    }
}

/// The `log` section as written, with where `level` is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    #[serde(default)]
    format: LogFormat,
    level: Option<serde_saphyr::Spanned<String>>,
}

impl From<LogSection> for LogConfig {
    fn from(s: LogSection) -> Self {
        match s.level {
            Some(l) => LogConfig { format: s.format, level: l.value, level_line: l.referenced.line() },
            None => LogConfig { format: s.format, ..LogConfig::default() },
        }
    }
}

/// The levels a bare word of `log.level` may name.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks `log.level`: an `EnvFilter` directive list whose bare words are levels. `EnvFilter` takes a bare
/// word as a target name (`verbose` would enable only the target `verbose`, so the daemon logs nothing).
fn check_log_level(level: &str) -> Result<(), String> {
    let expected = format!(
        "expected a level ({}) or TARGET=LEVEL directives, e.g. info or smart_task=debug,warn",
        LOG_LEVELS.join(", ")
    );
    for directive in level.split(',').map(str::trim) {
        let bare = !directive.contains(['=', '[', '{', ':']);
        if directive.is_empty() || (bare && !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive))) {
            return Err(format!("`{level}`: `{directive}` is not a level; {expected}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level).map(drop).map_err(|e| format!("`{level}`: {e}; {expected}"))
}

impl Config {
    /// Finds, reads and checks the configuration, then applies the environment overrides.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or(ConfigError::NotFound)?,
        };
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read { path: path.clone(), error })?;
        let mut config = Config::parse(&text, &path)?;
        config.database.url = match std::env::var(DATABASE_URL_ENV) {
            Ok(url) => resolve_sqlite_url(&url, Path::new(".")),
            Err(_) => resolve_sqlite_url(&config.database.url, base_dir(&path)),
        };
        if let (Ok(url), Some(email)) = (std::env::var(SMTP_URL_ENV), config.notify.email.as_mut()) {
            email.url = url;
        }
        if let (Ok(url), Some(sms)) = (std::env::var(SMS_URL_ENV), config.notify.sms.as_mut()) {
            sms.url = Some(url);
        }
        Ok(config)
    }

    /// The civil time zone (`time_zone`, checked when the file was parsed).
    pub fn zone(&self) -> crate::domain::time::Zone {
        self.time_zone.parse().unwrap_or(crate::domain::time::DEFAULT_ZONE)
    }

    /// Parses and checks a configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        config.source = path.to_path_buf();
        let invalid =
            |field, problem: &str| ConfigError::Invalid { path: path.to_path_buf(), field, problem: problem.into() };
        if !crate::domain::validators::codice_sede(&config.intake.sede_predefinita) {
            return Err(invalid("intake.sede_predefinita", "expected the 4-digit codice of a sede, e.g. \"7000\""));
        }
        if config.time_zone.parse::<crate::domain::time::Zone>().is_err() {
            return Err(invalid("time_zone", "expected an IANA time zone name, e.g. \"Europe/Rome\""));
        }
        let l = &config.intake.limits;
        if l.max_document_bytes == 0
            || l.max_requests == 0
            || l.max_field_chars == 0
            || l.max_note_chars == 0
            || l.max_facts_bytes == 0
        {
            return Err(invalid("intake.limits", "every limit must be at least 1"));
        }
        if config.worker.workers == 0 || config.worker.batch_size == 0 {
            return Err(invalid("worker", "`workers` and `batch_size` must be at least 1"));
        }
        if config.worker.max_failures < 1 {
            return Err(invalid("worker.max_failures", "must be at least 1"));
        }
        if config.rules.max_operations == 0 || config.rules.deadline_ms == 0 {
            return Err(invalid(
                "rules",
                "`max_operations` and `deadline_ms` must be at least 1 (0 would mean no limit)",
            ));
        }
        check_worker(&config.worker, &config.rules, path)?;
        check_api_limits(&config.api, path)?;
        check_webhooks(&config.webhooks, path)?;
        if let Err(problem) = check_log_level(&config.log.level) {
            let at = match config.log.level_line {
                0 => String::new(),
                line => format!("line {line}: "),
            };
            return Err(invalid("log.level", &format!("{at}{problem}")));
        }
        if let Err(problem) = config.schedule.jobs() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "schedule",
                problem: problem.to_string(),
            });
        }
        if config.schedule.daily_summary.enabled && (config.notify.email.is_none() || !config.notify.enabled) {
            return Err(invalid(
                "schedule.daily_summary",
                "the daily summary is sent by e-mail: configure and enable `notify.email`, or set `enabled: false`",
            ));
        }
        if config.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if config.rules.dir.is_relative() {
            config.rules.dir = base_dir(path).join(&config.rules.dir);
        }
        if let Some(auth) = config.api.auth.as_mut()
            && auth.jwks_file.is_relative()
        {
            auth.jwks_file = base_dir(path).join(&auth.jwks_file);
        }
        check_notify(&mut config.notify, path)?;
        if let Some(q) = &config.questionario {
            check_questionnaire(q, path)?;
        }
        check_agenda(&config.agenda, path)?;
        let has_api_auth = config.api.auth.is_some();
        if let Some(console) = config.console.as_mut() {
            check_console(console, has_api_auth, path, base_dir(path))?;
        }
        Ok(config)
    }

    /// This instance's stable identity in logs, metrics and `rules status`: `instance`, else the host name.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            match host.trim() {
                "" => "smart-taskd".to_string(),
                host => host.to_string(),
            }
        })
    }

    /// The prefix of this process's lease owners (and of the actors in the history): the instance and the
    /// process id, so that two processes under one instance name (a restart racing the old one, a copy
    /// started by mistake) never give back each other's leases.
    pub fn lease_owner(&self) -> String {
        format!("{}:{}", self.instance_name(), std::process::id())
    }
}

/// Checks the timing of the `worker` section against itself and the rules' deadline. A batch in flight renews
/// its leases every third of `lease_seconds`, so a batch may take longer than its lease (`batch_size` ×
/// `rules.deadline_ms` is no bound on the lease); what must hold is what renewal and draining rely on.
fn check_worker(w: &WorkerConfig, rules: &RulesConfig, path: &Path) -> Result<(), ConfigError> {
    let invalid = |field, problem: String| ConfigError::Invalid { path: path.to_path_buf(), field, problem };
    if w.lease_seconds == 0 {
        return Err(invalid(
            "worker.lease_seconds",
            "must be at least 1: a batch in flight renews its leases every third of `lease_seconds`, and a lease \
             of 0 expires as it is taken (every batch would be taken over while it is decided)"
                .into(),
        ));
    }
    if w.poll_interval_ms == 0 {
        return Err(invalid("worker.poll_interval_ms", "must be at least 1 (0 would poll without pause)".into()));
    }
    if w.retry_base_ms < 1 || w.retry_max_ms < w.retry_base_ms {
        return Err(invalid(
            "worker",
            format!(
                "`retry_base_ms` ({}) must be at least 1 and `retry_max_ms` ({}) at least `retry_base_ms`",
                w.retry_base_ms, w.retry_max_ms
            ),
        ));
    }
    // On SIGTERM a worker finishes the rule call in progress (it cannot be interrupted before its deadline),
    // closes what its batch decided and releases the rest: one deadline and a close must fit in the grace.
    let needed_ms = rules.deadline_ms.saturating_add(1_000);
    if w.shutdown_grace_seconds.saturating_mul(1000) < needed_ms {
        return Err(invalid(
            "worker.shutdown_grace_seconds",
            format!(
                "{} s is too short for `rules.deadline_ms` of {} ms: on SIGTERM a batch finishes the rule call in \
                 progress and closes what it decided, which needs at least {} s; raise `shutdown_grace_seconds` \
                 or lower `rules.deadline_ms`",
                w.shutdown_grace_seconds,
                rules.deadline_ms,
                needed_ms.div_ceil(1000)
            ),
        ));
    }
    Ok(())
}

/// Checks the API's limits: a zero would refuse every call.
fn base_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Characters a path may hold that SQLite URLs (as sqlx reads them) would take for something else.
const SQLITE_PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The URL of the SQLite database file at `path` (absolute): built from the path, percent-encoded, never by
/// pasting text (`sqlite://relative/dir` would make `relative` a host name).
pub fn sqlite_url(path: &Path) -> String {
    let encoded = percent_encoding::percent_encode(path.as_os_str().as_encoded_bytes(), SQLITE_PATH_ESCAPES);
    format!("sqlite://{encoded}")
}

/// `path` made absolute from `base` (itself made absolute from the working directory), with `.` and `..`
/// resolved: `config/../var/st.db` becomes `/srv/app/var/st.db`.
fn absolute_from(base: &Path, path: &Path) -> PathBuf {
    let base = base.canonicalize().or_else(|_| std::path::absolute(base)).unwrap_or_else(|_| base.to_path_buf());
    let mut out = PathBuf::new();
    for part in base.join(path).components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Anchors a relative SQLite path to `base` (the config file's directory, or the working directory for the
/// environment override) and writes the URL again from the absolute path; other URLs pass unchanged.
fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return url.to_string();
    };
    let (file, query) = match rest.split_once('?') {
        Some((file, query)) => (file, Some(query)),
        None => (rest, None),
    };
    if file.is_empty() || file.starts_with(':') {
        return url.to_string(); // `sqlite::memory:` and friends name no file
    }
    let decoded = percent_encoding::percent_decode_str(file).decode_utf8_lossy();
    let mut resolved = sqlite_url(&absolute_from(base, Path::new(decoded.as_ref())));
    if let Some(query) = query {
        resolved.push('?');
        resolved.push_str(query);
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "database:\n  url: sqlite:data/st.db\nintake:\n  sede_predefinita: \"7000\"\n";

    #[test]
    fn relative_paths_follow_the_file() {
        let c = Config::parse(MINIMAL, Path::new("/etc/st/c.yaml")).expect("valid");
        assert_eq!(c.rules.dir, PathBuf::from("/etc/st/../rules"));
        assert_eq!(resolve_sqlite_url(&c.database.url, Path::new("/etc/st")), "sqlite:///etc/st/data/st.db");
    }

    #[test]
    fn sqlite_urls_are_built_from_absolute_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).expect("mkdir");
        let root = dir.path().canonicalize().expect("canonical");
        // The shipped form: a path relative to the config file's directory, through `..`.
        assert_eq!(
            resolve_sqlite_url("sqlite:../var/smart-task.db", &config_dir),
            format!("sqlite://{}/var/smart-task.db", root.display())
        );
        // `sqlite://relative` is a path too (not a host), and characters URLs reserve are escaped.
        assert_eq!(
            resolve_sqlite_url("sqlite://var/a b#1.db?mode=ro", &config_dir),
            format!("sqlite://{}/config/var/a%20b%231.db?mode=ro", root.display())
        );
        assert_eq!(resolve_sqlite_url("sqlite:///srv/st.db", &config_dir), "sqlite:///srv/st.db");
        assert_eq!(resolve_sqlite_url("sqlite::memory:", &config_dir), "sqlite::memory:");
        assert_eq!(resolve_sqlite_url("postgres://u@h/db", &config_dir), "postgres://u@h/db");
        let parsed: sqlx::sqlite::SqliteConnectOptions =
            resolve_sqlite_url("sqlite://var/a b#1.db", &config_dir).parse().expect("sqlx reads it");
        assert_eq!(parsed.get_filename(), root.join("config/var/a b#1.db"));
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = format!("{MINIMAL}worker:\n  batch_sise: 10\n");
        let err = Config::parse(&text, Path::new("c.yaml")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("c.yaml") && msg.contains("batch_sise") && msg.contains("line 6"), "{msg}");
    }

    #[test]
    fn unknown_log_level_is_refused_with_its_line() {
        let text = format!("{MINIMAL}log:\n  format: text\n  level: verbose\n");
        let msg = Config::parse(&text, Path::new("c.yaml")).expect_err("verbose is not a level").to_string();
        assert!(msg.contains("c.yaml") && msg.contains("log.level") && msg.contains("line 7"), "{msg}");
        assert!(
            msg.contains("`verbose` is not a level") && msg.contains("off, error, warn, info, debug, trace"),
            "{msg}"
        );
        for good in ["debug", "WARN", "smart_task=debug,warn", "smart_task::worker=trace", "info,sqlx=warn"] {
            let text = format!("{MINIMAL}log:\n  level: \"{good}\"\n");
            assert!(Config::parse(&text, Path::new("c.yaml")).is_ok(), "{good} is a valid filter");
        }
    }

    #[test]
    fn webhook_settings_have_defaults_and_name_the_bad_field() {
        let c = Config::parse(MINIMAL, Path::new("c.yaml")).expect("valid");
        assert!(c.webhooks.enabled && !c.webhooks.allow_http_loopback);
        assert_eq!(c.webhooks.max_attempts, 10);
        for (setting, field) in [
            ("poll_interval_ms: 0", "webhooks.poll_interval_ms"),
            ("timeout_ms: 0", "webhooks.timeout_ms"),
            ("max_attempts: 0", "webhooks.max_attempts"),
            ("retry_base_ms: 0", "webhooks.retry_base_ms"),
            ("retry_max_ms: 1", "webhooks.retry_max_ms"),
        ] {
            let text = format!("{MINIMAL}webhooks:\n  {setting}\n");
            let err = Config::parse(&text, Path::new("c.yaml")).expect_err(setting).to_string();
            assert!(err.contains(field), "{setting}: {err}");
        }
    }

    #[test]
    fn bad_sede_names_the_field() {
        let text = MINIMAL.replace("\"7000\"", "\"70\"");
        let err = Config::parse(&text, Path::new("c.yaml")).expect_err("bad sede");
        assert!(err.to_string().contains("intake.sede_predefinita"), "{err}");
    }
}
