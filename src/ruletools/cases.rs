//! `smart-taskd rules test`: the `cases.yaml` of each task folder, run against the task's rule like
//! `opa test` runs a policy's tests. Rule authors (business analysts) write cases as *a world, a request and
//! the expected outcome*; the runner decides each request exactly as the daemon would — same intake, same
//! sandboxed evaluator, facts shaped like the store returns them — and reports what differs.
//!
//! # The `cases.yaml` format
//!
//! ```yaml
//! today: 2026-06-01          # the decision date (ctx.today) of every case; optional, default: the real today
//! shared_world: world.yaml   # optional: the world every task's cases may share, at the rules directory's root
//! world:                     # this file's reference data, the `facts import` format (version optional, default
//!                            # 1), upserted by key over the shared world
//!   sedi: [...]
//!   aziende: [...]
//!   persone: [...]
//!   intermediari: [...]
//!   deleghe: [...]
//!   contatti: [...]
//! cases:
//!   - name: "intermediario che rinuncia: accolta"   # unique in the file
//!     today: 2026-07-01      # optional: this case's decision date
//!     world: {...}           # optional: records upserted by key over the shared world, for this case only
//!                            # (sedi by codice, aziende by matricola, persone and intermediari by cf,
//!                            #  deleghe and contatti by id)
//!     open_requests: ["7000.2026.0000009"]  # optional: earlier open requests of the same task and subject
//!     request:               # as submitted (task optional: default, the folder's task)
//!       richiedente_cf: VRDGPP80A41H501Y
//!       ...
//!     expect:
//!       esito: accolta       # accolta | non_accolta | rinvio
//!       motivi: [RDI-02, RDI-05]   # the exact reason codes, in order (none for accolta; required otherwise)
//!       effetti:             # optional: the exact number of effects; each entry must match the actual
//!         - { tipo: revoke_delegation, delegation_id: D-1 }   # effect at its index on the keys it gives
//! ```
//!
//! Unknown keys are refused everywhere. A file is checked whole before any case runs (YAML, reason codes
//! against the task's catalogue, dates, the world's records and references, unique names), and every problem
//! is reported with the file, line and column: a broken file is one failure, like a compile error.
//!
//! A request that does not pass intake fails its case with the intake errors; a rule error fails its case with
//! the error. Facts are what `SqliteStore::load_facts` would return after importing the world (deleghe ordered
//! by `data_inizio, id`, contatti by `id`, every subject at version 0), with no fallback to a database.
//!
//! `ctx.now` is noon of the case's `today` in the configured `time_zone`; the request gets the protocol number `CASE.<n>` and, for
//! GEN-04, the `open_requests` are older than it.
//!
//! Coverage: a reason code is *reached* when some case's decision has it as a failed check or a referral.
//! It is reported, not enforced; the run fails (exit 2) on a failed case, an invalid file, or a task folder
//! without `cases.yaml`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::domain::closing::{ClaimedRequest, Evaluation};
use crate::domain::decision::{CheckRecord, Effect, Outcome, Reason, RuleFailure};
use crate::domain::facts::{
    Azienda, Contatto, Delega, IMPORT_VERSION, ImportFile, Intermediario, OpenRequest, Persona, Sede, Subject,
    SubjectFacts,
};
use crate::domain::time::{Millis, is_iso_date, noon};
use crate::intake;
use crate::rules::{Evaluator, FactsView, LoadError, RuleSet, TaskRule, load_rule_set};

/// The name of the cases file in a task folder.
pub const CASES_FILE: &str = "cases.yaml";

/// What to run.
#[derive(Debug, Clone)]
pub struct CaseOptions {
    /// Only this task's cases (all tasks when `None`).
    pub task: Option<String>,
    /// The sede a request takes when its matricola is not in the world (`intake.sede_predefinita`).
    pub sede_predefinita: String,
    /// The instant used when a file gives no `today`.
    pub now: Millis,
}

/// A problem that stops the whole run (as opposed to a failed case or an invalid cases file).
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error(transparent)]
    Rules(#[from] LoadError),
    #[error("--task `{task}`: no such task in {} (known: {known})", dir.display())]
    UnknownTask { task: String, dir: PathBuf, known: String },
}

// ---------------------------------------------------------------------------------------------------------
// The file, as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(default)]
    today: Option<Spanned<String>>,
    /// A world shared by the cases of every task: a file at the root of the rules directory (`world.yaml`),
    /// under this file's own `world`.
    #[serde(default)]
    shared_world: Option<Spanned<String>>,
    #[serde(default)]
    world: Option<Spanned<WorldSpec>>,
    cases: Spanned<Vec<Spanned<CaseSpec>>>,
}

/// The reference-data format of `facts import`, with `version` optional (cases are always version 1 today).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorldSpec {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    sedi: Vec<Sede>,
    #[serde(default)]
    aziende: Vec<Azienda>,
    #[serde(default)]
    persone: Vec<Persona>,
    #[serde(default)]
    intermediari: Vec<Intermediario>,
    #[serde(default)]
    deleghe: Vec<Delega>,
    #[serde(default)]
    contatti: Vec<Contatto>,
}

impl WorldSpec {
    fn into_import(self) -> ImportFile {
        ImportFile {
            version: self.version.unwrap_or(IMPORT_VERSION),
            snapshot: None,
            sedi: self.sedi,
            aziende: self.aziende,
            persone: self.persone,
            intermediari: self.intermediari,
            deleghe: self.deleghe,
            contatti: self.contatti,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: Spanned<String>,
    #[serde(default)]
    today: Option<Spanned<String>>,
    #[serde(default)]
    world: Option<Spanned<WorldSpec>>,
    #[serde(default)]
    open_requests: Vec<Spanned<String>>,
    request: Spanned<Map<String, Value>>,
    expect: Spanned<ExpectSpec>,
    /// In shadow mode: what the candidate must give, where it differs from `expect` (absent: the same).
    #[serde(default)]
    candidate: Option<Spanned<ExpectSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    esito: Spanned<Outcome>,
    #[serde(default)]
    motivi: Vec<Spanned<String>>,
    #[serde(default)]
    effetti: Option<Vec<Spanned<Map<String, Value>>>>,
    /// A quesito closed by the rule's standard answer: the answer's code.
    #[serde(default)]
    risposta: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------------------
// The file, checked: ready to run.

/// One case, checked, with its world merged.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub line: u64,
    pub today: Option<String>,
    pub world: ImportFile,
    pub open_requests: Vec<String>,
    pub request: Map<String, Value>,
    pub expected: Expected,
    /// What the task's shadow candidate must give (`expected` unless the case says otherwise); `None` without a
    /// candidate.
    pub candidate_expected: Option<Expected>,
}

impl Case {
    /// The decision instant of this case: noon of its `today` in the configured zone, else `default`.
    pub fn now(&self, default: Millis) -> Millis {
        self.today.as_deref().and_then(noon).unwrap_or(default)
    }
}

/// The checked cases of one task folder (for harnesses that run them elsewhere, e.g. on a real store).
pub fn task_cases(rule: &TaskRule) -> Result<Vec<Case>, String> {
    load_cases(&rule.dir.join("cases.yaml"), rule).map_err(|e| match e {
        FileProblem::Missing => format!("{}: no cases.yaml", rule.dir.display()),
        FileProblem::Invalid(problems) => problems.join("\n"),
    })
}

/// Why a task folder's cases could not run.
enum FileProblem {
    Missing,
    Invalid(Vec<String>),
}

/// Collects the problems of one file, each as `path:line:col: message`.
struct Problems<'a> {
    path: &'a Path,
    found: Vec<String>,
}

impl Problems<'_> {
    fn at(&mut self, loc: &serde_saphyr::Location, message: impl std::fmt::Display) {
        self.found.push(format!("{}:{}:{}: {message}", self.path.display(), loc.line(), loc.column()));
    }
}

/// Reads and checks a task's `cases.yaml`: every problem of the file, or the cases ready to run.
fn load_cases(path: &Path, rule: &TaskRule) -> Result<Vec<Case>, FileProblem> {
    if !path.exists() {
        return Err(FileProblem::Missing);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| FileProblem::Invalid(vec![format!("cannot read {}: {e}", path.display())]))?;
    let file: CasesFile = serde_saphyr::from_str(&text).map_err(|e| {
        // The library's message carries the line, the column and a snippet; the location is repeated up front
        // so that the first line alone says where to look.
        let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
        FileProblem::Invalid(vec![format!("{}{at}: {e}", path.display())])
    })?;
    let mut problems = Problems { path, found: Vec::new() };

    if let Some(today) = &file.today
        && !is_iso_date(&today.value)
    {
        problems.at(&today.referenced, format!("`today`: `{}` is not a date (expected YYYY-MM-DD)", today.value));
    }
    let empty = || ImportFile { version: IMPORT_VERSION, ..Default::default() };
    // The rules directory's shared world, if the file uses one; its own `world` is upserted over it by key.
    let base = match &file.shared_world {
        Some(name) => match read_shared_world(path, &name.value) {
            Ok(world) => world,
            Err(e) => {
                problems.at(&name.referenced, format!("`shared_world`: {e}"));
                empty()
            }
        },
        None => empty(),
    };
    // The file's world, normalised and checked; on a problem the cases run their checks on an empty one, so
    // that the problem is reported once and not again for every case.
    let (loc, own) = match file.world {
        Some(world) => (Some(world.referenced), world.value.into_import()),
        None => (file.shared_world.as_ref().map(|n| n.referenced), empty()),
    };
    let mut shared = merge(&base, own);
    if let Some(loc) = loc
        && let Err(e) = shared.normalise_and_check().map_err(|e| e.to_string()).and_then(|()| check_references(&shared))
    {
        problems.at(&loc, format!("`world`: {e}"));
        shared = empty();
    }
    if file.cases.value.is_empty() {
        problems.at(&file.cases.referenced, "`cases` is empty: every task ships at least one case");
    }

    let mut names = HashSet::new();
    let mut cases = Vec::new();
    for (i, spanned) in file.cases.value.into_iter().enumerate() {
        let loc = spanned.referenced;
        let spec = spanned.value;
        let name = spec.name.value.trim().to_string();
        // Problems name the case the way the analyst wrote it.
        let label = if name.is_empty() { format!("case {}", i + 1) } else { format!("case \"{name}\"") };
        if name.is_empty() {
            problems.at(&spec.name.referenced, format!("{label}: `name` is empty: say what the case shows"));
        } else if !names.insert(name.clone()) {
            problems.at(&spec.name.referenced, format!("{label}: another case is already named `{name}`"));
        }
        if let Some(today) = &spec.today
            && !is_iso_date(&today.value)
        {
            problems.at(
                &today.referenced,
                format!("{label}: `today`: `{}` is not a date (expected YYYY-MM-DD)", today.value),
            );
        }
        let world = match spec.world {
            Some(overlay) => {
                let wloc = overlay.referenced;
                let mut overlay = overlay.value.into_import();
                match overlay.normalise_and_check() {
                    Ok(()) => {
                        let merged = merge(&shared, overlay);
                        if let Err(e) = check_references(&merged) {
                            problems.at(&wloc, format!("{label}: `world` (merged with the shared world): {e}"));
                        }
                        merged
                    }
                    Err(e) => {
                        problems.at(&wloc, format!("{label}: `world`: {e}"));
                        shared.clone()
                    }
                }
            }
            None => shared.clone(),
        };
        for open in &spec.open_requests {
            if open.value.trim().is_empty() {
                problems.at(&open.referenced, format!("{label}: `open_requests`: expected a protocol number"));
            }
        }
        let mut request = spec.request.value;
        match request.get("task") {
            None => {
                request.insert("task".into(), rule.id.clone().into());
            }
            Some(Value::String(t)) if t == &rule.id => {}
            Some(other) => problems.at(
                &spec.request.referenced,
                format!(
                    "{label}: `request.task` is {other}, but this is the cases file of {}: move the case to that \
                     task's folder (or leave `task` out)",
                    rule.id
                ),
            ),
        }
        let expected = check_expect(spec.expect, "expect", &rule.id, &rule.reasons, &label, &mut problems);
        let candidate_expected = match (&rule.candidate, spec.candidate) {
            (Some(c), Some(own)) => Some(check_expect(own, "candidate", &rule.id, &c.reasons, &label, &mut problems)),
            (Some(_), None) => Some(expected.clone()),
            (None, Some(own)) => {
                problems.at(
                    &own.referenced,
                    format!(
                        "{label}: `candidate`: {} has no shadow candidate (task.yaml `mode: shadow` with \
                         `candidate: FILE`): remove it, or put the task in shadow mode",
                        rule.id
                    ),
                );
                None
            }
            (None, None) => None,
        };
        cases.push(Case {
            name,
            line: loc.line(),
            today: spec.today.map(|t| t.value).or_else(|| file.today.as_ref().map(|t| t.value.clone())),
            world,
            open_requests: spec.open_requests.into_iter().map(|o| o.value.trim().to_string()).collect(),
            request,
            expected,
            candidate_expected,
        });
    }
    if problems.found.is_empty() { Ok(cases) } else { Err(FileProblem::Invalid(problems.found)) }
}

/// Checks an expectation (under `key`: `expect`, or `candidate` for a shadow candidate) against the catalogue
/// of the version it is for and the outcome it names.
fn check_expect(
    spec: Spanned<ExpectSpec>,
    key: &str,
    task: &str,
    reasons: &std::collections::BTreeMap<String, String>,
    label: &str,
    problems: &mut Problems,
) -> Expected {
    let loc = spec.referenced;
    let spec = spec.value;
    let esito = spec.esito.value;
    for code in &spec.motivi {
        if !reasons.contains_key(&code.value) {
            let known: Vec<&str> = reasons.keys().map(String::as_str).collect();
            problems.at(
                &code.referenced,
                format!(
                    "{label}: `{key}.motivi`: `{}` is not in the reason catalogue of {task} (known: {})",
                    code.value,
                    known.join(", ")
                ),
            );
        }
    }
    if let Some(code) = &spec.risposta {
        if esito != Outcome::Accolta {
            problems.at(
                &code.referenced,
                format!("{label}: `{key}.risposta`: only an accolta (an answered quesito) has one"),
            );
        } else if !reasons.contains_key(&code.value) {
            problems.at(
                &code.referenced,
                format!("{label}: `{key}.risposta`: `{}` is not in the catalogue of {task}", code.value),
            );
        }
    }
    match esito {
        Outcome::Accolta if !spec.motivi.is_empty() => problems.at(
            &loc,
            format!("{label}: `{key}`: an accolta has no motivi: remove them, or expect non_accolta or rinvio"),
        ),
        Outcome::NonAccolta | Outcome::Rinvio if spec.motivi.is_empty() => problems.at(
            &loc,
            format!("{label}: `{key}.motivi`: a {} needs its reason codes, e.g. motivi: [GEN-01]", esito.as_str()),
        ),
        Outcome::NonAccolta if spec.effetti.as_ref().is_some_and(|e| !e.is_empty()) => problems
            .at(&loc, format!("{label}: `{key}.effetti`: a non_accolta has no effects (the daemon applies none)")),
        _ => {}
    }
    Expected {
        esito,
        motivi: spec.motivi.into_iter().map(|m| m.value).collect(),
        effetti: spec.effetti.map(|e| e.into_iter().map(|m| m.value).collect()),
        risposta: spec.risposta.map(|r| r.value),
    }
}

/// Reads the shared world `name` of the rules directory that holds the task folder of `cases`: a plain file name
/// (no directories: the rules directory is one bundle), in the `facts import` format.
fn read_shared_world(cases: &Path, name: &str) -> Result<ImportFile, String> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!(
            "`{name}`: expected the name of a file at the root of the rules directory (e.g. world.yaml)"
        ));
    }
    let Some(dir) = cases.parent().and_then(Path::parent) else {
        return Err("the cases file is not in a task folder of a rules directory".into());
    };
    let file = dir.join(name);
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let world: WorldSpec = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
        format!("{}{at}: {e}", file.display())
    })?;
    Ok(world.into_import())
}

/// Upserts `over` into `base` by key (the same keys `facts import` uses).
fn upsert<T>(base: &mut Vec<T>, over: Vec<T>, key: impl Fn(&T) -> &str) {
    for record in over {
        match base.iter().position(|b| key(b) == key(&record)) {
            Some(i) => base[i] = record,
            None => base.push(record),
        }
    }
}

/// The shared world with a case's records upserted over it.
fn merge(shared: &ImportFile, overlay: ImportFile) -> ImportFile {
    let mut w = shared.clone();
    upsert(&mut w.sedi, overlay.sedi, |s| &s.codice);
    upsert(&mut w.aziende, overlay.aziende, |a| &a.matricola);
    upsert(&mut w.persone, overlay.persone, |p| &p.cf);
    upsert(&mut w.intermediari, overlay.intermediari, |i| &i.cf);
    upsert(&mut w.deleghe, overlay.deleghe, |d| &d.id);
    upsert(&mut w.contatti, overlay.contatti, |c| &c.id);
    w
}

/// The references the store checks at import (`check_references` in the SQLite store), so that a case's
/// world is one the daemon could actually hold.
fn check_references(w: &ImportFile) -> Result<(), String> {
    for (i, a) in w.aziende.iter().enumerate() {
        if !w.sedi.iter().any(|s| s.codice == a.sede) {
            return Err(format!(
                "aziende[{i}] (matricola {}): field `sede`: sede `{}` is not in the world",
                a.matricola, a.sede
            ));
        }
    }
    for (i, d) in w.deleghe.iter().enumerate() {
        if let Some(p) = &d.padre
            && !w.deleghe.iter().any(|x| &x.id == p)
        {
            return Err(format!("deleghe[{i}] (id {}): field `padre`: delega `{p}` is not in the world", d.id));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Running a case.

/// The facts the store would return for `world`: an entry for every subject it mentions, plus the request's
/// open-requests subject.
fn facts_of(world: &ImportFile, open: Subject, open_requests: Vec<OpenRequest>) -> HashMap<Subject, SubjectFacts> {
    let mut facts: HashMap<Subject, SubjectFacts> =
        world.touched_subjects().into_iter().map(|s| (s, SubjectFacts::default())).collect();
    for s in &world.sedi {
        facts.entry(Subject::Sede(s.codice.clone())).or_default().sede = Some(s.clone());
    }
    for a in &world.aziende {
        facts.entry(Subject::Azienda(a.matricola.clone())).or_default().azienda = Some(a.clone());
    }
    for p in &world.persone {
        facts.entry(Subject::Persona(p.cf.clone())).or_default().persona = Some(p.clone());
    }
    for i in &world.intermediari {
        facts.entry(Subject::Persona(i.cf.clone())).or_default().intermediario = Some(i.clone());
    }
    let mut deleghe: Vec<&Delega> = world.deleghe.iter().collect();
    deleghe.sort_by(|a, b| (&a.data_inizio, &a.id).cmp(&(&b.data_inizio, &b.id)));
    for d in deleghe {
        facts.entry(Subject::DelegheAzienda(d.matricola.clone())).or_default().deleghe.push(d.clone());
        facts.entry(Subject::DelegheDelegato(d.delegato_cf.clone())).or_default().deleghe.push(d.clone());
    }
    let mut contatti: Vec<&Contatto> = world.contatti.iter().collect();
    contatti.sort_by(|a, b| a.id.cmp(&b.id));
    for c in contatti {
        facts.entry(Subject::ContattiTitolare(c.titolare_cf.clone())).or_default().contatti.push(c.clone());
        if let Some(m) = &c.matricola {
            facts.entry(Subject::ContattiAzienda(m.clone())).or_default().contatti.push(c.clone());
        }
    }
    facts.entry(open).or_default().open_requests = open_requests;
    facts
}

/// Which version of a task's rule a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Active,
    /// The shadow candidate, decided alone as if it were active.
    Candidate,
}

/// Decides one case's request as the daemon would, from intake to the rule's decision.
fn decide(
    case: &Case,
    number: usize,
    rule: &TaskRule,
    rules: &RuleSet,
    evaluator: &Evaluator,
    options: &CaseOptions,
    version: Run,
) -> Actual {
    let now = case.now(options.now);
    let new = match intake::validate(case.request.clone(), rules) {
        Ok(new) => new,
        Err(errors) => {
            return Actual {
                intake_errors: errors
                    .into_iter()
                    .map(|e| IntakeProblem { field: e.field, problem: e.problem })
                    .collect(),
                ..Actual::default()
            };
        }
    };
    // Earlier open requests get the lower ids: the host counts only requests older than the one deciding.
    let open_requests: Vec<OpenRequest> = case
        .open_requests
        .iter()
        .enumerate()
        .map(|(i, protocollo)| OpenRequest {
            id: i as i64 + 1,
            protocollo: protocollo.clone(),
            creata_il: now - 60_000 * (case.open_requests.len() - i) as i64,
        })
        .collect();
    // As intake routes it: the sede of the position, else the requester's (an intermediary's), else the default.
    let sede = match &new.envelope.matricola {
        Some(m) => case.world.aziende.iter().find(|a| &a.matricola == m).map(|a| a.sede.clone()),
        None => {
            case.world.intermediari.iter().find(|i| i.cf == new.envelope.richiedente_cf).and_then(|i| i.sede.clone())
        }
    }
    .unwrap_or_else(|| options.sede_predefinita.clone());
    let claimed = ClaimedRequest {
        id: open_requests.len() as i64 + 1,
        protocollo: format!("CASE.{number}"),
        task: new.envelope.task.clone(),
        soggetto: new.soggetto.clone(),
        sede,
        payload: new.payload,
        contatti: new.envelope.contatti.clone(),
        token: 1,
        failures: 0,
        creata_il: now,
        taken_over: false,
    };
    let open = Subject::Open { task: claimed.task.clone(), soggetto: claimed.soggetto.clone() };
    let view = Arc::new(FactsView::new(facts_of(&case.world, open, open_requests), None));
    let evaluation = match version {
        Run::Active => evaluator.evaluate(rule, &claimed, view, now),
        Run::Candidate => match evaluator.evaluate_candidate(rule, &claimed, view, now) {
            Some(evaluation) => evaluation,
            None => return Actual::default(),
        },
    };
    match evaluation {
        Evaluation::Decided(d) => Actual {
            // In dry-run mode the rule's own outcome is what its cases state (an operator closes the request).
            esito: Some(d.trace.dry_run.unwrap_or(d.outcome)),
            motivi: d.reasons,
            effetti: d.effects,
            checks: d.trace.checks,
            risposta: d.trace.risposta,
            ..Actual::default()
        },
        Evaluation::Failed(f) => Actual { error: Some(f), ..Actual::default() },
    }
}

/// A scalar's text, so that `delegation_id: 123` in YAML matches `"123"` from the rule.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn same_value(expected: &Value, actual: &Value) -> bool {
    expected == actual || matches!((scalar_text(expected), scalar_text(actual)), (Some(a), Some(b)) if a == b)
}

/// A value written the way an analyst writes YAML: `{tipo: revoke_delegation, delegation_id: D-1}`.
fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            // `tipo` first: it says what the rest is about.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| (k.as_str() != "tipo", k.as_str()));
            let parts: Vec<String> = keys.iter().map(|k| format!("{k}: {}", inline(&m[k.as_str()]))).collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Value::Null => "null".into(),
        other => scalar_text(other).unwrap_or_default(),
    }
}

fn codes_text(codes: &[String]) -> String {
    if codes.is_empty() { "(none)".into() } else { codes.join(", ") }
}

/// What differs between the expectation and what happened, one sentence each; empty when the case passes.
fn compare(expected: &Expected, actual: &Actual) -> Vec<String> {
    let mut out = Vec::new();
    if !actual.intake_errors.is_empty() {
        out.push("the request does not pass intake".to_string());
        return out;
    }
    if let Some(f) = &actual.error {
        out.push(format!("the rule failed ({}) instead of deciding", f.kind.as_str()));
        return out;
    }
    let Some(esito) = actual.esito else {
        out.push("no decision".into());
        return out;
    };
    if esito != expected.esito {
        out.push(format!("esito: expected {}, actual {}", expected.esito.as_str(), esito.as_str()));
    }
    let actual_codes: Vec<String> = actual.motivi.iter().map(|r| r.codice.clone()).collect();
    if actual_codes != expected.motivi {
        out.push(format!("motivi: expected {}, actual {}", codes_text(&expected.motivi), codes_text(&actual_codes)));
    }
    if actual.risposta != expected.risposta {
        let text = |r: &Option<String>| r.clone().unwrap_or_else(|| "none".into());
        out.push(format!("risposta: expected {}, actual {}", text(&expected.risposta), text(&actual.risposta)));
    }
    if let Some(effetti) = &expected.effetti {
        let actual_effects: Vec<Value> =
            actual.effetti.iter().map(|e| serde_json::to_value(e).unwrap_or(Value::Null)).collect();
        if effetti.len() != actual_effects.len() {
            out.push(format!("effetti: expected {}, actual {}", effetti.len(), actual_effects.len()));
        }
        for (i, (want, got)) in effetti.iter().zip(&actual_effects).enumerate() {
            for (key, value) in want {
                match got.get(key) {
                    Some(g) if same_value(value, g) => {}
                    Some(g) => {
                        out.push(format!("effetti[{i}].{key}: expected {}, actual {}", inline(value), inline(g)))
                    }
                    None => out.push(format!("effetti[{i}].{key}: expected {}, actual (no such key)", inline(value))),
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// The report.

/// Whether a case passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
}

/// What a case expects.
#[derive(Debug, Clone, Serialize)]
pub struct Expected {
    pub esito: Outcome,
    pub motivi: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effetti: Option<Vec<Map<String, Value>>>,
    /// The standard answer's code of a quesito the rule answers (None: not answered by the rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risposta: Option<String>,
}

/// An intake error of a case's request.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeProblem {
    pub field: String,
    pub problem: String,
}

/// What happened: a decision (esito, reasons, effects, the checks that ran), a rule failure, or intake errors.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Actual {
    pub esito: Option<Outcome>,
    pub motivi: Vec<Reason>,
    pub effetti: Vec<Effect>,
    pub checks: Vec<CheckRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risposta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RuleFailure>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intake_errors: Vec<IntakeProblem>,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub task: String,
    pub name: String,
    pub file: PathBuf,
    pub line: u64,
    pub status: Status,
    pub expected: Expected,
    pub actual: Actual,
    /// What differs, one sentence each (empty when the case passes).
    pub differences: Vec<String>,
}

/// A task whose cases could not run: no `cases.yaml`, or an invalid one. Each counts as one failure.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub task: String,
    pub file: PathBuf,
    /// `missing` or `invalid`.
    pub problem: &'static str,
    /// For an invalid file: every problem, as `file:line:col: message`.
    pub errors: Vec<String>,
}

/// Which catalogued reason codes the cases of a task reach.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub task: String,
    pub total: usize,
    pub reached: Vec<String>,
    pub not_reached: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Cases passed, the candidates' included.
    pub passed: usize,
    /// Cases failed, the candidates' included, and cases files that could not run.
    pub failed: usize,
    /// Catalogued reason codes no case reaches, over every coverage (the candidates' included).
    pub not_reached: usize,
}

/// The whole run, in task order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub cases: Vec<CaseReport>,
    pub files: Vec<FileReport>,
    pub coverage: Vec<Coverage>,
    /// The same cases run against the shadow candidates (their `candidate:` expectation, else `expect`).
    pub candidate_cases: Vec<CaseReport>,
    /// Each shadow candidate's coverage, over its catalogue (`reasons` and `candidate_reasons`).
    pub candidate_coverage: Vec<Coverage>,
    pub summary: Summary,
}

/// Runs the cases of every task (or of `options.task`) of the rules directory `dir`.
pub fn run_cases(dir: &Path, evaluator: &Evaluator, options: &CaseOptions) -> Result<Report, CasesError> {
    let rules = load_rule_set(dir, evaluator)?;
    let selected: Vec<&Arc<TaskRule>> = match &options.task {
        Some(task) => match rules.get(task) {
            Some(rule) => vec![rule],
            None => {
                let known: Vec<&str> = rules.tasks.keys().map(String::as_str).collect();
                return Err(CasesError::UnknownTask {
                    task: task.clone(),
                    dir: dir.to_path_buf(),
                    known: known.join(", "),
                });
            }
        },
        None => rules.tasks.values().collect(),
    };
    let mut report = Report::default();
    let mut number = 0;
    for rule in selected {
        let file = rule.dir.join(CASES_FILE);
        let mut reached = BTreeSet::new();
        let mut candidate_reached = BTreeSet::new();
        match load_cases(&file, rule) {
            Err(problem) => {
                let (problem, errors) = match problem {
                    FileProblem::Missing => ("missing", Vec::new()),
                    FileProblem::Invalid(errors) => ("invalid", errors),
                };
                report.files.push(FileReport { task: rule.id.clone(), file: file.clone(), problem, errors });
            }
            Ok(cases) => {
                for case in cases {
                    number += 1;
                    let actual = decide(&case, number, rule, &rules, evaluator, options, Run::Active);
                    report.cases.push(case_report(rule, &file, &case, case.expected.clone(), actual, &mut reached));
                    if let Some(expected) = case.candidate_expected.clone() {
                        let actual = decide(&case, number, rule, &rules, evaluator, options, Run::Candidate);
                        let r = case_report(rule, &file, &case, expected, actual, &mut candidate_reached);
                        report.candidate_cases.push(r);
                    }
                }
            }
        }
        report.coverage.push(coverage(&rule.id, &rule.reasons, &reached));
        if let Some(candidate) = &rule.candidate {
            report.candidate_coverage.push(coverage(&rule.id, &candidate.reasons, &candidate_reached));
        }
    }
    let all = report.cases.iter().chain(&report.candidate_cases);
    let passed = all.clone().filter(|c| c.status == Status::Ok).count();
    report.summary = Summary {
        passed,
        failed: all.count() - passed + report.files.len(),
        // A task whose cases file could not run has failed already: its codes are not counted again.
        not_reached: report
            .coverage
            .iter()
            .chain(&report.candidate_coverage)
            .filter(|c| !report.files.iter().any(|f| f.task == c.task))
            .map(|c| c.not_reached.len())
            .sum(),
    };
    Ok(report)
}

/// One case's result against one version, adding the codes its decision gives to `reached`.
fn case_report(
    rule: &TaskRule,
    file: &Path,
    case: &Case,
    expected: Expected,
    actual: Actual,
    reached: &mut BTreeSet<String>,
) -> CaseReport {
    reached.extend(actual.checks.iter().filter(|c| !c.passed).map(|c| c.codice.clone()));
    reached.extend(actual.motivi.iter().map(|r| r.codice.clone()));
    reached.extend(actual.risposta.iter().cloned());
    let differences = compare(&expected, &actual);
    let status = if differences.is_empty() { Status::Ok } else { Status::Fail };
    CaseReport {
        task: rule.id.clone(),
        name: case.name.clone(),
        file: file.to_path_buf(),
        line: case.line,
        status,
        expected,
        actual,
        differences,
    }
}

/// Which codes of a catalogue the cases reached.
fn coverage(
    task: &str,
    catalogue: &std::collections::BTreeMap<String, String>,
    reached: &BTreeSet<String>,
) -> Coverage {
    let (reached, not_reached): (Vec<String>, Vec<String>) =
        catalogue.keys().cloned().partition(|code| reached.contains(code));
    Coverage { task: task.to_string(), total: catalogue.len(), reached, not_reached }
}

impl Report {
    /// True when every case passed (the candidates' too), every task had a valid cases file, and every
    /// catalogued reason code is reached by some case: a code no case reaches is a decision no one has seen.
    pub fn all_passed(&self) -> bool {
        self.summary.failed == 0 && self.summary.not_reached == 0
    }

    /// The readable report: one line per case (a candidate's marked as such), a diff under each failure,
    /// coverage per task and candidate, the summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // In task order (the coverage list has one entry per task run): a file problem, or the task's cases.
        for task in self.coverage.iter().map(|c| c.task.as_str()) {
            self.render_task(&mut s, task);
        }
        let candidates = self.candidate_coverage.iter().map(|c| (c, " (candidate)"));
        for (c, version) in self.coverage.iter().map(|c| (c, "")).chain(candidates) {
            let _ = write!(s, "coverage {}{version}: {}/{} reason codes", c.task, c.reached.len(), c.total);
            if !c.not_reached.is_empty() {
                let _ = write!(s, "; not reached: {}", c.not_reached.join(", "));
            }
            s.push('\n');
        }
        let _ = write!(s, "{} passed, {} failed", self.summary.passed, self.summary.failed);
        if self.summary.not_reached > 0 {
            let _ = write!(s, ", {} reason code(s) not reached", self.summary.not_reached);
        }
        s.push('\n');
        s
    }

    fn render_task(&self, s: &mut String, task: &str) {
        for f in self.files.iter().filter(|f| f.task == task) {
            match f.problem {
                "missing" => {
                    let _ = writeln!(s, "FAIL {}  no cases.yaml (expected {})", f.task, f.file.display());
                }
                _ => {
                    let _ = writeln!(s, "FAIL {}  invalid cases.yaml", f.task);
                    for e in &f.errors {
                        for (i, line) in e.lines().enumerate() {
                            let _ = writeln!(s, "{}{line}", if i == 0 { "       " } else { "         " });
                        }
                    }
                }
            }
        }
        let candidates = self.candidate_cases.iter().map(|c| (c, " (candidate)"));
        for (c, version) in self.cases.iter().map(|c| (c, "")).chain(candidates).filter(|(c, _)| c.task == task) {
            match c.status {
                Status::Ok => {
                    let _ = writeln!(s, "ok   {}{version}  {}", c.task, c.name);
                }
                Status::Fail => {
                    let _ = writeln!(s, "FAIL {}{version}  {}", c.task, c.name);
                    render_failure(s, c);
                }
            }
        }
    }
}

/// The diff under a failed case: what was expected against what happened, and why.
fn render_failure(s: &mut String, c: &CaseReport) {
    const IND: &str = "       ";
    let _ = writeln!(s, "{IND}at {}:{}", c.file.display(), c.line);
    let a = &c.actual;
    if !a.intake_errors.is_empty() {
        let _ = writeln!(s, "{IND}the request does not pass intake (as `submit` would refuse it):");
        for e in &a.intake_errors {
            let _ = writeln!(s, "{IND}  field `{}`: {}", e.field, e.problem);
        }
        return;
    }
    if let Some(f) = &a.error {
        let _ = writeln!(s, "{IND}the rule failed ({}): {}", f.kind.as_str(), f.message);
        let motivi =
            if c.expected.motivi.is_empty() { String::new() } else { format!(" {}", c.expected.motivi.join(", ")) };
        let _ = writeln!(s, "{IND}expected: {}{motivi}", c.expected.esito.as_str());
        let _ = writeln!(s, "{IND}(no checks are recorded when a rule fails: fix the error, then run again)");
        return;
    }
    let esito = a.esito.map_or("-", Outcome::as_str);
    if a.esito == Some(c.expected.esito) {
        let _ = writeln!(s, "{IND}esito:    {esito} (as expected)");
    } else {
        let _ = writeln!(s, "{IND}esito:    expected {}", c.expected.esito.as_str());
        let _ = writeln!(s, "{IND}          actual   {esito}");
    }
    let actual_codes: Vec<String> = a.motivi.iter().map(|r| r.codice.clone()).collect();
    if actual_codes == c.expected.motivi {
        let _ = writeln!(s, "{IND}motivi:   {} (as expected)", codes_text(&actual_codes));
    } else {
        let _ = writeln!(s, "{IND}motivi:   expected {}", codes_text(&c.expected.motivi));
        let _ = writeln!(s, "{IND}          actual   {}", codes_text(&actual_codes));
    }
    for r in &a.motivi {
        let _ = writeln!(s, "{IND}            {}: {}", r.codice, r.messaggio);
    }
    if let Some(effetti) = &c.expected.effetti {
        let wanted: Vec<String> = effetti.iter().map(|e| inline(&Value::Object(e.clone()))).collect();
        let got: Vec<String> =
            a.effetti.iter().map(|e| inline(&serde_json::to_value(e).unwrap_or(Value::Null))).collect();
        let _ = writeln!(
            s,
            "{IND}effetti:  expected {}",
            if wanted.is_empty() { "(none)".into() } else { wanted.join(", ") }
        );
        let _ =
            writeln!(s, "{IND}          actual   {}", if got.is_empty() { "(none)".into() } else { got.join(", ") });
        for d in c.differences.iter().filter(|d| d.starts_with("effetti[")) {
            let _ = writeln!(s, "{IND}          {d}");
        }
    }
    if a.checks.is_empty() {
        let _ = writeln!(s, "{IND}checks that ran: none");
    } else {
        let _ = writeln!(s, "{IND}checks that ran:");
        for k in &a.checks {
            let _ = writeln!(s, "{IND}  {} {} line {}", k.codice, if k.passed { "✓" } else { "✗" }, k.line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn effects_match_on_the_keys_given_and_scalars_by_text() {
        let expected = Expected {
            esito: Outcome::Accolta,
            motivi: vec![],
            effetti: Some(vec![
                json!({"tipo": "revoke_delegation", "delegation_id": "D-1"}).as_object().cloned().unwrap_or_default(),
            ]),
            risposta: None,
        };
        let mut actual = Actual {
            esito: Some(Outcome::Accolta),
            effetti: vec![Effect::RevokeDelegation { delegation_id: "D-1".into(), from: "2026-06-01".into() }],
            ..Actual::default()
        };
        assert!(compare(&expected, &actual).is_empty());
        actual.effetti = vec![Effect::RevokeDelegation { delegation_id: "D-3".into(), from: "2026-06-01".into() }];
        assert_eq!(compare(&expected, &actual), ["effetti[0].delegation_id: expected D-1, actual D-3"]);
        actual.effetti.clear();
        assert_eq!(compare(&expected, &actual), ["effetti: expected 1, actual 0"]);
        assert!(same_value(&json!(123), &json!("123")));
    }

    #[test]
    fn a_case_world_upserts_by_key() {
        let sede = |codice: &str, denominazione: &str| Sede {
            codice: codice.into(),
            denominazione: denominazione.into(),
            provincia: "RM".into(),
            email: "a@b.it".into(),
        };
        let shared = ImportFile { version: 1, sedi: vec![sede("7000", "Roma")], ..Default::default() };
        let overlay = ImportFile {
            version: 1,
            sedi: vec![sede("7000", "Roma Eur"), sede("1300", "Milano")],
            ..Default::default()
        };
        let merged = merge(&shared, overlay);
        let names: Vec<&str> = merged.sedi.iter().map(|s| s.denominazione.as_str()).collect();
        assert_eq!(names, ["Roma Eur", "Milano"]);
    }
}
