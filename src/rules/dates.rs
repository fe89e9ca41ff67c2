//! Date arithmetic for rules, on ISO `"YYYY-MM-DD"` strings (the form of `ctx.today` and of request dates),
//! so that "at most a year ahead" is `d <= add_years(ctx.today, 1)` rather than a hard-coded date.
//!
//! Pure on purpose: no clock (the only "now" a rule has is `ctx.today`), no I/O, so that a replay decides the
//! same way it did. Errors are messages for the rule author; the host turns them into Rhai runtime errors.
//!
//! Working days follow the Italian *national* calendar only: weekends, the fixed national holidays and Easter
//! Monday. Patron saints' days (e.g. 29 June in Rome) vary by comune and are not counted, since a rule does not
//! know which comune's calendar applies. The current calendar is used for every year.

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};

use crate::domain::calendar::{holidays, is_holiday};

/// The largest |n| of `add_days`, `add_working_days` (about a century): enough for any deadline, and it keeps
/// a rule from walking the engine to absurd dates.
pub const MAX_DAYS: i64 = 36_600;
/// The largest |n| of `add_months`.
pub const MAX_MONTHS: i64 = 1_200;
/// The largest |n| of `add_years`.
pub const MAX_YEARS: i64 = 100;

/// Shows a bad value in an error without echoing a huge string back.
fn shown(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        format!("{:?}…", s.chars().take(MAX).collect::<String>())
    }
}

/// A strict `YYYY-MM-DD` (4-digit year, zero-padded month and day, a real calendar day), or `None`.
/// Strict because rules compare dates as strings: "2026-1-5" would sort wrongly against "2026-01-10".
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    let (y, m, d) = (s[0..4].parse().ok()?, s[5..7].parse().ok()?, s[8..10].parse().ok()?);
    NaiveDate::from_ymd_opt(y, m, d).filter(|d| d.year() >= 1)
}

/// Whether `s` is a valid `YYYY-MM-DD` date.
pub fn is_date(s: &str) -> bool {
    parse_date(s).is_some()
}

fn parse(func: &str, s: &str) -> Result<NaiveDate, String> {
    parse_date(s).ok_or_else(|| format!("{func}: {} is not a date: expected YYYY-MM-DD", shown(s)))
}

fn bounded(func: &str, n: i64, max: i64, unit: &str) -> Result<(), String> {
    if n.unsigned_abs() > max.unsigned_abs() {
        Err(format!("{func}: {n} {unit} is out of range: expected at most {max} either way"))
    } else {
        Ok(())
    }
}

/// Formats a result, refusing one that no longer fits `YYYY-MM-DD` (before year 1 or after 9999).
fn formatted(func: &str, from: &str, d: Option<NaiveDate>) -> Result<String, String> {
    match d {
        Some(d) if (1..=9999).contains(&d.year()) => Ok(d.format("%Y-%m-%d").to_string()),
        _ => Err(format!("{func}: the result from {} is beyond the years 0001–9999", shown(from))),
    }
}

fn shift_days(d: NaiveDate, n: i64) -> Option<NaiveDate> {
    if n >= 0 {
        d.checked_add_days(Days::new(n.unsigned_abs()))
    } else {
        d.checked_sub_days(Days::new(n.unsigned_abs()))
    }
}

fn shift_months(d: NaiveDate, n: i64) -> Option<NaiveDate> {
    // chrono clamps to the last day of the resulting month (31 Jan + 1 month = 28/29 Feb).
    let months = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
    if n >= 0 { d.checked_add_months(months) } else { d.checked_sub_months(months) }
}

/// `date` plus `n` days (`n` may be negative).
pub fn add_days(date: &str, n: i64) -> Result<String, String> {
    let d = parse("add_days", date)?;
    bounded("add_days", n, MAX_DAYS, "days")?;
    formatted("add_days", date, shift_days(d, n))
}

/// `date` plus `n` months, clamped to the end of the month: 2026-01-31 + 1 = 2026-02-28.
pub fn add_months(date: &str, n: i64) -> Result<String, String> {
    let d = parse("add_months", date)?;
    bounded("add_months", n, MAX_MONTHS, "months")?;
    formatted("add_months", date, shift_months(d, n))
}

/// `date` plus `n` years; 29 February becomes 28 February in a common year.
pub fn add_years(date: &str, n: i64) -> Result<String, String> {
    let d = parse("add_years", date)?;
    bounded("add_years", n, MAX_YEARS, "years")?;
    formatted("add_years", date, shift_months(d, n * 12))
}

/// `b - a` in days: negative when `b` is earlier.
pub fn days_between(a: &str, b: &str) -> Result<i64, String> {
    let (a, b) = (parse("days_between", a)?, parse("days_between", b)?);
    Ok((b - a).num_days())
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

fn working(d: NaiveDate) -> bool {
    !is_weekend(d) && !is_holiday(d)
}

/// Not a Saturday, a Sunday or an Italian national holiday.
pub fn is_working_day(date: &str) -> Result<bool, String> {
    Ok(working(parse("is_working_day", date)?))
}

/// The `n`-th working day after `date` (before it when `n` < 0); `date` itself when `n` = 0.
pub fn add_working_days(date: &str, n: i64) -> Result<String, String> {
    let mut d = parse("add_working_days", date)?;
    bounded("add_working_days", n, MAX_DAYS, "working days")?;
    let step = n.signum();
    let mut left = n.abs();
    while left > 0 {
        // Stepping past year 9999 (or before year 1) ends the walk with the same error as the other functions.
        match shift_days(d, step).filter(|d| (1..=9999).contains(&d.year())) {
            Some(next) => d = next,
            None => return formatted("add_working_days", date, None),
        }
        if working(d) {
            left -= 1;
        }
    }
    formatted("add_working_days", date, Some(d))
}

/// Working days in (lo, hi], for lo <= hi: weekdays counted arithmetically, then the holidays on weekdays
/// removed year by year, so that distant dates cost no day-by-day walk.
fn working_days_in(lo: NaiveDate, hi: NaiveDate) -> i64 {
    let days = (hi - lo).num_days();
    let mut count = days / 7 * 5;
    let mut d = shift_days(lo, days / 7 * 7);
    for _ in 0..days % 7 {
        d = d.and_then(|d| d.succ_opt());
        if d.is_some_and(|d| !is_weekend(d)) {
            count += 1;
        }
    }
    for year in lo.year()..=hi.year() {
        count -= holidays(year).into_iter().filter(|h| *h > lo && *h <= hi && !is_weekend(*h)).count() as i64;
    }
    count
}

/// The working days in (a, b]; negative (those in (b, a]) when `b` is earlier.
pub fn working_days_between(a: &str, b: &str) -> Result<i64, String> {
    let (a, b) = (parse("working_days_between", a)?, parse("working_days_between", b)?);
    Ok(if a <= b { working_days_in(a, b) } else { -working_days_in(b, a) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::{easter, easter_monday};

    fn ok<T>(r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parsing_is_strict() {
        for good in ["2026-01-01", "2024-02-29", "0001-01-01", "9999-12-31"] {
            assert!(is_date(good), "{good}");
        }
        for bad in [
            "",
            "2026-13-01",
            "2026-02-29",
            "2026-1-01",
            "2026-01-1",
            "26-01-01",
            "2026/01/01",
            " 2026-01-01",
            "2026-01-01T00:00",
            "+202-01-01",
            "0000-01-01",
            "2026-00-10",
            "2026-04-31",
            "２０２６-01-01",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }

    #[test]
    fn adding_days_months_and_years() {
        assert_eq!(ok(add_days("2026-12-31", 1)), "2027-01-01");
        assert_eq!(ok(add_days("2026-03-01", -1)), "2026-02-28");
        assert_eq!(ok(add_days("2024-03-01", -1)), "2024-02-29");
        assert_eq!(ok(add_days("2026-05-10", 0)), "2026-05-10");
        // Month-end clamping, both ways, and in leap years.
        assert_eq!(ok(add_months("2026-01-31", 1)), "2026-02-28");
        assert_eq!(ok(add_months("2024-01-31", 1)), "2024-02-29");
        assert_eq!(ok(add_months("2026-03-31", -1)), "2026-02-28");
        assert_eq!(ok(add_months("2026-05-31", -13)), "2025-04-30");
        assert_eq!(ok(add_months("2026-11-15", 2)), "2027-01-15");
        assert_eq!(ok(add_months("2026-01-15", -1)), "2025-12-15");
        assert_eq!(ok(add_years("2024-02-29", 1)), "2025-02-28");
        assert_eq!(ok(add_years("2024-02-29", 4)), "2028-02-29");
        assert_eq!(ok(add_years("2024-02-29", -1)), "2023-02-28");
        assert_eq!(ok(add_years("2026-06-15", 1)), "2027-06-15");
    }

    #[test]
    fn days_between_is_b_minus_a() {
        assert_eq!(ok(days_between("2026-01-01", "2027-01-01")), 365);
        assert_eq!(ok(days_between("2024-01-01", "2025-01-01")), 366);
        assert_eq!(ok(days_between("2026-03-10", "2026-03-01")), -9);
        assert_eq!(ok(days_between("2026-03-10", "2026-03-10")), 0);
    }

    #[test]
    fn easter_monday_by_the_meeus_algorithm() {
        for (year, monday) in [
            (2024, "2024-04-01"),
            (2025, "2025-04-21"),
            (2026, "2026-04-06"),
            (2027, "2027-03-29"),
            (2011, "2011-04-25"),
        ] {
            assert_eq!(easter_monday(year).map(|d| d.to_string()).as_deref(), Some(monday), "{year}");
            assert!(!ok(is_working_day(monday)), "{monday}");
            // The Tuesday after is an ordinary working day (none of these is next to a fixed holiday).
            if year != 2011 {
                assert!(ok(is_working_day(&ok(add_days(monday, 1)))), "{monday} + 1");
            }
        }
        // Easter Sunday itself, far from the tables above.
        assert_eq!(easter(2000).map(|d| d.to_string()).as_deref(), Some("2000-04-23"));
        assert_eq!(easter(2038).map(|d| d.to_string()).as_deref(), Some("2038-04-25"));
    }

    #[test]
    fn working_days_and_holidays() {
        assert!(ok(is_working_day("2026-05-04"))); // a Monday
        assert!(!ok(is_working_day("2026-05-09"))); // Saturday
        assert!(!ok(is_working_day("2026-05-10"))); // Sunday
        for holiday in [
            "2026-01-01",
            "2026-01-06",
            "2026-04-25",
            "2026-05-01",
            "2026-06-02",
            "2026-08-15",
            "2026-11-01",
            "2026-12-08",
            "2026-12-25",
            "2026-12-26",
        ] {
            assert!(!ok(is_working_day(holiday)), "{holiday}");
        }
        // Patron saints are not national holidays: 29 June (Rome) 2026 is a Monday and a working day.
        assert!(ok(is_working_day("2026-06-29")));
    }

    #[test]
    fn adding_working_days() {
        // Across a weekend: Friday 8 May 2026 + 1 = Monday 11 May; backwards too.
        assert_eq!(ok(add_working_days("2026-05-08", 1)), "2026-05-11");
        assert_eq!(ok(add_working_days("2026-05-11", -1)), "2026-05-08");
        // From a Saturday, the first working day is Monday.
        assert_eq!(ok(add_working_days("2026-05-09", 1)), "2026-05-11");
        assert_eq!(ok(add_working_days("2026-05-09", 0)), "2026-05-09");
        // Across 25 April (Saturday in 2026) and 1 May (Friday): 24 Apr (Fri) + 5 = 27, 28, 29, 30 Apr, 4 May.
        assert_eq!(ok(add_working_days("2026-04-24", 5)), "2026-05-04");
        assert_eq!(ok(add_working_days("2026-05-04", -5)), "2026-04-24");
        // 2025: 25 April is a Friday, 1 May a Thursday. 24 Apr (Thu) + 1 = 28 Apr (Mon); + 4 = 2 May.
        assert_eq!(ok(add_working_days("2025-04-24", 1)), "2025-04-28");
        assert_eq!(ok(add_working_days("2025-04-24", 4)), "2025-05-02");
        // Around Easter Monday 2026 (6 April): Friday 3 + 1 = Tuesday 7.
        assert_eq!(ok(add_working_days("2026-04-03", 1)), "2026-04-07");
        // Christmas: 24 Dec 2026 (Thu) + 1 = 28 Dec (Mon).
        assert_eq!(ok(add_working_days("2026-12-24", 1)), "2026-12-28");
    }

    #[test]
    fn counting_working_days() {
        // (Fri 8 May, Mon 11 May]: Monday only.
        assert_eq!(ok(working_days_between("2026-05-08", "2026-05-11")), 1);
        assert_eq!(ok(working_days_between("2026-05-11", "2026-05-08")), -1);
        assert_eq!(ok(working_days_between("2026-05-08", "2026-05-08")), 0);
        assert_eq!(ok(working_days_between("2026-04-24", "2026-05-04")), 5);
        assert_eq!(ok(working_days_between("2025-04-24", "2025-05-02")), 4);
        // 2011: Easter Monday on 25 April is one holiday, not two.
        assert_eq!(ok(working_days_between("2011-04-22", "2011-04-26")), 1);
        // Consistent with add_working_days, and with a day-by-day count over several years.
        for (from, n) in [("2026-01-01", 250), ("2024-02-28", 777), ("2019-12-31", 1), ("2030-06-15", 3000)] {
            let to = ok(add_working_days(from, n));
            assert_eq!(ok(working_days_between(from, &to)), n, "{from} + {n}");
            assert!(ok(add_working_days(&to, -n)).as_str() <= from, "{to} - {n}");
        }
        let (lo, hi) = (parse_date("2023-12-20"), parse_date("2028-01-10"));
        let (Some(lo), Some(hi)) = (lo, hi) else { panic!("dates") };
        let walked = lo.iter_days().skip(1).take_while(|d| *d <= hi).filter(|d| working(*d)).count() as i64;
        assert_eq!(working_days_in(lo, hi), walked);
        // A whole year: 2026 has 254 working days on the national calendar.
        assert_eq!(ok(working_days_between("2025-12-31", "2026-12-31")), 254);
        // The whole range of dates is fine: no day-by-day walk.
        assert!(ok(working_days_between("0001-01-01", "9999-12-31")) > 2_000_000);
    }

    #[test]
    fn malformed_dates_are_errors_that_say_what_is_expected() {
        assert_eq!(
            add_days("2026-13-01", 1).unwrap_err(),
            "add_days: \"2026-13-01\" is not a date: expected YYYY-MM-DD"
        );
        assert_eq!(
            add_months("31/01/2026", 1).unwrap_err(),
            "add_months: \"31/01/2026\" is not a date: expected YYYY-MM-DD"
        );
        assert!(add_years("", 1).unwrap_err().starts_with("add_years: \"\" is not a date"));
        assert!(days_between("2026-01-01", "2026-02-30").unwrap_err().starts_with("days_between: \"2026-02-30\""));
        assert!(is_working_day("domani").unwrap_err().starts_with("is_working_day: \"domani\""));
        assert!(add_working_days("2026-1-1", 1).unwrap_err().starts_with("add_working_days: \"2026-1-1\""));
        assert!(working_days_between("x", "2026-01-01").unwrap_err().starts_with("working_days_between: \"x\""));
        let long = "9".repeat(10_000);
        assert!(add_days(&long, 1).unwrap_err().len() < 120, "a huge value is not echoed whole");
    }

    #[test]
    fn n_is_bounded() {
        assert_eq!(ok(add_days("2026-01-01", MAX_DAYS)), "2126-03-18");
        assert_eq!(
            add_days("2026-01-01", MAX_DAYS + 1).unwrap_err(),
            "add_days: 36601 days is out of range: expected at most 36600 either way"
        );
        assert!(add_days("2026-01-01", i64::MIN).is_err());
        assert!(add_months("2026-01-01", -MAX_MONTHS - 1).unwrap_err().contains("1200"));
        assert!(add_years("2026-01-01", 101).unwrap_err().contains("at most 100"));
        assert!(add_years("2026-01-01", i64::MAX).is_err());
        assert!(
            add_working_days("2026-01-01", -36_601).unwrap_err().starts_with("add_working_days: -36601 working days")
        );
        assert_eq!(ok(add_years("2026-01-01", -100)), "1926-01-01");
        // Within the bound but beyond year 9999 (or before year 1): an error, never a malformed string.
        assert!(add_years("9999-06-01", 1).unwrap_err().contains("beyond the years"));
        assert!(add_days("0001-01-01", -1).unwrap_err().contains("beyond the years"));
        assert!(add_working_days("9999-12-31", 1).unwrap_err().contains("beyond the years"));
    }
}
