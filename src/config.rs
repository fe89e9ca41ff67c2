//! The daemon's configuration: `config/smart-task.yaml`, typed, unknown keys refused.
//!
//! Relative paths in the file are resolved against the file's own directory, so the daemon behaves the same
//! whatever its working directory. `SMART_TASK_DATABASE_URL` overrides `database.url` (taken as written).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the configuration is looked for when `--config` is not given, in order.
pub const DEFAULT_PATHS: &[&str] = &["config/smart-task.yaml", "/etc/smart-task/config.yaml"];

/// Environment variable that overrides `database.url`.
pub const DATABASE_URL_ENV: &str = "SMART_TASK_DATABASE_URL";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration file found (looked for {}); pass --config FILE", DEFAULT_PATHS.join(", "))]
    NotFound,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
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
    /// Identity of this instance in leases, logs and events (default: host name and process id).
    #[serde(default)]
    pub instance: Option<String>,
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

fn default_max_connections() -> u32 {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The rules directory: one folder per task type, plus `lib/`.
    pub dir: PathBuf,
    /// Rhai operation budget per decision (a loop iteration or a call is a few operations).
    pub max_operations: u64,
    /// Wall-clock deadline per decision.
    pub deadline_ms: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig { dir: PathBuf::from("../rules"), max_operations: 100_000, deadline_ms: 250 }
    }
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
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Sede that takes requests whose matricola is unknown or absent (4 digits).
    pub sede_predefinita: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

impl Config {
    /// Finds, reads and checks the configuration, then applies the environment overrides.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or(ConfigError::NotFound)?,
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let mut config = Config::parse(&text, &path)?;
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            config.database.url = url;
        } else {
            config.database.url = resolve_sqlite_url(&config.database.url, base_dir(&path));
        }
        Ok(config)
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
        if config.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if config.rules.dir.is_relative() {
            config.rules.dir = base_dir(path).join(&config.rules.dir);
        }
        Ok(config)
    }

    /// This instance's identity in leases, logs and events.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

fn base_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Anchors a relative SQLite path to the config file's directory.
fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        Some(p) if !p.starts_with('/') && !p.starts_with(':') => format!("sqlite://{}", base.join(p).display()),
        _ => url.to_string(),
    }
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
    fn unknown_key_is_refused_with_its_line() {
        let text = format!("{MINIMAL}worker:\n  batch_sise: 10\n");
        let err = Config::parse(&text, Path::new("c.yaml")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("c.yaml") && msg.contains("batch_sise") && msg.contains("line 6"), "{msg}");
    }

    #[test]
    fn bad_sede_names_the_field() {
        let text = MINIMAL.replace("\"7000\"", "\"70\"");
        let err = Config::parse(&text, Path::new("c.yaml")).expect_err("bad sede");
        assert!(err.to_string().contains("intake.sede_predefinita"), "{err}");
    }
}
