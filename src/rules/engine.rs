//! The one shared, sandboxed Rhai engine, and the evaluation of one request by its task's rule.
//!
//! Sandbox (see ARCHITECTURE.md): a raw engine with only the core, logic, math, array, map and string
//! packages (no clock, no I/O, no modules), `eval` disabled, `sleep` overridden to fail, strict variables,
//! failure on unknown map properties, size and depth limits, an operation budget and a per-call wall-clock
//! deadline checked from `on_progress`.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, BasicStringPackage, CorePackage, LogicPackage,
    MoreStringPackage, Package,
};
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, OptimizationLevel, Scope};
use serde_json::Value;

use super::host::{COLLECTOR, Collector, Ctx, FactsView};
use super::loader::{Mode, TaskRule};
use crate::domain::closing::{ClaimedRequest, Evaluation};
use crate::domain::decision::{Decision, Effect, FailureKind, Outcome, Reason, RuleFailure, ShadowDecision, Trace};
use crate::domain::request::ATTACHMENTS_FIELD;
use crate::domain::time::{Millis, iso_date, rfc3339};

/// Resource limits of one decision.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_operations: u64,
    pub deadline: Duration,
}

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static OPERATIONS: Cell<u64> = const { Cell::new(0) };
}

/// A script that does not compile: Rhai's parse error, its message as Rhai words it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub rhai::ParseError);

/// Compiles and runs rules; cheap to share (`Arc`) between workers.
pub struct Evaluator {
    engine: Engine,
    limits: Limits,
    docs: Vec<super::host::HostDoc>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Refuses `sleep`: it would block a worker thread. Registered for both numeric types, so that the exact
/// signature overrides the standard library's.
fn refuse_sleep<T>(_: T) -> Result<(), Box<EvalAltResult>> {
    Err("sleep() is not allowed in rules".into())
}

impl Evaluator {
    pub fn new(limits: Limits) -> Self {
        let mut e = Engine::new_raw();
        for module in [
            CorePackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ] {
            e.register_global_module(module);
        }
        e.set_max_strings_interned(1024);
        e.set_optimization_level(OptimizationLevel::Simple);
        e.set_strict_variables(true);
        e.set_fail_on_invalid_map_property(true);
        e.set_max_operations(limits.max_operations);
        e.set_max_call_levels(32);
        e.set_max_expr_depths(64, 32);
        e.set_max_string_size(64 * 1024);
        e.set_max_array_size(10_000);
        e.set_max_map_size(1_000);
        e.set_max_variables(512);
        e.set_max_functions(256);
        e.set_max_modules(0);
        e.disable_symbol("eval");
        e.disable_symbol("import");
        e.disable_symbol("export");
        e.register_fn("sleep", refuse_sleep::<rhai::INT>);
        e.register_fn("sleep", refuse_sleep::<rhai::FLOAT>);
        e.register_fn("timestamp", || -> Result<(), Box<EvalAltResult>> {
            Err("timestamp() is not allowed in rules: use ctx.now or ctx.today".into())
        });
        e.on_progress(|ops| {
            OPERATIONS.with(|o| o.set(ops));
            if ops & 0x3ff != 0 {
                return None;
            }
            DEADLINE.with(|d| matches!(d.get(), Some(t) if Instant::now() >= t).then(|| Dynamic::from("deadline")))
        });
        let docs = super::host::register(&mut e);
        Evaluator { engine: e, limits, docs }
    }

    /// The reference of the host API rules see, from the registrations themselves.
    pub fn host_docs(&self) -> &[super::host::HostDoc] {
        &self.docs
    }

    /// Compiles a script with this engine (sandbox options apply at compile time).
    pub fn compile(&self, source: &str) -> Result<rhai::AST, CompileError> {
        self.engine.compile(source).map_err(CompileError)
    }

    /// Compiles a script; on error, the error and where Rhai places it (1-based line and column).
    pub fn compile_at(&self, source: &str) -> Result<rhai::AST, (rhai::ParseError, Option<(usize, usize)>)> {
        self.engine.compile(source).map_err(|e| {
            let at = e.position().line().map(|l| (l, e.position().position().unwrap_or(1)));
            (e, at)
        })
    }

    /// Decides one request. Runs synchronously: call it off the async runtime.
    pub fn evaluate(&self, rule: &TaskRule, req: &ClaimedRequest, view: Arc<FactsView>, now: Millis) -> Evaluation {
        let started = Instant::now();
        let active =
            Version { ast: &rule.ast, version: &rule.version, reasons: &rule.reasons, templates: &rule.templates };
        let mut decision = match self.decide(rule, active, req, view.clone(), now) {
            Ok(d) => d,
            Err(f) => return Evaluation::Failed(f),
        };
        // Shadow: the candidate decides the same request from the same facts; only the active decision counts.
        if let (Mode::Shadow, Some(candidate)) = (rule.mode, &rule.candidate) {
            // The candidate gives its reasons with its own catalogue (the shadow catalogue over the task's).
            let version = Version {
                ast: &candidate.ast,
                version: &candidate.version,
                reasons: &candidate.reasons,
                templates: &candidate.templates,
            };
            let shadow = match self.decide(rule, version, req, view, now) {
                Ok(d) => ShadowDecision::compare(&decision, &candidate.version, Ok(&d)),
                Err(f) => ShadowDecision::compare(&decision, &candidate.version, Err(&f)),
            };
            decision.trace.shadow = Some(shadow);
        }
        // Dry run: the rule decides and its decision is recorded, but an operator closes the request.
        if rule.mode == Mode::DryRun && decision.outcome != Outcome::Rinvio {
            decision.trace.dry_run = Some(decision.outcome);
            decision.outcome = Outcome::Rinvio;
        }
        decision.duration_us = started.elapsed().as_micros() as u64;
        Evaluation::Decided(Box::new(decision))
    }

    /// Decides one request with the task's shadow candidate alone, as the active rule would be run: what the
    /// candidate's cases compare. `None` when the task has no candidate.
    pub fn evaluate_candidate(
        &self,
        rule: &TaskRule,
        req: &ClaimedRequest,
        view: Arc<FactsView>,
        now: Millis,
    ) -> Option<Evaluation> {
        let candidate = rule.candidate.as_ref()?;
        let version = Version {
            ast: &candidate.ast,
            version: &candidate.version,
            reasons: &candidate.reasons,
            templates: &candidate.templates,
        };
        Some(match self.decide(rule, version, req, view, now) {
            Ok(d) => Evaluation::Decided(Box::new(d)),
            Err(f) => Evaluation::Failed(f),
        })
    }

    /// Runs one version of a task's rule on a request.
    fn decide(
        &self,
        rule: &TaskRule,
        version: Version<'_>,
        req: &ClaimedRequest,
        view: Arc<FactsView>,
        now: Millis,
    ) -> Result<Decision, RuleFailure> {
        let started = Instant::now();
        let today = iso_date(now);
        let label = format!("{}@{}", rule.id, version.version);
        let fail = |kind, message: String| RuleFailure { kind, message: format!("{label}: {message}") };
        let ctx = Ctx {
            view,
            today: today.clone().into(),
            now: rfc3339(now).into(),
            request_id: req.id,
            task: req.task.clone(),
            soggetto: req.soggetto.clone(),
            attachments: attachments_dynamic(req).map_err(|e| fail(FailureKind::Error, e))?,
        };
        let input = request_dynamic(rule, req).map_err(|e| fail(FailureKind::Error, e))?;
        COLLECTOR.with(|c| {
            *c.borrow_mut() = Some(Collector {
                known_codes: version.reasons.keys().cloned().collect(),
                quesito: rule.kind == crate::rules::TaskKind::Quesito,
                ..Default::default()
            })
        });
        DEADLINE.with(|d| d.set(Some(started + self.limits.deadline)));
        OPERATIONS.with(|o| o.set(0));
        let result = self.engine.call_fn_with_options::<Dynamic>(
            CallFnOptions::new().eval_ast(true).rewind_scope(true),
            &mut Scope::new(),
            version.ast,
            "decide",
            (input, ctx),
        );
        DEADLINE.with(|d| d.set(None));
        let operations = OPERATIONS.with(Cell::get);
        let collected = COLLECTOR.with(|c| c.borrow_mut().take()).unwrap_or_default();
        if let Err(err) = result {
            let kind = match err.unwrap_inner() {
                EvalAltResult::ErrorTooManyOperations(_) => FailureKind::Budget,
                EvalAltResult::ErrorTerminated(..) => FailureKind::Timeout,
                _ => FailureKind::Error,
            };
            let message = match kind {
                FailureKind::Budget => format!("operation budget of {} exhausted ({err})", self.limits.max_operations),
                FailureKind::Timeout => format!("deadline of {} ms passed ({err})", self.limits.deadline.as_millis()),
                _ => err.to_string(),
            };
            return Err(fail(kind, message));
        }
        build_decision(version, collected, today, operations).map_err(|e| fail(FailureKind::Error, e))
    }
}

/// One version of a task's rule: the active one, or its shadow candidate.
#[derive(Clone, Copy)]
struct Version<'a> {
    ast: &'a rhai::AST,
    version: &'a str,
    /// The catalogue this version gives reasons from, and its compiled messages.
    reasons: &'a std::collections::BTreeMap<String, String>,
    templates: &'a minijinja::Environment<'static>,
}

/// The request as the rule sees it: every envelope field and every field the schema declares is present
/// (absent optional ones as `()`), so that a misspelt field is an error and not a silent `()`.
fn request_dynamic(rule: &TaskRule, req: &ClaimedRequest) -> Result<Dynamic, String> {
    let mut payload = req.payload.clone();
    for field in
        crate::domain::request::ENVELOPE_FIELDS.iter().map(|f| f.to_string()).chain(rule.fields.iter().cloned())
    {
        payload.entry(field).or_insert(Value::Null);
    }
    payload.insert("protocollo".into(), req.protocollo.clone().into());
    // The files are read through `ctx.attachments()` only.
    payload.remove(ATTACHMENTS_FIELD);
    rhai::serde::to_dynamic(&payload).map_err(|e| format!("cannot pass the request to the rule: {e}"))
}

/// The request's files as `ctx.attachments()` returns them: `[#{nome, tipo, dimensione, sha256}]`, `[]` without.
fn attachments_dynamic(req: &ClaimedRequest) -> Result<rhai::Array, String> {
    match req.payload.get(ATTACHMENTS_FIELD) {
        None | Some(Value::Null) => Ok(rhai::Array::new()),
        Some(files) => rhai::serde::to_dynamic(files)
            .and_then(|d| d.into_typed_array::<Dynamic>().map_err(|t| t.into()))
            .map_err(|e| format!("cannot pass the request's attachments to the rule: {e}")),
    }
}

fn render(templates: &minijinja::Environment<'static>, code: &str, params: &Value) -> Result<Reason, String> {
    let template = templates.get_template(code).map_err(|e| e.to_string())?;
    let messaggio = template.render(params).map_err(|e| {
        let mut names: Vec<String> = template.undeclared_variables(false).into_iter().collect();
        names.sort();
        let pass: Vec<String> = names.iter().map(|n| format!("{n}: …")).collect();
        format!(
            "message of reason {code}: {e}; it uses {}: pass them as check(\"{code}\", cond, #{{ {} }})",
            names.join(", "),
            pass.join(", ")
        )
    })?;
    Ok(Reason { codice: code.to_string(), messaggio })
}

fn build_decision(version: Version<'_>, c: Collector, today: String, operations: u64) -> Result<Decision, String> {
    let (outcome, reasons) = if !c.referrals.is_empty() {
        (
            Outcome::Rinvio,
            c.referrals.iter().map(|(code, p)| render(version.templates, code, p)).collect::<Result<Vec<_>, _>>()?,
        )
    } else if !c.failed.is_empty() {
        (
            Outcome::NonAccolta,
            c.failed.iter().map(|(code, p)| render(version.templates, code, p)).collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        (Outcome::Accolta, Vec::new())
    };
    // A standard answer closes the quesito only when nothing refused or referred it: its text is the note.
    let (risposta, nota) = match (&c.answer, outcome) {
        (Some((code, p)), Outcome::Accolta) => {
            (Some(code.clone()), Some(render(version.templates, code, p)?.messaggio))
        }
        _ => (None, None),
    };
    let effects = if outcome == Outcome::NonAccolta {
        Vec::new()
    } else {
        c.effects
            .into_iter()
            .map(|e| serde_json::from_value::<Effect>(e).map_err(|e| format!("bad effect: {e}")))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(Decision {
        outcome,
        reasons,
        effects,
        rule_version: version.version.to_string(),
        trace: Trace {
            checks: c.checks,
            facts: c.facts,
            today,
            operations,
            unrecorded: c.unrecorded,
            risposta,
            ..Trace::default()
        },
        duration_us: 0,
        nota,
    })
}
