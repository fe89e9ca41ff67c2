//! `agenda:` — each sede's Agenda Appuntamenti, by the sede's codice:
//!
//! ```yaml
//! agenda:
//!   "7000":
//!     giorni: [lunedi, martedi, mercoledi, giovedi, venerdi]
//!     orari: ["09:00-12:30", "14:30-16:00"]
//!     durata_minuti: 30
//!     posti: 2
//!     chiusure: [2026-06-29]
//!     preavviso_ore: 24
//!     orizzonte_giorni: 60
//! ```
//!
//! Read into `domain::agenda::Agenda` as the file is read, so a bad band or day is reported at its line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::Deserialize;

use super::ConfigError;
use crate::domain::agenda::Agenda;

/// Each sede's agenda, by codice.
pub type AgendaConfig = BTreeMap<String, SedeAgenda>;

/// A sede's agenda, checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "AgendaSpec")]
pub struct SedeAgenda(pub Agenda);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgendaSpec {
    giorni: Vec<String>,
    orari: Vec<String>,
    durata_minuti: u32,
    posti: u32,
    #[serde(default)]
    chiusure: Vec<String>,
    #[serde(default = "default_notice")]
    preavviso_ore: u32,
    #[serde(default = "default_horizon")]
    orizzonte_giorni: u32,
}

fn default_notice() -> u32 {
    24
}

fn default_horizon() -> u32 {
    60
}

/// Why an agenda is refused (serde reports it at the agenda's line).
#[derive(Debug, thiserror::Error)]
pub enum AgendaError {
    #[error("`giorni`: `{0}` is not a day (lunedi, martedi, mercoledi, giovedi, venerdi, sabato, domenica)")]
    Day(String),
    #[error("`giorni`: at least one day")]
    NoDay,
    #[error("`orari`: `{0}` is not a band HH:MM-HH:MM with its start before its end")]
    Band(String),
    #[error("`orari`: the bands {0} and {1} overlap")]
    Overlap(String, String),
    #[error("`orari`: at least one band")]
    NoBand,
    #[error("`durata_minuti`: from 5 to 480")]
    Length,
    #[error("`posti`: from 1 to 1000")]
    Places,
    #[error("`chiusure`: `{0}` is not a date YYYY-MM-DD")]
    Closure(String),
    #[error("`preavviso_ore`: at most 720 (30 days)")]
    Notice,
    #[error("`orizzonte_giorni`: from 1 to 366")]
    Horizon,
}

fn day(name: &str) -> Result<Weekday, AgendaError> {
    Ok(match name {
        "lunedi" | "lunedì" => Weekday::Mon,
        "martedi" | "martedì" => Weekday::Tue,
        "mercoledi" | "mercoledì" => Weekday::Wed,
        "giovedi" | "giovedì" => Weekday::Thu,
        "venerdi" | "venerdì" => Weekday::Fri,
        "sabato" => Weekday::Sat,
        "domenica" => Weekday::Sun,
        other => return Err(AgendaError::Day(other.to_string())),
    })
}

fn band(text: &str) -> Result<(NaiveTime, NaiveTime), AgendaError> {
    let parse = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").ok();
    match text.split_once('-').map(|(a, b)| (parse(a), parse(b))) {
        Some((Some(a), Some(b))) if a < b => Ok((a, b)),
        _ => Err(AgendaError::Band(text.to_string())),
    }
}

impl TryFrom<AgendaSpec> for SedeAgenda {
    type Error = AgendaError;

    fn try_from(spec: AgendaSpec) -> Result<SedeAgenda, AgendaError> {
        let mut giorni = Vec::new();
        for d in &spec.giorni {
            let d = day(d)?;
            if !giorni.contains(&d) {
                giorni.push(d);
            }
        }
        if giorni.is_empty() {
            return Err(AgendaError::NoDay);
        }
        let mut fasce = spec.orari.iter().map(|b| band(b)).collect::<Result<Vec<_>, _>>()?;
        fasce.sort();
        if fasce.is_empty() {
            return Err(AgendaError::NoBand);
        }
        for pair in fasce.windows(2) {
            if pair[1].0 < pair[0].1 {
                let show = |(a, b): (NaiveTime, NaiveTime)| format!("{}-{}", a.format("%H:%M"), b.format("%H:%M"));
                return Err(AgendaError::Overlap(show(pair[0]), show(pair[1])));
            }
        }
        if !(5..=480).contains(&spec.durata_minuti) {
            return Err(AgendaError::Length);
        }
        if !(1..=1000).contains(&spec.posti) {
            return Err(AgendaError::Places);
        }
        let chiusure = spec
            .chiusure
            .iter()
            .map(|c| NaiveDate::parse_from_str(c, "%Y-%m-%d").map_err(|_| AgendaError::Closure(c.clone())))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if spec.preavviso_ore > 720 {
            return Err(AgendaError::Notice);
        }
        if !(1..=366).contains(&spec.orizzonte_giorni) {
            return Err(AgendaError::Horizon);
        }
        Ok(SedeAgenda(Agenda {
            giorni,
            fasce,
            durata_minuti: spec.durata_minuti,
            posti: spec.posti,
            chiusure,
            preavviso_ore: spec.preavviso_ore,
            orizzonte_giorni: spec.orizzonte_giorni,
        }))
    }
}

/// Every key is the codice of a sede.
pub(super) fn check_agenda(agenda: &AgendaConfig, path: &Path) -> Result<(), ConfigError> {
    match agenda.keys().find(|k| !crate::domain::validators::codice_sede(k)) {
        Some(k) => Err(ConfigError::Invalid {
            path: path.into(),
            field: "agenda",
            problem: format!("`{k}` is not the 4-digit codice of a sede (quote it: \"7000\")"),
        }),
        None => Ok(()),
    }
}
