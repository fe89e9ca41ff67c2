//! The host API rules see: `ctx` (facts, recorded with their versions) and the global functions `check`,
//! `refer`, `effect`, the validators of domain.md §6 and the date functions of [`super::dates`].
//!
//! Rhai gives registered functions no per-call context, so the collector of the running evaluation lives in
//! a thread-local: an evaluation runs start to finish on one thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, NativeCallContext};
use serde::Serialize;

use crate::domain::closing::normalise_contact;
use crate::domain::decision::{CheckRecord, EFFECT_KINDS, FactRead};
use crate::domain::facts::{Delega, StatoDelega, Subject, SubjectFacts, TipoContatto, TipoDelega};
use crate::domain::validators;

use super::dates;

/// Loads facts the batch did not prefetch (called on the evaluation thread, may block).
pub trait FactLoader: Send + Sync {
    fn load(&self, subjects: &[Subject]) -> Result<HashMap<Subject, SubjectFacts>, String>;
}

/// The facts a batch of evaluations reads: prefetched subjects, plus any a rule asks for beyond them.
///
/// For a replay, the view also holds the facts recorded with a past decision, by call: a call the old
/// decision made is answered with what it read then; any other call reads the current data and is noted.
pub struct FactsView {
    facts: Mutex<HashMap<Subject, Arc<SubjectFacts>>>,
    loader: Option<Arc<dyn FactLoader>>,
    recorded: Option<HashMap<String, FactRead>>,
}

impl FactsView {
    pub fn new(facts: HashMap<Subject, SubjectFacts>, loader: Option<Arc<dyn FactLoader>>) -> Self {
        FactsView {
            facts: Mutex::new(facts.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
            loader,
            recorded: None,
        }
    }

    /// A view answering from the facts a past decision recorded (see the type's documentation).
    pub fn recorded(reads: &[FactRead], loader: Option<Arc<dyn FactLoader>>) -> Self {
        let mut view = FactsView::new(HashMap::new(), loader);
        view.recorded = Some(reads.iter().map(|r| (r.call.clone(), r.clone())).collect());
        view
    }

    fn get(&self, subject: &Subject) -> Result<Arc<SubjectFacts>, Box<EvalAltResult>> {
        let mut facts = self.facts.lock().map_err(|_| "facts cache poisoned")?;
        if let Some(f) = facts.get(subject) {
            return Ok(f.clone());
        }
        let loaded = match &self.loader {
            Some(loader) => {
                loader.load(std::slice::from_ref(subject)).map_err(|e| format!("cannot load facts: {e}"))?
            }
            None => HashMap::new(),
        };
        let f = Arc::new(loaded.get(subject).cloned().unwrap_or_default());
        facts.insert(subject.clone(), f.clone());
        Ok(f)
    }
}

/// What one evaluation records, in order.
#[derive(Default)]
pub(super) struct Collector {
    pub checks: Vec<CheckRecord>,
    pub failed: Vec<(String, serde_json::Value)>,
    pub referrals: Vec<(String, serde_json::Value)>,
    pub effects: Vec<serde_json::Value>,
    pub facts: Vec<FactRead>,
    pub known_codes: Vec<String>,
    /// Whether the task is a quesito (only a quesito may be answered by its rule).
    pub quesito: bool,
    /// The standard answer a quesito's rule gave, with the values for its message.
    pub answer: Option<(String, serde_json::Value)>,
    /// Calls a replayed decision made that the original did not record (answered from current data).
    pub unrecorded: Vec<String>,
}

thread_local! {
    pub(super) static COLLECTOR: RefCell<Option<Collector>> = const { RefCell::new(None) };
}

fn with_collector<T>(f: impl FnOnce(&mut Collector) -> Result<T, Box<EvalAltResult>>) -> Result<T, Box<EvalAltResult>> {
    COLLECTOR.with(|c| match c.borrow_mut().as_mut() {
        Some(col) => f(col),
        None => Err("this function can only be called while a rule decides".into()),
    })
}

/// `ctx`: the facts and the clock of one evaluation.
#[derive(Clone)]
pub struct Ctx {
    pub(super) view: Arc<FactsView>,
    pub(super) today: ImmutableString,
    pub(super) now: ImmutableString,
    pub(super) request_id: i64,
    pub(super) task: String,
    pub(super) soggetto: String,
    /// The request's files (metadata only), from the request itself: not a fact, so no read is recorded.
    pub(super) attachments: rhai::Array,
}

impl Ctx {
    /// Reads a subject, records the read with its version, and converts `pick(facts)` for the script.
    fn read<T: Serialize>(
        &self,
        call: String,
        subject: Subject,
        pick: impl FnOnce(&SubjectFacts) -> T,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        if let Some(recorded) = &self.view.recorded {
            if let Some(read) = recorded.get(&call) {
                let dynamic = rhai::serde::to_dynamic(&read.value)?;
                with_collector(|c| {
                    c.facts.push(read.clone());
                    Ok(())
                })?;
                return Ok(dynamic);
            }
            with_collector(|c| {
                c.unrecorded.push(call.clone());
                Ok(())
            })?;
        }
        let facts = self.view.get(&subject)?;
        let value = serde_json::to_value(pick(&facts)).map_err(|e| e.to_string())?;
        let dynamic = rhai::serde::to_dynamic(&value)?;
        with_collector(|c| {
            c.facts.push(FactRead { call, subject, version: facts.version, value });
            Ok(())
        })?;
        Ok(dynamic)
    }
}

fn same_cf(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || validators::same_person(a, b)
}

fn norm(s: &str) -> String {
    s.trim().to_uppercase()
}

/// The delega a rule means by "the delega of `cf` on `matricola`": a direct one (not a sub-delega), the
/// ATTIVA one if any, else the most recent.
fn main_delega<'a>(deleghe: &'a [Delega], cf: &str) -> Option<&'a Delega> {
    deleghe.iter().filter(|d| d.tipo != TipoDelega::Subdelega && same_cf(&d.delegato_cf, cf)).max_by(|a, b| {
        (a.stato == StatoDelega::Attiva, &a.data_inizio).cmp(&(b.stato == StatoDelega::Attiva, &b.data_inizio))
    })
}

fn params_json(params: rhai::Map) -> Result<serde_json::Value, Box<EvalAltResult>> {
    rhai::serde::from_dynamic(&Dynamic::from_map(params))
}

fn known_code(c: &Collector, code: &str) -> Result<(), Box<EvalAltResult>> {
    if c.known_codes.iter().any(|k| k == code) {
        Ok(())
    } else {
        Err(format!(
            "reason code `{code}` is not in the `reasons` catalogue of task.yaml (known: {})",
            c.known_codes.join(", ")
        )
        .into())
    }
}

fn record_check(
    ctx: &NativeCallContext,
    code: &str,
    passed: bool,
    params: serde_json::Value,
) -> Result<bool, Box<EvalAltResult>> {
    let line = ctx.call_position().line().unwrap_or(0) as u32;
    with_collector(|c| {
        known_code(c, code)?;
        c.checks.push(CheckRecord { codice: code.to_string(), passed, line });
        if !passed {
            c.failed.push((code.to_string(), params));
        }
        Ok(passed)
    })
}

fn record_referral(code: &str, params: serde_json::Value) -> Result<(), Box<EvalAltResult>> {
    with_collector(|c| {
        known_code(c, code)?;
        c.referrals.push((code.to_string(), params));
        Ok(())
    })
}

fn record_answer(code: &str, params: serde_json::Value) -> Result<(), Box<EvalAltResult>> {
    with_collector(|c| {
        if !c.quesito {
            return Err(format!(
                "answer(\"{code}\") closes a quesito with a standard answer: this task is not one (task.yaml `tipo: quesito`)"
            )
            .into());
        }
        known_code(c, code)?;
        if let Some((given, _)) = &c.answer {
            return Err(format!(
                "answer(\"{code}\"): the rule already answered with `{given}` (one answer per quesito)"
            )
            .into());
        }
        c.answer = Some((code.to_string(), params));
        Ok(())
    })
}

/// One entry of the host API reference (`smart-taskd rules docs`, docs/rules.md): written beside the
/// registration it documents, so the reference cannot drift from the code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostDoc {
    pub group: &'static str,
    pub signature: &'static str,
    pub doc: &'static str,
}

/// Registers functions on the engine and collects their documentation.
struct Api<'a> {
    engine: &'a mut Engine,
    docs: Vec<HostDoc>,
}

impl Api<'_> {
    /// Documents the function registered right after, on the returned engine.
    fn doc(&mut self, group: &'static str, signature: &'static str, doc: &'static str) -> &mut Engine {
        self.docs.push(HostDoc { group, signature, doc });
        self.engine
    }
}

/// Registers the host API on the engine; returns its reference.
pub(super) fn register(engine: &mut Engine) -> Vec<HostDoc> {
    let mut api = Api { engine, docs: Vec::new() };
    api.engine.register_type_with_name::<Ctx>("Ctx");
    api.doc("ctx", "ctx.today", "The day of the decision, \"YYYY-MM-DD\" (compare dates as strings).")
        .register_get("today", |c: &mut Ctx| c.today.clone());
    api.doc("ctx", "ctx.now", "The instant of the decision, RFC 3339 in UTC. The only clock a rule has.")
        .register_get("now", |c: &mut Ctx| c.now.clone());

    api.doc("ctx", "ctx.company(matricola)", "The company of a position: #{matricola, cf, ragione_sociale, sede, pec_registro_imprese, rappresentanti_legali}, or () when the matricola is unknown.")
        .register_fn("company", |c: &mut Ctx, matricola: &str| {
            c.read(format!("company({matricola})"), Subject::Azienda(matricola.to_string()), |f| f.azienda.clone())
        });
    api.doc("ctx", "ctx.person(cf)", "A natural person: #{cf, nome, cognome}, or ().")
        .register_fn("person", |c: &mut Ctx, cf: &str| {
            c.read(format!("person({cf})"), Subject::Persona(norm(cf)), |f| f.persona.clone())
        });
    api.doc(
        "ctx",
        "ctx.intermediary(cf)",
        "An intermediary registered under L. 12/1979: #{cf, categoria, albo, sede}, or () (`albo` and `sede` may be ()).",
    )
    .register_fn("intermediary", |c: &mut Ctx, cf: &str| {
        c.read(format!("intermediary({cf})"), Subject::Persona(norm(cf)), |f| f.intermediario.clone())
    });
    api.doc("ctx", "ctx.sede(codice)", "An INPS sede: #{codice, denominazione, provincia, email}, or ().").register_fn(
        "sede",
        |c: &mut Ctx, codice: &str| {
            c.read(format!("sede({codice})"), Subject::Sede(codice.to_string()), |f| f.sede.clone())
        },
    );
    api.doc("ctx", "ctx.delegation(matricola, cf)", "The direct delega (not a sub-delega) of `cf` on the position: the ATTIVA one if any, else the most recent; #{id, matricola, delegato_cf, tipo, stato, data_inizio, data_fine, data_revoca, padre}, or (). Omocodic codes match.")
        .register_fn("delegation", |c: &mut Ctx, matricola: &str, cf: &str| {
            c.read(format!("delegation({matricola}, {cf})"), Subject::DelegheAzienda(matricola.to_string()), |f| {
                main_delega(&f.deleghe, cf).cloned()
            })
        });
    api.doc("ctx", "ctx.delegations(matricola)", "Every delega on the position (any type and state), oldest first.")
        .register_fn("delegations", |c: &mut Ctx, matricola: &str| {
            c.read(format!("delegations({matricola})"), Subject::DelegheAzienda(matricola.to_string()), |f| {
                f.deleghe.clone()
            })
        });
    api.doc("ctx", "ctx.delegations_held(cf)", "Every delega `cf` holds, on any position.").register_fn(
        "delegations_held",
        |c: &mut Ctx, cf: &str| {
            c.read(format!("delegations_held({cf})"), Subject::DelegheDelegato(norm(cf)), |f| f.deleghe.clone())
        },
    );
    api.doc("ctx", "ctx.contacts(cf)", "Every contact of a holder (person or numeric CF): #{id, titolare_cf, matricola, tipo, valore, uso, stato, anomalia, valid_from, valid_to}; `matricola` () = valid for all the holder's positions.")
        .register_fn("contacts", |c: &mut Ctx, cf: &str| {
            c.read(format!("contacts({cf})"), Subject::ContattiTitolare(norm(cf)), |f| f.contatti.clone())
        });
    api.doc("ctx", "ctx.position_contacts(matricola)", "The contacts bound to a position (of any holder).")
        .register_fn("position_contacts", |c: &mut Ctx, matricola: &str| {
            c.read(format!("position_contacts({matricola})"), Subject::ContattiAzienda(matricola.to_string()), |f| {
                f.contatti.clone()
            })
        });
    api.doc("ctx", "ctx.open_requests()", "The requests of the same task for the same subject, submitted earlier and not closed yet: [#{id, protocollo, creata_il}] (GEN-04).")
        .register_fn("open_requests", |c: &mut Ctx| {
            let subject = Subject::Open { task: c.task.clone(), soggetto: c.soggetto.clone() };
            let me = c.request_id;
            c.read("open_requests()".into(), subject, |f| {
                // Only earlier requests count: of two identical requests, the first goes ahead.
                f.open_requests.iter().filter(|r| r.id < me).cloned().collect::<Vec<_>>()
            })
        });

    api.doc("ctx", "ctx.attachments()", "The files sent with the request, in order: [#{nome, tipo, dimensione, sha256}] — `tipo` read from the content (application/pdf, image/jpeg, image/png, image/tiff, application/zip), `dimensione` in bytes; [] when none. E.g. refer(\"GEN-05\") when a document must be checked, or check(code, ctx.attachments().len() > 0).")
        .register_fn("attachments", |c: &mut Ctx| c.attachments.clone());

    api.doc("decision", "check(code, cond)", "Records the named check `code` with its result and line; when `cond` is false, adds the reason `code` (its message from the catalogue). Returns `cond`.")
        .register_fn("check", |ctx: NativeCallContext, code: &str, cond: bool| {
            record_check(&ctx, code, cond, serde_json::Value::Null)
        });
    api.doc(
        "decision",
        "check(code, cond, #{name: value})",
        "As check(code, cond), passing the values the reason's message template uses (e.g. #{ prot: ... }).",
    )
    .register_fn("check", |ctx: NativeCallContext, code: &str, cond: bool, params: rhai::Map| {
        record_check(&ctx, code, cond, params_json(params)?)
    });
    api.doc("decision", "refer(code)", "Sends the request to an operator of the competent sede (e.g. GEN-05); effects recorded so far are what the operator's acceptance applies.")
        .register_fn("refer", |code: &str| record_referral(code, serde_json::Value::Null));
    api.doc("decision", "refer(code, #{name: value})", "As refer(code), with values for the message template.")
        .register_fn("refer", |code: &str, params: rhai::Map| record_referral(code, params_json(params)?));
    api.doc("decision", "answer(code)", "Quesiti only: closes the quesito with the standard answer `code` (its text is the message of `code` in task.yaml's `reasons`), unless a check failed (Non Accolta) or the rule referred it.")
        .register_fn("answer", |code: &str| record_answer(code, serde_json::Value::Null));
    api.doc("decision", "answer(code, #{name: value})", "As answer(code), with values for the answer's template.")
        .register_fn("answer", |code: &str, params: rhai::Map| record_answer(code, params_json(params)?));
    api.doc("decision", "effect(kind, #{...})", "Proposes an effect, applied only on acceptance, in the closing transaction, after checking that what the rule read has not changed. Kinds: see the effects below.")
        .register_fn("effect", |kind: &str, args: rhai::Map| -> Result<(), Box<EvalAltResult>> {
            if !EFFECT_KINDS.contains(&kind) {
                return Err(format!("unknown effect `{kind}` (known: {})", EFFECT_KINDS.join(", ")).into());
            }
            let mut value = params_json(args)?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("tipo".into(), kind.into());
            }
            serde_json::from_value::<crate::domain::decision::Effect>(value.clone())
                .map_err(|e| format!("effect `{kind}`: {e}"))?;
            with_collector(|c| {
                c.effects.push(value);
                Ok(())
            })
        });

    api.doc("validators", "cf_valid(cf)", "A formally valid personal codice fiscale (format, month, day incl. +40, place, check character, omocodia) — domain.md §6.1.")
        .register_fn("cf_valid", |cf: &str| validators::codice_fiscale(cf).is_ok());
    api.doc(
        "validators",
        "piva_valid(p)",
        "A valid 11-digit partita IVA / numeric codice fiscale (office code, check digit) — §6.2.",
    )
    .register_fn("piva_valid", |p: &str| validators::partita_iva(p.trim()).is_ok());
    api.doc("validators", "cf_or_piva_valid(s)", "Either of the two above (intermediaries may be firms).")
        .register_fn("cf_or_piva_valid", validators::cf_or_partita_iva);
    api.doc(
        "validators",
        "same_person(a, b)",
        "The same codice fiscale, omocodic variants included (compared after de-omocodia).",
    )
    .register_fn("same_person", same_cf);
    api.doc("validators", "contains_person(list, cf)", "Whether a list of codici fiscali holds `cf` (omocodia-aware).")
        .register_fn("contains_person", |list: Array, cf: &str| {
            list.iter().any(|v| v.clone().into_immutable_string().is_ok_and(|s| same_cf(&s, cf)))
        });
    api.doc("validators", "matricola_valid(m)", "A matricola INPS: 10 digits — §6.3.")
        .register_fn("matricola_valid", validators::matricola);
    api.doc("validators", "email_valid(s)", "A syntactically valid e-mail or PEC address — §6.6.")
        .register_fn("email_valid", |s: &str| validators::email(s).is_some());
    api.doc(
        "validators",
        "pec_plausible(s)",
        "The domain looks like a PEC provider (\"pec\" in it, legalmail.it, ...): a hint, never a proof — §6.6.",
    )
    .register_fn("pec_plausible", validators::looks_like_pec);
    api.doc("validators", "contact_normal(tipo, valore)", "A contact value in its stored form for its type (EMAIL/PEC lower-cased, CELLULARE in E.164, TELEFONO digits), or () when invalid.")
        .register_fn("contact_normal", |tipo: &str, valore: &str| -> Dynamic {
            let kind: Option<TipoContatto> = serde_json::from_value(serde_json::Value::String(tipo.to_string())).ok();
            kind.and_then(|k| normalise_contact(k, valore)).map_or(Dynamic::UNIT, Dynamic::from)
        });
    api.doc(
        "validators",
        "mobile_e164(s)",
        "An Italian mobile number normalised to E.164 (\"+393...\"), or () — §6.5.",
    )
    .register_fn("mobile_e164", |s: &str| validators::mobile_e164(s).map_or(Dynamic::UNIT, Dynamic::from));

    register_dates(&mut api);
    api.docs
}

/// A date function's error (it names the function, the bad value and what is expected) as a runtime error.
fn date<T>(r: Result<T, String>) -> Result<T, Box<EvalAltResult>> {
    r.map_err(Into::into)
}

fn register_dates(api: &mut Api) {
    api.doc("dates", "is_date(s)", "Whether `s` is a date \"YYYY-MM-DD\" (zero-padded, a real day): false for anything else, () included: `is_date(req.data_decorrenza)` is false when the optional field was not given.")
        .register_fn("is_date", |s: Dynamic| s.into_immutable_string().is_ok_and(|s| dates::is_date(&s)));
    api.doc(
        "dates",
        "add_days(date, n)",
        "`date` plus `n` days (`n` may be negative, |n| ≤ 36600): add_days(\"2026-12-31\", 1) = \"2027-01-01\".",
    )
    .register_fn("add_days", |d: &str, n: rhai::INT| date(dates::add_days(d, n)));
    api.doc("dates", "add_months(date, n)", "`date` plus `n` months (|n| ≤ 1200), clamped to the end of the month: add_months(\"2026-01-31\", 1) = \"2026-02-28\".")
        .register_fn("add_months", |d: &str, n: rhai::INT| date(dates::add_months(d, n)));
    api.doc("dates", "add_years(date, n)", "`date` plus `n` years (|n| ≤ 100); 29 February becomes 28 February in a common year. \"At most a year ahead\": d <= add_years(ctx.today, 1).")
        .register_fn("add_years", |d: &str, n: rhai::INT| date(dates::add_years(d, n)));
    api.doc(
        "dates",
        "days_between(a, b)",
        "`b - a` in days: days_between(\"2026-03-01\", \"2026-03-31\") = 30; negative when `b` is earlier.",
    )
    .register_fn("days_between", |a: &str, b: &str| date(dates::days_between(a, b)));
    api.doc("dates", "is_working_day(date)", "Not a Saturday, a Sunday or an Italian national holiday (1 and 6 January, Easter Monday, 25 April, 1 May, 2 June, 15 August, 1 November, 8, 25 and 26 December). Patron saints' days are not counted: they differ by comune.")
        .register_fn("is_working_day", |d: &str| date(dates::is_working_day(d)));
    api.doc("dates", "add_working_days(date, n)", "The `n`-th working day after `date` (before it when `n` < 0, |n| ≤ 36600); `date` itself when `n` = 0. E.g. a deadline of 30 working days: add_working_days(ctx.today, 30).")
        .register_fn("add_working_days", |d: &str, n: rhai::INT| date(dates::add_working_days(d, n)));
    api.doc(
        "dates",
        "working_days_between(a, b)",
        "The working days in (a, b] — after `a`, up to and including `b`; negative when `b` is earlier.",
    )
    .register_fn("working_days_between", |a: &str, b: &str| date(dates::working_days_between(a, b)));
}
