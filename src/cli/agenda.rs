//! `agenda SEDE [--dal DAY] [--al DAY]`: the bookable slots of a sede's Agenda Appuntamenti (`app::agenda`, the
//! same answer as `GET /agenda/{sede}/disponibilita`).

use super::{Outcome, app_failure, runtime};
use crate::app::agenda::availability;
use crate::clock::now_ms;
use crate::config::Config;
use crate::domain::time::iso_date;
use crate::output::outln;

/// Days searched when `--al` is not given: a week.
const DEFAULT_DAYS: i64 = 6;

pub(super) fn slots(config: &Config, sede: &str, dal: Option<String>, al: Option<String>, json: bool) -> Outcome {
    let now = now_ms();
    let dal = dal.unwrap_or_else(|| iso_date(now));
    // A `--dal` that is not a date is reported by the use case, naming it.
    let al = al.unwrap_or_else(|| {
        chrono::NaiveDate::parse_from_str(&dal, "%Y-%m-%d")
            .map(|d| (d + chrono::Duration::days(DEFAULT_DAYS)).to_string())
            .unwrap_or_else(|_| dal.clone())
    });
    let found = availability(&config.agenda, sede, &dal, &al, now).map_err(app_failure)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&found).map_err(runtime)?);
        return Ok(());
    }
    outln!(
        "Agenda della sede {} dal {} al {}: fasce di {} minuti, {} posti ciascuna (preavviso {} ore, fino a {} giorni)",
        found.sede,
        found.dal,
        found.al,
        found.durata_minuti,
        found.posti,
        found.preavviso_ore,
        found.orizzonte_giorni
    );
    if found.slot.is_empty() {
        outln!("  nessuna fascia prenotabile");
    }
    for s in &found.slot {
        outln!("  {} – {}  posti liberi {}", s.inizio, s.fine, s.posti_liberi);
    }
    Ok(())
}
