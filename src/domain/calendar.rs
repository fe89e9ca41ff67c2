//! The Italian national calendar: the days public offices are closed besides weekends. Used by the rules' date
//! functions (`rules::dates`: working days) and by the sedi's agendas (`domain::agenda`: no slot on a holiday).
//!
//! National holidays only: weekends, the fixed national holidays and Easter Monday. Patron saints' days (e.g. 29
//! June in Rome) vary by comune: an agenda lists them among its own closures. The current calendar is used for
//! every year.

use chrono::{Datelike, NaiveDate};

/// The fixed national holidays (month, day): L. 260/1949 as amended (6 Jan restored in 1985, 2 Jun in 2001).
const FIXED_HOLIDAYS: [(u32, u32); 10] =
    [(1, 1), (1, 6), (4, 25), (5, 1), (6, 2), (8, 15), (11, 1), (12, 8), (12, 25), (12, 26)];

/// Easter Sunday of `year` (Gregorian calendar), by the anonymous Gregorian (Meeus/Jones/Butcher) algorithm.
pub fn easter(year: i32) -> Option<NaiveDate> {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

pub fn easter_monday(year: i32) -> Option<NaiveDate> {
    easter(year).and_then(|e| e.succ_opt())
}

/// The national holidays of `year`, sorted and without duplicates (Easter Monday may fall on 25 April).
pub fn holidays(year: i32) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = FIXED_HOLIDAYS
        .iter()
        .filter_map(|&(m, d)| NaiveDate::from_ymd_opt(year, m, d))
        .chain(easter_monday(year))
        .collect();
    days.sort();
    days.dedup();
    days
}

/// A national holiday (a fixed one or Easter Monday), whatever the weekday.
pub fn is_holiday(d: NaiveDate) -> bool {
    FIXED_HOLIDAYS.contains(&(d.month(), d.day())) || easter_monday(d.year()) == Some(d)
}
