//! The satisfaction questionnaire: what is stored names no request or requester, a link works once, and a
//! group smaller than `gruppo_minimo` is never shown.

mod common;

use common::{Db, TestDb, block_on};
use serde_json::{Map, Value, json};
use smart_task::app::questionnaire::{answer, invite, results};
use smart_task::app::{Actor, AppError};
use smart_task::config::{Question, QuestionKind, QuestionnaireConfig};
use smart_task::store::Store;

backends!(stored_answers_name_nobody, a_link_works_once, small_groups_are_withheld);

fn config() -> QuestionnaireConfig {
    QuestionnaireConfig {
        domande: vec![
            Question { id: "soddisfazione".into(), testo: "Quanto è soddisfatto?".into(), kind: QuestionKind::Scala },
            Question {
                id: "tempi".into(),
                testo: "I tempi sono stati adeguati?".into(),
                kind: QuestionKind::Scelta { opzioni: vec!["SI".into(), "NO".into()] },
            },
        ],
        gruppo_minimo: 3,
        validita_giorni: 30,
        link_base: "https://portale.example.it/questionario".into(),
        categorie: vec!["CONSULENTE_LAVORO".into()],
    }
}

// 2026-11-25T10:00:00Z
const CLOSED_AT: i64 = 1_795_600_800_000;

fn answers(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

fn open(db: &TestDb) -> Store {
    block_on({
        let url = db.url().to_string();
        async move {
            let store = Store::connect(&url, 2).await.expect("connect");
            store.migrate().await.expect("migrate");
            store
        }
    })
}

fn stored_answers_name_nobody(backend: Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(backend, dir.path(), "q.db");
    let store = open(&db);
    let c = config();
    let (used, pending) = block_on({
        let (store, c) = (store.clone(), c.clone());
        async move {
            let a = invite(&store, &c, "REVOCA_DELEGA_INTERMEDIARIO", "CONSULENTE_LAVORO", CLOSED_AT, CLOSED_AT)
                .await
                .expect("invite");
            let b = invite(&store, &c, "REVOCA_DELEGA_INTERMEDIARIO", "CONSULENTE_LAVORO", CLOSED_AT, CLOSED_AT)
                .await
                .expect("invite");
            answer(&store, &Actor::Cli, &c, &a.token, &answers(json!({"soddisfazione": 4, "tempi": "SI"})), CLOSED_AT)
                .await
                .expect("answer");
            (a, b)
        }
    });
    assert!(used.link.starts_with("https://portale.example.it/questionario#t="), "{}", used.link);
    let forbidden = [
        used.token.clone(),
        pending.token.clone(),
        "INPS.7000.2026".into(),
        "VRDGPP80A41H501Y".into(),
        CLOSED_AT.to_string(),
        "2026-11-25".into(),
    ];
    let allowed_days = ["2026-12-25"]; // an invitation's last valid day: a day, and 30 days after the close
    for table in ["questionnaire_invitations", "questionnaire_answers"] {
        let rows = common::sql(db.url(), &format!("SELECT * FROM {table}"));
        assert!(!rows.is_empty(), "{table} is empty");
        for value in rows.iter().flatten() {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for f in &forbidden {
                assert!(!text.contains(f.as_str()), "{table} holds `{f}`: {text}");
            }
            assert!(!matches!(value, Value::Number(_)), "{table} holds a number (an id or an instant): {text}");
            if text.len() == 10 && text.as_bytes()[4] == b'-' && !allowed_days.contains(&text.as_str()) {
                panic!("{table} holds a date finer than the month: {text}");
            }
        }
    }
    let answers_rows = common::sql(db.url(), "SELECT task, categoria, mese, risposte FROM questionnaire_answers");
    assert_eq!(answers_rows.len(), 1);
    assert_eq!(answers_rows[0][0], json!("REVOCA_DELEGA_INTERMEDIARIO"));
    assert_eq!(answers_rows[0][1], json!("CONSULENTE_LAVORO"));
    assert_eq!(answers_rows[0][2], json!("2026-11"));
    // The used invitation is gone: one left, the pending one.
    assert_eq!(common::sql(db.url(), "SELECT COUNT(*) FROM questionnaire_invitations"), vec![vec![json!(1)]]);
}

fn a_link_works_once(backend: Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(backend, dir.path(), "q.db");
    let store = open(&db);
    let c = config();
    block_on(async move {
        let inv = invite(&store, &c, "T", "CONSULENTE_LAVORO", CLOSED_AT, CLOSED_AT).await.expect("invite");
        // Bad answers are refused, each naming its field, and leave the link usable.
        let err = answer(
            &store,
            &Actor::Cli,
            &c,
            &inv.token,
            &answers(json!({"soddisfazione": 9, "colore": "x"})),
            CLOSED_AT,
        )
        .await
        .expect_err("invalid");
        let AppError::Invalid(problems) = &err else { panic!("{err}") };
        let fields: Vec<_> = problems.iter().map(|p| p.error.field.as_str()).collect();
        assert_eq!(fields, ["risposte.colore", "risposte.soddisfazione"]);
        answer(&store, &Actor::Cli, &c, &inv.token, &answers(json!({"soddisfazione": 5})), CLOSED_AT)
            .await
            .expect("first use");
        let again = answer(&store, &Actor::Cli, &c, &inv.token, &answers(json!({"soddisfazione": 1})), CLOSED_AT)
            .await
            .expect_err("second use");
        assert!(matches!(&again, AppError::Conflict(m) if m.contains("già stato usato")), "{again}");
        // An expired link is refused as such.
        let old = invite(&store, &c, "T", "CONSULENTE_LAVORO", CLOSED_AT, CLOSED_AT).await.expect("invite");
        let late = CLOSED_AT + 31 * 86_400_000;
        let expired = answer(&store, &Actor::Cli, &c, &old.token, &answers(json!({"tempi": "NO"})), late)
            .await
            .expect_err("late");
        assert!(matches!(&expired, AppError::Conflict(m) if m.contains("scaduto")), "{expired}");
        assert_eq!(store.questionnaire_purge(&smart_task::domain::time::iso_date(late)).await.expect("purge"), 1);
        assert_eq!(results(&store, &Actor::Cli, &c).await.expect("results").gruppi_non_mostrati, 1);
    });
}

fn small_groups_are_withheld(backend: Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(backend, dir.path(), "q.db");
    let store = open(&db);
    let c = config();
    block_on(async move {
        let answer_as = |task: &'static str, v: Value| {
            let (store, c) = (store.clone(), c.clone());
            async move {
                let inv = invite(&store, &c, task, "CONSULENTE_LAVORO", CLOSED_AT, CLOSED_AT).await.expect("invite");
                answer(&store, &Actor::Cli, &c, &inv.token, &answers(v), CLOSED_AT).await.expect("answer");
            }
        };
        for v in [json!({"soddisfazione": 5, "tempi": "SI"}), json!({"soddisfazione": 5}), json!({"tempi": "NO"})] {
            answer_as("GRANDE", v).await;
        }
        for v in [json!({"soddisfazione": 1}), json!({"soddisfazione": 2})] {
            answer_as("PICCOLO", v).await;
        }
        let r = results(&store, &Actor::Cli, &c).await.expect("results");
        assert_eq!(r.gruppi_non_mostrati, 1, "{r:?}");
        assert_eq!(r.gruppi.len(), 1, "{r:?}");
        let g = &r.gruppi[0];
        assert_eq!((g.task.as_str(), g.mese.as_str(), g.risposte), ("GRANDE", "2026-11", 3));
        assert_eq!(
            serde_json::to_value(&g.domande).expect("json"),
            json!({
                "soddisfazione": {"5": 2}, "tempi": {"NO": 1, "SI": 1}
            })
        );
    });
}
