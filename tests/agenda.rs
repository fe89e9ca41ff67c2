//! The Agenda Appuntamenti's slot search over real HTTP: a sede's published agenda gives its bookable slots —
//! its days and bands cut into slots, no weekend, national holiday or closure, nothing inside the minimum notice
//! or past the horizon — and a bad search names its parameter.

mod common;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use common::api::{BASE, bearer, daemon, problem, token};
use common::daemon::{http, stop};
use common::{Db, Env};
use serde_json::{Value, json};

backends!(a_sede_offers_the_slots_of_its_agenda);

fn a_sede_offers_the_slots_of_its_agenda(db: Db) {
    let env = Env::new(db);
    let today = common::civil_now().date_naive();
    // A closure on the first weekday after tomorrow, to see it skipped.
    let mut closed = today + Duration::days(2);
    while matches!(closed.weekday(), Weekday::Sat | Weekday::Sun) {
        closed += Duration::days(1);
    }
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!(
            "{config}agenda:\n  \"7000\":\n    giorni: [lunedi, martedi, mercoledi, giovedi, venerdi]\n\
             \x20   orari: [\"09:00-10:15\", \"14:30-15:30\"]\n    durata_minuti: 30\n    posti: 2\n\
             \x20   chiusure: [{closed}]\n    preavviso_ore: 24\n    orizzonte_giorni: 10\n"
        ),
    )
    .expect("config");
    let (child, port) = daemon(&env);
    let who = bearer(&token("portale.key.pem", json!({})));
    let search = |sede: &str, query: &str| {
        let (status, head, out) = http(port, "GET", &format!("{BASE}/agenda/{sede}/disponibilita?{query}"), &who, "");
        (status, head, out)
    };
    let (from, to) = (today, today + Duration::days(20));
    let (status, _, out) = search("7000", &format!("dal={from}&al={to}"));
    assert_eq!(status, 200, "{out}");
    let found: Value = serde_json::from_str(&out).expect("json");
    assert_eq!((found["posti"].as_u64(), found["durata_minuti"].as_u64()), (Some(2), Some(30)), "{found}");
    let slots = found["slot"].as_array().expect("slot");
    assert!(!slots.is_empty(), "{found}");
    let now = chrono::Utc::now();
    let mut days = std::collections::BTreeSet::new();
    for s in slots {
        let start = chrono::DateTime::parse_from_rfc3339(s["inizio"].as_str().expect("inizio")).expect("rfc3339");
        let end = chrono::DateTime::parse_from_rfc3339(s["fine"].as_str().expect("fine")).expect("rfc3339");
        assert_eq!(end - start, Duration::minutes(30), "{s}");
        assert!(start.with_timezone(&chrono::Utc) >= now + Duration::hours(24) - Duration::minutes(1), "notice: {s}");
        let day = start.date_naive();
        assert!(!matches!(day.weekday(), Weekday::Sat | Weekday::Sun), "a weekend: {s}");
        assert!(day != closed, "the closure: {s}");
        assert!(day <= today + Duration::days(10), "the horizon: {s}");
        assert!(!is_national_holiday(day), "a holiday: {s}");
        let time = start.format("%H:%M").to_string();
        assert!(["09:00", "09:30", "14:30", "15:00"].contains(&time.as_str()), "only whole slots: {s}");
        assert_eq!(s["posti_liberi"], 2, "{s}");
        days.insert(day);
    }
    assert!(days.len() >= 3, "several days: {days:?}");
    // The command line gives the same slots (one use case).
    let (dal, al) = (from.to_string(), to.to_string());
    let cli: Value =
        serde_json::from_str(&env.ok(&["agenda", "7000", "--dal", &dal, "--al", &al, "--json"])).expect("json");
    assert_eq!(cli["slot"], found["slot"]);

    // What a search may not be.
    let (status, head, out) = search("7000", &format!("dal={from}&al={}", from + Duration::days(40)));
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/al", "{out}");
    let (status, head, out) = search("7000", "dal=domani&al=2026-13-01");
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/dal", "{out}");
    let (status, head, out) = search("7000", &format!("dal={from}"));
    assert_eq!(status, 400, "{out}");
    problem(&head, &out);
    let (status, head, out) = search("1300", &format!("dal={from}&al={to}"));
    assert_eq!(status, 404, "a sede without an agenda: {out}");
    problem(&head, &out);
    stop(child);
}

/// The national holidays (the fixed ones and Easter Monday), computed here independently of the daemon.
fn is_national_holiday(d: NaiveDate) -> bool {
    let fixed = [(1, 1), (1, 6), (4, 25), (5, 1), (6, 2), (8, 15), (11, 1), (12, 8), (12, 25), (12, 26)];
    if fixed.contains(&(d.month(), d.day())) {
        return true;
    }
    // Easter Monday, by the Meeus/Jones/Butcher algorithm.
    let y = d.year();
    let (a, b, c) = (y % 19, y / 100, y % 100);
    let h = (19 * a + b - b / 4 - (b - (b + 8) / 25 + 1) / 3 + 15) % 30;
    let l = (32 + 2 * (b % 4) + 2 * (c / 4) - h - c % 4) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let easter =
        NaiveDate::from_ymd_opt(y, ((h + l - 7 * m + 114) / 31) as u32, ((h + l - 7 * m + 114) % 31 + 1) as u32);
    easter.and_then(|e| e.succ_opt()) == Some(d)
}
