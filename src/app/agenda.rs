//! The Agenda Appuntamenti of the sedi (issue 16): the slots a requester may book at a sede, from the agenda it
//! publishes (`agenda:` in the configuration) — its days and hours, slot length, places, closures and the
//! national holidays, the minimum notice and the booking horizon. Bookings, which take the places, are the next
//! step; until then every place of a bookable slot is free.

use chrono::NaiveDate;
use serde::Serialize;

use super::AppError;
use crate::config::AgendaConfig;
use crate::domain::agenda::MAX_SEARCH_DAYS;
use crate::domain::time::{Millis, civil, civil_rfc3339};

/// A bookable slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SlotLibero {
    /// RFC 3339 with the sede's offset.
    #[schema(format = DateTime)]
    pub inizio: String,
    #[schema(format = DateTime)]
    pub fine: String,
    #[schema(minimum = 0, maximum = 1000)]
    pub posti_liberi: u32,
}

/// What a sede offers between two days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Disponibilita {
    #[schema(max_length = 4, pattern = "^[0-9]{4}$")]
    pub sede: String,
    #[schema(format = Date)]
    pub dal: String,
    #[schema(format = Date)]
    pub al: String,
    #[schema(minimum = 5, maximum = 480)]
    pub durata_minuti: u32,
    /// Places per slot.
    #[schema(minimum = 1, maximum = 1000)]
    pub posti: u32,
    #[schema(minimum = 0, maximum = 720)]
    pub preavviso_ore: u32,
    #[schema(minimum = 1, maximum = 366)]
    pub orizzonte_giorni: u32,
    /// The bookable slots, in order (at most 31 days of them).
    #[schema(min_items = 0, max_items = 100000)]
    pub slot: Vec<SlotLibero>,
}

/// A refused search, naming its parameter.
fn refused(field: &str, problem: String) -> AppError {
    AppError::Invalid(vec![crate::intake::IntakeError {
        source_name: "ricerca".into(),
        position: "agenda".into(),
        index: None,
        error: crate::domain::request::FieldError::new(field, problem),
    }])
}

fn day(field: &str, text: &str) -> Result<NaiveDate, AppError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        refused(field, format!("`{}` is not a date YYYY-MM-DD", text.chars().take(40).collect::<String>()))
    })
}

/// The slots of `sede` bookable at `now` from `dal` to `al` (days, both included; at most 31 days).
pub fn availability(
    agenda: &AgendaConfig,
    sede: &str,
    dal: &str,
    al: &str,
    now: Millis,
) -> Result<Disponibilita, AppError> {
    let Some(a) = agenda.get(sede) else {
        return Err(AppError::NotFound(format!("la sede {sede} non pubblica un'agenda degli appuntamenti")));
    };
    let a = &a.0;
    let (from, to) = (day("dal", dal)?, day("al", al)?);
    if to < from {
        return Err(refused("al", format!("{al} is before dal ({dal})")));
    }
    if (to - from).num_days() >= MAX_SEARCH_DAYS {
        return Err(refused("al", format!("at most {MAX_SEARCH_DAYS} days per search (dal {dal})")));
    }
    let slot = a
        .bookable(from, to, civil(now))
        .into_iter()
        .filter_map(|s| {
            Some(SlotLibero { inizio: civil_rfc3339(s.inizio)?, fine: civil_rfc3339(s.fine)?, posti_liberi: a.posti })
        })
        .collect();
    Ok(Disponibilita {
        sede: sede.to_string(),
        dal: from.to_string(),
        al: to.to_string(),
        durata_minuti: a.durata_minuti,
        posti: a.posti,
        preavviso_ore: a.preavviso_ore,
        orizzonte_giorni: a.orizzonte_giorni,
        slot,
    })
}
