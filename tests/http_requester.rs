//! The requester's side of the API beyond submitting: the task menu (profiles and pilot groups from
//! task.yaml, and intake refusing what the menu does not offer), the Fascicolo of a subject (searched by a
//! body, scoped to who may see it), and the limits every answer announces (rate limit, 429 with Retry-After).

mod common;

use common::api::{BASE, ROSSI, bearer, daemon_with, problem, token};
use common::daemon::{http, stop, wait_for};
use common::{Db, Env, Settings, copy_dir, rdi, repo};
use serde_json::{Value, json};

const VERDI: &str = "VRDGPP80A41H501Y"; // intermediary with D-1 on 1234567890

fn as_who(cf: &str, profilo: &str) -> String {
    format!(
        "{}Content-Type: application/json\r\n",
        bearer(&token("portale.key.pem", json!({"cf": cf, "profilo": profilo})))
    )
}

fn tasks(menu: &str) -> Vec<String> {
    let menu: Value = serde_json::from_str(menu).unwrap_or_else(|e| panic!("{e}: {menu}"));
    menu["items"].as_array().expect("items").iter().map(|i| i["task"].as_str().expect("task").to_string()).collect()
}

/// The shipped rules with VARIAZIONE_CONTATTI_INTERMEDIARIO released to the pilot group `primi-studi`.
fn env_with_a_pilot(db: Db) -> Env {
    let env = Env::with(db, Settings { rules_dir: std::path::PathBuf::new(), ..Settings::default() });
    let rules = env.dir.path().join("rules");
    copy_dir(&repo().join("rules"), &rules);
    let task = rules.join("variazione_contatti_intermediario/task.yaml");
    let text = std::fs::read_to_string(&task).expect("task.yaml");
    std::fs::write(
        &task,
        text.replacen("profili: [INTERMEDIARIO]", "profili: [INTERMEDIARIO]\npilota: primi-studi", 1),
    )
    .expect("task.yaml");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, config.replacen("  dir: \n", &format!("  dir: {}\n", rules.display()), 1))
        .expect("config");
    env
}

fn the_menu_offers_what_profile_and_pilot_group_allow(db: Db) {
    let env = env_with_a_pilot(db);
    let (child, port) = daemon_with(&env, "");
    let menu = |cf: &str, profilo: &str| {
        let (status, head, out) = http(port, "GET", &format!("{BASE}/menu"), &as_who(cf, profilo), "");
        assert_eq!(status, 200, "{out}");
        assert!(head.to_ascii_lowercase().contains("cache-control: no-store"), "{head}");
        tasks(&out)
    };
    // A company: the tasks open to AZIENDA, each with its form's schema.
    let azienda = menu(ROSSI, "AZIENDA");
    assert!(azienda.contains(&"REVOCA_DELEGA_INTERMEDIARIO".to_string()), "{azienda:?}");
    assert!(!azienda.contains(&"VARIAZIONE_CONTATTI_INTERMEDIARIO".to_string()), "{azienda:?}");
    // An intermediary outside the pilot group does not see the pilot task; inside it, does.
    assert!(!menu(VERDI, "INTERMEDIARIO").contains(&"VARIAZIONE_CONTATTI_INTERMEDIARIO".to_string()));
    let vci = json!({
        "task": "VARIAZIONE_CONTATTI_INTERMEDIARIO", "richiedente_cf": VERDI, "profilo_richiedente": "INTERMEDIARIO",
        "cf_intermediario": VERDI, "ambito": "TUTTE", "email": "studio.verdi@example.it",
    })
    .to_string();
    let submit = |body: &str, who: &str| http(port, "POST", &format!("{BASE}/richieste"), who, body);
    let (status, head, out) = submit(&vci, &as_who(VERDI, "INTERMEDIARIO"));
    assert_eq!(status, 403, "{out}");
    assert!(problem(&head, &out)["detail"].as_str().is_some_and(|d| d.contains("pilot group")), "{out}");
    let added = env.ok(&["pilot", "add", "primi-studi", VERDI]);
    assert!(added.contains("1 added"), "{added}");
    assert!(env.ok(&["pilot", "add", "primi-studi", VERDI, ROSSI]).contains("1 added"), "one was in it already");
    assert!(env.ok(&["pilot", "remove", "primi-studi", ROSSI, ROSSI]).contains("1 removed"));
    let listed = env.ok(&["pilot", "list", "primi-studi"]);
    assert_eq!(listed.trim(), VERDI);
    let inside = menu(VERDI, "INTERMEDIARIO");
    assert!(inside.contains(&"VARIAZIONE_CONTATTI_INTERMEDIARIO".to_string()), "{inside:?}");
    let (status, _, out) = submit(&vci, &as_who(VERDI, "INTERMEDIARIO"));
    assert_eq!(status, 201, "{out}");
    // The CLI shows the same menu.
    let cli = env.ok(&["menu", "--richiedente", VERDI, "--profilo", "INTERMEDIARIO"]);
    assert!(cli.contains("VARIAZIONE_CONTATTI_INTERMEDIARIO") && cli.contains("sperimentale"), "{cli}");
    // A profile the task does not allow is refused at intake, pointing at the field.
    let wrong = rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "")
        .replace("REVOCA_DELEGA_INTERMEDIARIO", "VARIAZIONE_CONTATTI_INTERMEDIARIO");
    let wrong: Value = serde_saphyr::from_str(&wrong).expect("yaml");
    let (status, head, out) = submit(&wrong.to_string(), &as_who(ROSSI, "AZIENDA"));
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/profilo_richiedente", "{out}");
    // Operators submit nothing, so they have no menu.
    let operatore = bearer(&token("portale.key.pem", json!({"ruolo": "operatore", "sede": "7000"})));
    assert_eq!(http(port, "GET", &format!("{BASE}/menu"), &operatore, "").0, 403);
    stop(child);
}

fn the_fascicolo_is_searched_by_body_and_scoped(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon_with(&env, "");
    let body: Value = serde_saphyr::from_str(&rdi(ROSSI, "AZIENDA", "1234567890", VERDI, "")).expect("yaml");
    let (status, _, out) =
        http(port, "POST", &format!("{BASE}/richieste"), &as_who(ROSSI, "AZIENDA"), &body.to_string());
    assert_eq!(status, 201, "{out}");
    wait_for("the decision", 30, || env.sql("SELECT COUNT(*) FROM requests WHERE stato = 'chiusa'")[0][0] == 1);
    let search = |who: &str, soggetto: &str| {
        http(port, "POST", &format!("{BASE}/fascicolo/ricerca"), who, &json!({ "soggetto": soggetto }).to_string())
    };
    let items = |out: &str| serde_json::from_str::<Value>(out).expect("json")["items"].as_array().expect("items").len();
    // Rossi: his own Fascicolo, and his company's.
    for soggetto in [ROSSI, "1234567890"] {
        let (status, head, out) = search(&as_who(ROSSI, "AZIENDA"), soggetto);
        assert_eq!((status, items(&out)), (200, 1), "{soggetto}: {out}");
        assert!(head.to_ascii_lowercase().contains("cache-control: no-store"), "{head}");
    }
    // Another requester: Rossi's Fascicolo and a company he does not act for are not found.
    let other = as_who("BNCGPP72C15F205Z", "AZIENDA");
    for soggetto in [ROSSI, "1234567890"] {
        let (status, head, out) = search(&other, soggetto);
        assert_eq!(status, 404, "{soggetto}: {out}");
        problem(&head, &out);
    }
    // The sede of the position sees it; another sede does not.
    let operatore = |sede: &str| {
        format!(
            "{}Content-Type: application/json\r\n",
            bearer(&token("portale.key.pem", json!({"ruolo": "operatore", "sede": sede})))
        )
    };
    assert_eq!(search(&operatore("7000"), "1234567890").0, 200);
    assert_eq!(search(&operatore("1300"), "1234567890").0, 404);
    // A malformed search names its field.
    let (status, head, out) = search(&as_who(ROSSI, "AZIENDA"), &"X".repeat(40));
    assert_eq!(status, 422, "{out}");
    assert_eq!(problem(&head, &out)["errors"][0]["pointer"], "/soggetto");
    stop(child);
}

fn every_answer_announces_the_rate_limit_and_429_says_when_to_retry(db: Db) {
    let env = Env::new(db);
    let (child, port) = daemon_with(&env, "  rate_limit: { requests: 3, window_seconds: 3600 }\n");
    let me = as_who(ROSSI, "AZIENDA");
    let header = |head: &str, name: &str| -> Option<u64> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().parse().ok()).flatten()
        })
    };
    for remaining in [2, 1, 0] {
        let (status, head, _) = http(port, "GET", &format!("{BASE}/menu"), &me, "");
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "x-ratelimit-limit"), Some(3), "{head}");
        assert_eq!(header(&head, "x-ratelimit-remaining"), Some(remaining), "{head}");
        assert!(header(&head, "x-ratelimit-reset").is_some_and(|s| (1..=3600).contains(&s)), "{head}");
    }
    let (status, head, out) = http(port, "GET", &format!("{BASE}/menu"), &me, "");
    assert_eq!(status, 429, "{out}");
    problem(&head, &out);
    assert!(header(&head, "retry-after").is_some_and(|s| (1..=3600).contains(&s)), "{head}");
    // Another caller has a quota of its own; the operations routes are not limited.
    assert_eq!(http(port, "GET", &format!("{BASE}/menu"), &as_who(VERDI, "INTERMEDIARIO"), "").0, 200);
    for _ in 0..5 {
        assert_eq!(common::daemon::get(port, "/healthz").0, 200);
    }
    stop(child);
}

backends!(
    the_menu_offers_what_profile_and_pilot_group_allow,
    the_fascicolo_is_searched_by_body_and_scoped,
    every_answer_announces_the_rate_limit_and_429_says_when_to_retry,
);
