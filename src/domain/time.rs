//! Instants as unix milliseconds (the representation stored in both database backends), and the civil time
//! zone they are read in.
//!
//! The zone (`time_zone` in the configuration, default Europe/Rome) is a deployment constant like a locale: it
//! decides `ctx.today`, the year of protocol numbers, and every time printed or notified. It is set once per
//! process, from the configuration, before anything is decided or printed ([`set_zone`]); a changed zone needs a
//! restart, so a process never mixes two.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
pub use chrono_tz::Tz as Zone;

/// Milliseconds since the unix epoch, UTC.
pub type Millis = i64;

/// The zone used until the configuration sets one (and by unit tests).
pub const DEFAULT_ZONE: Zone = chrono_tz::Europe::Rome;

static ZONE: OnceLock<Zone> = OnceLock::new();

/// Fixes the process's civil time zone. The first call wins; a later call with another zone returns false.
pub fn set_zone(zone: Zone) -> bool {
    *ZONE.get_or_init(|| zone) == zone
}

/// The process's civil time zone.
pub fn zone() -> Zone {
    ZONE.get().copied().unwrap_or(DEFAULT_ZONE)
}

/// A stored instant in the process's zone.
pub fn to_datetime(ms: Millis) -> DateTime<Zone> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().with_timezone(&zone())
}

/// `YYYY-MM-DD` of an instant in the process's zone: the "today" rules compare dates with.
pub fn iso_date(ms: Millis) -> String {
    to_datetime(ms).date_naive().format("%Y-%m-%d").to_string()
}

/// The calendar year of an instant in the process's zone, for protocol numbers.
pub fn year(ms: Millis) -> i32 {
    to_datetime(ms).year()
}

/// RFC 3339 with milliseconds and the zone's offset (`2026-12-03T08:09:32.420+01:00`): every instant in output.
pub fn rfc3339(ms: Millis) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// An instant for Italian readers: `03/12/2026 alle 08:09 (CET)` — notifications and the text output.
pub fn italian(ms: Millis) -> String {
    to_datetime(ms).format("%d/%m/%Y alle %H:%M (%Z)").to_string()
}

/// The civil date and time of an instant in the process's zone (what an agenda's hours are written in).
pub fn civil(ms: Millis) -> chrono::NaiveDateTime {
    to_datetime(ms).naive_local()
}

/// A civil date and time of the process's zone as RFC 3339 with its offset (the earlier instant when a clock
/// change repeats it; None for a time a clock change skips).
pub fn civil_rfc3339(at: chrono::NaiveDateTime) -> Option<String> {
    use chrono::TimeZone;
    zone().from_local_datetime(&at).earliest().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
}

/// Noon of a `YYYY-MM-DD` date in the process's zone: an instant whose civil date is that date in every zone
/// (noon UTC is already tomorrow at +14:00), for decisions pinned to a day such as rule cases.
pub fn noon(date: &str) -> Option<Millis> {
    local_time_of(date, 12)
}

/// The first instant of a `YYYY-MM-DD` date in the process's zone (the start of a day in date filters).
pub fn day_start(date: &str) -> Option<Millis> {
    local_time_of(date, 0)
}

/// `hour`:00 of a date in the process's zone (the earlier instant when a clock change repeats it).
fn local_time_of(date: &str, hour: u32) -> Option<Millis> {
    use chrono::TimeZone;
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(zone().from_local_datetime(&d.and_hms_opt(hour, 0, 0)?).earliest()?.timestamp_millis())
}

/// True for a real calendar date written `YYYY-MM-DD`.
pub fn is_iso_date(s: &str) -> bool {
    s.len() == 10 && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-31T23:30:00Z is already 2027 in Rome.
    const NEW_YEAR_IN_ROME: Millis = 1_798_759_800_000;

    #[test]
    fn dates_and_years_are_civil_in_the_zone() {
        assert_eq!(zone(), DEFAULT_ZONE);
        assert_eq!(iso_date(NEW_YEAR_IN_ROME), "2027-01-01");
        assert_eq!(year(NEW_YEAR_IN_ROME), 2027);
        assert_eq!(rfc3339(NEW_YEAR_IN_ROME), "2027-01-01T00:30:00.000+01:00");
        assert_eq!(italian(NEW_YEAR_IN_ROME), "01/01/2027 alle 00:30 (CET)");
        assert_eq!(noon("2026-06-01").map(iso_date).as_deref(), Some("2026-06-01"));
        assert_eq!(noon("2026-06-01").map(rfc3339).as_deref(), Some("2026-06-01T12:00:00.000+02:00"));
        assert_eq!(noon("2026-13-01"), None);
        assert_eq!(day_start("2027-01-01").map(rfc3339).as_deref(), Some("2027-01-01T00:00:00.000+01:00"));
    }
}
