//! The configured civil time zone decides `ctx.today`, the protocol year and every printed time (which says its
//! offset). The zone is chosen so that its date differs from UTC's at the moment the test runs.

mod common;

use chrono::{Datelike, Utc};
use common::{Db, Env, rdi};

fn dates_and_times_follow_the_configured_zone(db: Db) {
    let now = Utc::now();
    // +14:00 is tomorrow from 10:00 UTC on; -11:00 is yesterday before 11:00 UTC.
    let (name, zone): (&str, chrono_tz::Tz) = if chrono::Timelike::hour(&now) >= 10 {
        ("Pacific/Kiritimati", chrono_tz::Pacific::Kiritimati)
    } else {
        ("Pacific/Pago_Pago", chrono_tz::Pacific::Pago_Pago)
    };
    let env = Env::new(db);
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, format!("{config}time_zone: {name}\n")).expect("config");
    env.import_examples();
    let submitted = env.submit(&rdi("RSSMRA80A01H501U", "AZIENDA", "1234567890", "VRDGPP80A41H501Y", ""));
    env.decide_all();
    let protocollo = submitted[0]["protocollo"].as_str().expect("protocollo").to_string();
    let local = Utc::now().with_timezone(&zone);
    assert_ne!(local.date_naive(), Utc::now().date_naive(), "the zone must differ from UTC for this test");

    let view = env.show(&protocollo);
    let offset = local.format("%:z").to_string();
    for field in ["creata_il", "chiusa_il"] {
        let t = view[field].as_str().unwrap_or_else(|| panic!("{field} in {view}"));
        assert!(t.ends_with(&offset), "{field} {t} says the zone's offset {offset}");
    }
    assert_eq!(protocollo.split('.').nth(1), Some(local.year().to_string().as_str()), "protocol year of {protocollo}");
    let explained = env.ok(&["explain", &protocollo]);
    let today = local.format("%Y-%m-%d").to_string();
    assert!(explained.contains(&format!("(ctx.today) {today}")), "ctx.today is {today}:\n{explained}");
}

fn an_unknown_zone_is_refused_naming_the_key(db: Db) {
    let env = Env::new(db);
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, format!("{config}time_zone: Europe/Atlantide\n")).expect("config");
    let out = env.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("time_zone"), "{}", common::stderr(&out));
}

backends!(dates_and_times_follow_the_configured_zone, an_unknown_zone_is_refused_naming_the_key);
