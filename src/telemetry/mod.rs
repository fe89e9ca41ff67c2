//! Logging and metrics. Logs go to journald natively when the daemon was started by systemd (detected by
//! `JOURNAL_STREAM`), otherwise as text or JSON on stderr. Log fields never carry personal data: requests
//! are named by protocol number, task and sede only. Metrics are in [`metrics`].

pub mod metrics;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// The handle that changes the log filter of a running daemon (SIGHUP).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// True when stderr is the journal stream systemd set up for this service (`JOURNAL_STREAM=dev:ino`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Why the log level could not be set.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("`{level}`: {error}")]
    Invalid { level: String, error: tracing_subscriber::filter::ParseError },
    #[error("logging is not initialised")]
    NotInitialised,
    #[error("{0}")]
    Reload(reload::Error),
}

/// The filter of a configured level. PostgreSQL's notices (e.g. "relation already exists, skipping" at each
/// migration check) are the server talking to a developer, not events of the daemon: warnings and up only.
fn level_filter(level: &str) -> Result<EnvFilter, LevelError> {
    EnvFilter::try_new(format!("{level},sqlx::postgres::notice=warn"))
        .map_err(|error| LevelError::Invalid { level: level.into(), error })
}

/// Installs the global subscriber; later calls are ignored (tests may call it repeatedly).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| level_filter(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match tracing_journald::layer() {
        Ok(journald) if stderr_is_journal() => {
            registry.with(journald.with_syslog_identifier("smart-taskd".into())).try_init()
        }
        _ => {
            let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
            match config.format {
                LogFormat::Text => {
                    registry.with(layer.with_ansi(std::io::stderr().is_terminal()).with_target(false)).try_init()
                }
                LogFormat::Json => registry.with(layer.json()).try_init(),
            }
        }
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Changes the log filter of the running process (`log.level` on SIGHUP). Returns false when `RUST_LOG` is
/// set: the environment wins, as at start.
pub fn set_level(level: &str) -> Result<bool, LevelError> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(false);
    }
    let filter = level_filter(level)?;
    FILTER.get().ok_or(LevelError::NotInitialised)?.reload(filter).map_err(LevelError::Reload)?;
    Ok(true)
}
