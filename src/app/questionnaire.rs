//! The satisfaction questionnaire: invitations (a one-time token whose SHA-256 alone is stored, with the task,
//! the requester's category and the month — nothing that names the request or the requester), answers checked
//! against the configured questions and stored in the transaction that deletes the invitation, and the results
//! per (task, category, month), only for groups of at least `gruppo_minimo` answers.

use std::collections::BTreeMap;

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Actor, AppError};
use crate::config::{QuestionKind, QuestionnaireConfig};
use crate::domain::request::FieldError;
use crate::domain::time::{Millis, iso_date};
use crate::intake::IntakeError;
use crate::store::Store;

/// A new invitation: the token goes into the link only, never into a log, a metric or the database.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub token: String,
    /// `link_base#t=TOKEN`: the token in the fragment, which browsers never send to a server.
    pub link: String,
}

/// The category of a requester: an intermediary's registered category, else the requester's profile.
pub fn category(profilo: &str, intermediary_category: Option<&str>) -> String {
    match (profilo, intermediary_category) {
        ("INTERMEDIARIO", Some(c)) => c.to_string(),
        (p, _) => p.to_string(),
    }
}

/// Whether a requester of that category is invited.
pub fn invited(config: &QuestionnaireConfig, categoria: &str) -> bool {
    config.categorie.iter().any(|c| c == categoria)
}

fn random_hex(bytes: usize) -> Result<String, AppError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AppError::Conflict("generatore casuale non disponibile: riprovare".into()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYY-MM` of an instant in the configured zone.
pub fn month(at: Millis) -> String {
    iso_date(at)[..7].to_string()
}

/// `YYYY-MM` of the month before the one of `at`: the metrics show this month and the last.
pub fn previous_month(at: Millis) -> String {
    let this = month(at);
    let (year, month) = (this[..4].parse::<i32>().unwrap_or(0), this[5..].parse::<u32>().unwrap_or(1));
    if month == 1 { format!("{:04}-12", year - 1) } else { format!("{year:04}-{:02}", month - 1) }
}

/// Creates the invitation of a closed request of `task` by a requester of `categoria`, closed at `closed_at`;
/// valid for `validita_giorni` from `now`. The stored row has the token's hash, the task, the category, the
/// month of the close and the last valid day.
pub async fn invite(
    store: &Store,
    config: &QuestionnaireConfig,
    task: &str,
    categoria: &str,
    closed_at: Millis,
    now: Millis,
) -> Result<Invitation, AppError> {
    let token = random_hex(32)?;
    let last_day = iso_date(now + i64::from(config.validita_giorni) * 86_400_000);
    store.questionnaire_invite(&token_hash(&token), task, categoria, &month(closed_at), &last_day).await?;
    Ok(Invitation { link: format!("{}#t={token}", config.link_base), token })
}

fn invalid(field: String, problem: impl Into<String>) -> IntakeError {
    IntakeError {
        source_name: "risposte".into(),
        position: "questionario".into(),
        index: None,
        error: FieldError::new(field, problem),
    }
}

/// Checks the answers against the questions: every problem, each naming its field (`risposte.<id>`, which the
/// API gives as the JSON Pointer `/risposte/<id>`). Questions left out are allowed (answering is voluntary);
/// at least one answer is needed.
pub fn check_answers(config: &QuestionnaireConfig, risposte: &Map<String, Value>) -> Result<(), AppError> {
    let mut problems = Vec::new();
    for (id, value) in risposte {
        let Some(q) = config.domande.iter().find(|q| &q.id == id) else {
            // The caller's key is echoed only when it is shaped like a question id (bounded, no separators).
            let (field, known) = if is_question_id(id) {
                (format!("risposte.{id}"), "domanda sconosciuta")
            } else {
                ("risposte".to_string(), "una chiave non è l'id di una domanda")
            };
            let ids: Vec<&str> = config.domande.iter().map(|q| q.id.as_str()).collect();
            problems.push(invalid(field, format!("{known} (domande: {})", ids.join(", "))));
            continue;
        };
        let field = format!("risposte.{id}");
        match &q.kind {
            QuestionKind::Scala => {
                if !value.as_i64().is_some_and(|v| (1..=5).contains(&v)) {
                    problems.push(invalid(field, "un numero intero da 1 a 5"));
                }
            }
            QuestionKind::Scelta { opzioni } => {
                if !value.as_str().is_some_and(|v| opzioni.iter().any(|o| o == v)) {
                    problems.push(invalid(field, format!("una delle opzioni: {}", opzioni.join(", "))));
                }
            }
        }
    }
    if risposte.is_empty() {
        problems.push(invalid("risposte".into(), "almeno una risposta"));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(AppError::Invalid(problems)),
    }
}

/// A question id as the configuration allows them.
fn is_question_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Who may answer: the requester (through the portal, which holds the link's token) or the command line.
/// Who answers is not recorded: the answer set has no actor column.
fn may_answer(actor: &Actor) -> Result<(), AppError> {
    match actor {
        Actor::Richiedente { .. } | Actor::Cli => Ok(()),
        _ => Err(AppError::Forbidden("il questionario è compilato dal richiedente invitato".into())),
    }
}

/// Who may read the results: the people who run the service, or the command line.
fn may_read_results(actor: &Actor) -> Result<(), AppError> {
    match actor {
        Actor::Operazioni { .. } | Actor::Cli => Ok(()),
        _ => Err(AppError::Forbidden("i risultati del questionario sono riservati a chi gestisce il servizio".into())),
    }
}

/// Stores the answers of the invitation `token`, once: the invitation is deleted in the same transaction. A
/// token used already, expired or unknown is refused (409) without saying which of the first and the last.
pub async fn answer(
    store: &Store,
    actor: &Actor,
    config: &QuestionnaireConfig,
    token: &str,
    risposte: &Map<String, Value>,
    now: Millis,
) -> Result<(), AppError> {
    may_answer(actor)?;
    check_answers(config, risposte)?;
    let (hash, today) = (token_hash(token), iso_date(now));
    let text = serde_json::to_string(risposte)?;
    match store.questionnaire_answer(&hash, &today, &random_hex(16)?, &text).await? {
        Some(_) => Ok(()),
        None if store.questionnaire_invitation_expired(&hash, &today).await? => {
            Err(AppError::Conflict("il link del questionario è scaduto".into()))
        }
        None => Err(AppError::Conflict("il link del questionario è già stato usato o non è valido".into())),
    }
}

/// The results of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupResult {
    pub task: String,
    pub categoria: String,
    /// `YYYY-MM`.
    pub mese: String,
    pub risposte: u64,
    /// Per question, the count of each value given (questions nobody in the group answered are left out).
    pub domande: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The results: groups of at least `gruppo_minimo` answer sets, and how many groups were withheld (not their
/// sizes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Results {
    pub gruppo_minimo: u32,
    pub gruppi: Vec<GroupResult>,
    pub gruppi_non_mostrati: u64,
}

/// The aggregate of every stored answer set, for `actor`.
pub async fn results(store: &Store, actor: &Actor, config: &QuestionnaireConfig) -> Result<Results, AppError> {
    may_read_results(actor)?;
    aggregate(store, config, None).await
}

/// The aggregate of the answer sets of `since_month` (`YYYY-MM`) and later, or of all: what the metrics show
/// (the last two months, so the series stay few).
pub async fn aggregate(
    store: &Store,
    config: &QuestionnaireConfig,
    since_month: Option<&str>,
) -> Result<Results, AppError> {
    let mut groups: BTreeMap<(String, String, String), GroupResult> = BTreeMap::new();
    for row in store.questionnaire_answers(since_month).await? {
        let answers: Map<String, Value> = serde_json::from_str(&row.risposte)?;
        let group =
            groups.entry((row.task.clone(), row.categoria.clone(), row.mese.clone())).or_insert_with(|| GroupResult {
                task: row.task,
                categoria: row.categoria,
                mese: row.mese,
                risposte: 0,
                domande: BTreeMap::new(),
            });
        group.risposte += 1;
        for (id, value) in answers {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            *group.domande.entry(id).or_default().entry(value).or_default() += 1;
        }
    }
    let min = u64::from(config.gruppo_minimo);
    let (shown, withheld): (Vec<_>, Vec<_>) = groups.into_values().partition(|g| g.risposte >= min);
    Ok(Results { gruppo_minimo: config.gruppo_minimo, gruppi: shown, gruppi_non_mostrati: withheld.len() as u64 })
}
