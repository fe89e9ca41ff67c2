//! A sede's Agenda Appuntamenti: the days and hours it receives, the slot length, the places per slot, its
//! closures, the minimum notice and the booking horizon; and the slots that follow from them. Pure: the instant
//! "now" is an argument (in the sede's civil time), and the national holidays come from `domain::calendar`.

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Weekday};

use super::calendar::is_holiday;

/// The most days one search may span: a search is a page of a calendar, not an export.
pub const MAX_SEARCH_DAYS: i64 = 31;

/// What a sede publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agenda {
    /// The weekdays it receives.
    pub giorni: Vec<Weekday>,
    /// Opening hours of each of those days, sorted and not overlapping: [start, end).
    pub fasce: Vec<(NaiveTime, NaiveTime)>,
    /// Slot length, in minutes.
    pub durata_minuti: u32,
    /// Appointments one slot takes.
    pub posti: u32,
    /// Days it is closed besides weekends and national holidays (the patron saint, a strike, …).
    pub chiusure: BTreeSet<NaiveDate>,
    /// How long before its start a slot may still be booked.
    pub preavviso_ore: u32,
    /// How many days ahead of today a slot may be booked.
    pub orizzonte_giorni: u32,
}

/// One slot: [inizio, fine) in the sede's civil time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub inizio: NaiveDateTime,
    pub fine: NaiveDateTime,
}

impl Agenda {
    /// Whether the sede receives on `day`: a weekday of the agenda, not a national holiday, not a closure.
    pub fn open_on(&self, day: NaiveDate) -> bool {
        self.giorni.contains(&day.weekday()) && !is_holiday(day) && !self.chiusure.contains(&day)
    }

    /// The slots of `day`, whether bookable or not: each opening-hours band cut into slots of `durata_minuti`
    /// (a remainder shorter than a slot is not one).
    pub fn slots_of(&self, day: NaiveDate) -> Vec<Slot> {
        if !self.open_on(day) {
            return Vec::new();
        }
        let length = Duration::minutes(i64::from(self.durata_minuti.max(1)));
        let mut out = Vec::new();
        for &(start, end) in &self.fasce {
            let (mut at, end) = (day.and_time(start), day.and_time(end));
            while at + length <= end {
                out.push(Slot { inizio: at, fine: at + length });
                at += length;
            }
        }
        out
    }

    /// The slots that may be booked at `now` between `from` and `to` (days, both included): those starting at
    /// least `preavviso_ore` after `now`, on a day no further than `orizzonte_giorni` from `now`'s.
    pub fn bookable(&self, from: NaiveDate, to: NaiveDate, now: NaiveDateTime) -> Vec<Slot> {
        let earliest = now + Duration::hours(i64::from(self.preavviso_ore));
        let last_day = now.date() + Duration::days(i64::from(self.orizzonte_giorni));
        let mut out = Vec::new();
        let mut day = from.max(earliest.date());
        while day <= to.min(last_day) {
            out.extend(self.slots_of(day).into_iter().filter(|s| s.inizio >= earliest));
            day += Duration::days(1);
        }
        out
    }

    /// Whether `inizio` is the start of a slot bookable at `now`; the reason in Italian when it is not.
    pub fn check_bookable(&self, inizio: NaiveDateTime, now: NaiveDateTime) -> Result<Slot, NotBookable> {
        let day = inizio.date();
        if !self.open_on(day) {
            return Err(NotBookable::Closed);
        }
        let Some(slot) = self.slots_of(day).into_iter().find(|s| s.inizio == inizio) else {
            return Err(NotBookable::NotASlot);
        };
        if inizio < now + Duration::hours(i64::from(self.preavviso_ore)) {
            return Err(NotBookable::TooSoon { ore: self.preavviso_ore });
        }
        if day > now.date() + Duration::days(i64::from(self.orizzonte_giorni)) {
            return Err(NotBookable::TooFar { giorni: self.orizzonte_giorni });
        }
        Ok(slot)
    }
}

/// Why a start is not a bookable slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotBookable {
    #[error("la sede non riceve in quel giorno")]
    Closed,
    #[error("l'orario non è l'inizio di una fascia dell'agenda della sede")]
    NotASlot,
    #[error("l'appuntamento va prenotato con almeno {ore} ore di preavviso")]
    TooSoon { ore: u32 },
    #[error("l'appuntamento può essere prenotato al massimo {giorni} giorni prima")]
    TooFar { giorni: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("time")
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn agenda() -> Agenda {
        Agenda {
            giorni: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
            fasce: vec![(t(9, 0), t(10, 15)), (t(14, 30), t(15, 30))],
            durata_minuti: 30,
            posti: 2,
            chiusure: [d("2026-06-29")].into(),
            preavviso_ore: 24,
            orizzonte_giorni: 30,
        }
    }

    #[test]
    fn a_day_is_cut_into_whole_slots_per_band() {
        let starts: Vec<String> =
            agenda().slots_of(d("2026-06-03")).iter().map(|s| s.inizio.format("%H:%M").to_string()).collect();
        // 09:00–10:15 gives two whole slots (the 15 minutes left are not one), 14:30–15:30 two.
        assert_eq!(starts, ["09:00", "09:30", "14:30", "15:00"]);
    }

    #[test]
    fn weekends_national_holidays_and_closures_have_no_slot() {
        let a = agenda();
        // 2 June (Festa della Repubblica) is a Tuesday in 2026, 6 June a Saturday, 29 June a closure of the sede.
        for day in ["2026-06-02", "2026-06-06", "2026-06-29", "2026-04-06"] {
            assert!(a.slots_of(d(day)).is_empty(), "{day}");
        }
        assert_eq!(
            a.check_bookable(d("2026-06-02").and_time(t(9, 0)), d("2026-05-20").and_time(t(9, 0))),
            Err(NotBookable::Closed)
        );
    }

    #[test]
    fn notice_and_horizon_bound_what_may_be_booked() {
        let a = agenda();
        let now = d("2026-06-03").and_time(t(9, 10));
        let slots = a.bookable(d("2026-06-01"), d("2026-07-31"), now);
        // The first bookable slot is 24 hours on: 4 June at 09:30 (09:00 is 23h50 away).
        assert_eq!(slots.first().map(|s| s.inizio), Some(d("2026-06-04").and_time(t(9, 30))));
        // The last is on 3 July, 30 days on (a Friday).
        assert_eq!(slots.last().map(|s| s.inizio.date()), Some(d("2026-07-03")));
        assert_eq!(a.check_bookable(d("2026-06-04").and_time(t(9, 0)), now), Err(NotBookable::TooSoon { ore: 24 }));
        assert_eq!(a.check_bookable(d("2026-07-06").and_time(t(9, 0)), now), Err(NotBookable::TooFar { giorni: 30 }));
        assert_eq!(a.check_bookable(d("2026-06-05").and_time(t(9, 10)), now), Err(NotBookable::NotASlot));
        assert!(a.check_bookable(d("2026-06-05").and_time(t(14, 30)), now).is_ok());
    }
}
