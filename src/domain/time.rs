//! Instants as unix milliseconds: the representation stored in both database backends.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// Milliseconds since the unix epoch, UTC.
pub type Millis = i64;

/// Converts a stored instant to a UTC date-time for display (RFC 3339 in JSON output).
pub fn to_datetime(ms: Millis) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

/// `YYYY-MM-DD` of an instant, in UTC: the "today" rules compare dates with.
pub fn iso_date(ms: Millis) -> String {
    to_datetime(ms).date_naive().format("%Y-%m-%d").to_string()
}

/// The calendar year of an instant, for protocol numbers.
pub fn year(ms: Millis) -> i32 {
    to_datetime(ms).year()
}

/// RFC 3339 with milliseconds, the format of every instant in JSON output.
pub fn rfc3339(ms: Millis) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// True for a real calendar date written `YYYY-MM-DD`.
pub fn is_iso_date(s: &str) -> bool {
    s.len() == 10 && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}
