//! Loading a rules directory into a [`RuleSet`]: every task folder compiled and checked, or an error that
//! names the file (and line:col where there is one) and says what to do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::engine::Evaluator;
use crate::domain::request::PROFILES;

/// A problem with the rules directory.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::Invalid { path: path.to_path_buf(), message: message.into() }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|error| LoadError::Read { path: path.to_path_buf(), error })
}

/// Rollout mode of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The rule's decisions close requests.
    #[default]
    Enforce,
    /// As enforce, and a candidate version (`candidate:` file) decides too; disagreements are recorded.
    Shadow,
    /// The rule decides and records, but every request goes to an operator to be closed.
    DryRun,
}

/// What a task is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A Smart-Task: the rule decides (Accolta, Non Accolta, or a referral) and an acceptance applies effects.
    #[default]
    SmartTask,
    /// A quesito to the competent sede (Comunicazione Bidirezionale): the rule triages it — refers it to the
    /// sede's operators, or refuses one that cannot be asked this way — and an operator answers it; the
    /// answer closes it. It has an `ambito`, one of the task's `ambiti`.
    Quesito,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::SmartTask => "smart_task",
            TaskKind::Quesito => "quesito",
        }
    }
}

/// The candidate version of a task in shadow mode.
pub struct Candidate {
    pub version: String,
    pub ast: rhai::AST,
    /// The catalogue the candidate decides with: the task's `reasons` and its own `candidate_reasons`.
    pub reasons: BTreeMap<String, String>,
    /// Those messages, compiled (template name = reason code).
    pub templates: minijinja::Environment<'static>,
}

/// `task.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    id: String,
    label: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    tipo: TaskKind,
    /// A quesito's areas: code → Italian label. The schema gets the `ambito` field from them, so adding an
    /// area is a line of data.
    #[serde(default)]
    ambiti: BTreeMap<String, String>,
    /// Whether the envelope's `matricola` is required for this task.
    #[serde(default)]
    requires_matricola: bool,
    /// In shadow mode: the file (beside rule.rhai) with the candidate version of the rule.
    #[serde(default)]
    candidate: Option<String>,
    /// Task fields of which at least one must be present (a change set that must not be empty).
    #[serde(default)]
    at_least_one_of: Vec<String>,
    /// The requester profiles (`profilo_richiedente`) that may submit the task: the menu offers it only to
    /// them and intake refuses the others. Absent: every profile.
    #[serde(default)]
    profili: Vec<String>,
    /// The pilot group the task is open to while it is released "in via sperimentale": only its members
    /// (`smart-taskd pilot add GROUP CF…`) see it in the menu and may submit it. Absent: open to everyone.
    #[serde(default)]
    pilota: Option<String>,
    /// JSON Schema (in YAML) of the task's own fields, envelope excluded.
    schema: serde_json::Value,
    /// Reason code → Italian message template (minijinja, e.g. `{{ prot }}`).
    reasons: BTreeMap<String, String>,
    /// In shadow mode: reason codes only the candidate gives (the shadow catalogue), in the same form.
    #[serde(default)]
    candidate_reasons: Option<BTreeMap<String, String>>,
}

/// One task type, ready to decide.
pub struct TaskRule {
    pub id: String,
    pub label: String,
    pub mode: Mode,
    pub kind: TaskKind,
    /// A quesito's areas (code → label); empty for a Smart-Task.
    pub ambiti: BTreeMap<String, String>,
    pub requires_matricola: bool,
    pub at_least_one_of: Vec<String>,
    /// The profiles that may submit it (every profile when task.yaml names none).
    pub profili: Vec<String>,
    /// The pilot group it is restricted to, if any.
    pub pilota: Option<String>,
    /// Content hash of task.yaml, rule.rhai and the shared library: the rule version recorded with decisions.
    pub version: String,
    pub schema: jsonschema::Validator,
    /// The schema as task.yaml gives it (the menu hands it to the portal, which builds the form from it).
    pub schema_source: serde_json::Value,
    /// Top-level properties the schema declares: absent optional ones are passed to the rule as `()`.
    pub fields: Vec<String>,
    /// Reason code → message template source.
    pub reasons: BTreeMap<String, String>,
    /// The reason messages, compiled (template name = reason code).
    pub templates: minijinja::Environment<'static>,
    pub ast: rhai::AST,
    pub dir: PathBuf,
    /// In shadow mode: the candidate version that decides alongside.
    pub candidate: Option<Candidate>,
    /// Every file this version was built from (task.yaml, rule.rhai, the candidate, the shared library), by
    /// path relative to the rules directory: kept in the database at activation, so the version can run again
    /// after a restart and `explain` can quote its lines when the files on disk have changed.
    pub sources: Sources,
}

/// Source files by path relative to the rules directory (`revoca_delega_intermediario/rule.rhai`, `lib/common.rhai`).
pub type Sources = BTreeMap<String, String>;

impl std::fmt::Debug for TaskRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRule").field("id", &self.id).field("version", &self.version).finish_non_exhaustive()
    }
}

/// Every task type of a rules directory.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub tasks: BTreeMap<String, Arc<TaskRule>>,
}

impl RuleSet {
    pub fn get(&self, task: &str) -> Option<&Arc<TaskRule>> {
        self.tasks.get(task)
    }
}

/// Loads and compiles every task folder of `dir` (a folder with a `task.yaml`); `lib/*.rhai` are shared
/// functions merged into every rule.
pub fn load_rule_set(dir: &Path, evaluator: &Evaluator) -> Result<RuleSet, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|error| LoadError::Read { path: dir.to_path_buf(), error })?;
    let mut folders: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("task.yaml").is_file()).collect();
    folders.sort();
    if folders.is_empty() {
        return Err(invalid(dir, "no task folders found (each task is a folder with task.yaml and rule.rhai)"));
    }
    let lib = load_lib(&dir.join("lib"), evaluator)?;
    let mut set = RuleSet::default();
    for folder in folders {
        let rule = load_task(&folder, evaluator, &lib)?;
        if let Some(other) = set.tasks.get(&rule.id) {
            return Err(invalid(
                &folder.join("task.yaml"),
                format!("task id `{}` is already defined in {}", rule.id, other.dir.display()),
            ));
        }
        set.tasks.insert(rule.id.clone(), Arc::new(rule));
    }
    Ok(set)
}

/// The shared library of a rules directory: merged AST, content hash, sources.
struct Lib {
    ast: rhai::AST,
    hash: Vec<u8>,
    sources: Sources,
}

fn load_lib(dir: &Path, evaluator: &Evaluator) -> Result<Lib, LoadError> {
    let mut ast = rhai::AST::empty();
    let mut hasher = Sha256::new();
    let mut sources = Sources::new();
    if !dir.is_dir() {
        return Ok(Lib { ast, hash: hasher.finalize().to_vec(), sources });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| LoadError::Read { path: dir.to_path_buf(), error })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    files.sort();
    for file in files {
        let source = read(&file)?;
        hasher.update(file.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        hasher.update(source.as_bytes());
        let lib = evaluator.compile(&source).map_err(|e| invalid(&file, e.to_string()))?;
        ast = ast.merge(&lib);
        sources.insert(format!("lib/{}", file.file_name().unwrap_or_default().to_string_lossy()), source);
    }
    Ok(Lib { ast, hash: hasher.finalize().to_vec(), sources })
}

/// Reads a task.yaml as the loader will (unknown keys refused): the first problem with its line and column.
pub(crate) fn task_file_problem(text: &str) -> Option<(usize, usize, String)> {
    let e = match serde_saphyr::from_str::<TaskFile>(text) {
        Ok(task) => return task_file_meaning(text, &task),
        Err(e) => e,
    };
    let (line, col) = e.location().map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
    // The library's message repeats the location and quotes the text: its first line is the problem.
    let first = e.to_string().lines().next().unwrap_or_default().to_string();
    let message = first.strip_prefix("error: ").unwrap_or(&first);
    // `line 7 column 1: unknown field …`: the location is given apart.
    let message = match message.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") && at.contains(" column ") => rest,
        _ => message,
    };
    Some((line, col, message.to_string()))
}

/// What task.yaml's keys mean together, beyond their types: `candidate_reasons` only in shadow mode, and no code
/// in both catalogues (a code means one message). The problem with its line and column.
fn task_file_meaning(text: &str, task: &TaskFile) -> Option<(usize, usize, String)> {
    let candidate = task.candidate_reasons.as_ref()?;
    let key_line = |key: &str, from: usize| {
        text.lines()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.trim_start().starts_with(&format!("{key}:")))
            .map(|(n, _)| n)
    };
    let section = key_line("candidate_reasons", 0).unwrap_or(0);
    if task.mode != Mode::Shadow {
        return Some((
            section + 1,
            1,
            "`candidate_reasons` is only used with `mode: shadow`: they are the shadow candidate's own reason \
             codes (move them to `reasons`, or set `mode: shadow` with `candidate: FILE`)"
                .into(),
        ));
    }
    let code = candidate.keys().find(|c| task.reasons.contains_key(*c))?;
    let line = key_line(code, section + 1).unwrap_or(section);
    Some((
        line + 1,
        3,
        format!(
            "`candidate_reasons.{code}`: `{code}` is already in `reasons` (a code has one message): give the candidate's a new code"
        ),
    ))
}

/// A quesito's `ambito` field, added to its schema from `ambiti` (each code a `const` with its label as
/// `title`, so the portal's form shows the labels); `ambiti` belongs to quesiti only.
fn with_ambito(task_path: &Path, task: &mut TaskFile) -> Result<(), LoadError> {
    match task.tipo {
        TaskKind::SmartTask if !task.ambiti.is_empty() => {
            return Err(invalid(task_path, "`ambiti` belongs to `tipo: quesito` (the areas a quesito is about)"));
        }
        TaskKind::SmartTask => return Ok(()),
        TaskKind::Quesito if task.ambiti.is_empty() => {
            return Err(invalid(
                task_path,
                "`tipo: quesito` needs `ambiti`: code → label, e.g. `UNIEMENS: \"Denunce UniEmens\"`",
            ));
        }
        TaskKind::Quesito => {}
    }
    if let Some(code) = task
        .ambiti
        .keys()
        .find(|c| c.is_empty() || !c.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    {
        return Err(invalid(
            task_path,
            format!("`ambiti`: `{code}` must be UPPER_SNAKE_CASE, e.g. REGOLARITA_CONTRIBUTIVA"),
        ));
    }
    let Some(schema) = task.schema.as_object_mut() else {
        return Err(invalid(task_path, "`schema` must be an object"));
    };
    let properties = schema.entry("properties").or_insert_with(|| serde_json::json!({}));
    let Some(properties) = properties.as_object_mut() else {
        return Err(invalid(task_path, "`schema.properties` must be an object"));
    };
    if properties.contains_key("ambito") {
        return Err(invalid(
            task_path,
            "`schema.properties.ambito`: a quesito's `ambito` comes from `ambiti`: remove it from the schema",
        ));
    }
    let choices: Vec<serde_json::Value> =
        task.ambiti.iter().map(|(code, label)| serde_json::json!({ "const": code, "title": label })).collect();
    properties.insert(
        "ambito".into(),
        serde_json::json!({ "type": "string", "description": "L'area del Cassetto a cui si riferisce il quesito", "oneOf": choices }),
    );
    let required = schema.entry("required").or_insert_with(|| serde_json::json!([]));
    match required.as_array_mut() {
        Some(list) => list.push("ambito".into()),
        None => return Err(invalid(task_path, "`schema.required` must be a list")),
    }
    Ok(())
}

/// Loads one task folder with the shared library of its rules directory, for `rules check`.
pub(crate) fn load_task_for_lint(folder: &Path, evaluator: &Evaluator) -> Result<TaskRule, LoadError> {
    let lib_dir = folder.parent().map(|p| p.join("lib")).unwrap_or_default();
    let lib = load_lib(&lib_dir, evaluator)?;
    load_task(folder, evaluator, &lib)
}

fn load_task(folder: &Path, evaluator: &Evaluator, lib: &Lib) -> Result<TaskRule, LoadError> {
    let (lib_sources, lib_hash) = (&lib.sources, lib.hash.as_slice());
    let lib = &lib.ast;
    let task_path = folder.join("task.yaml");
    let rule_path = folder.join("rule.rhai");
    let task_text = read(&task_path)?;
    let rule_text = read(&rule_path)?;
    let mut task: TaskFile = serde_saphyr::from_str(&task_text).map_err(|e| invalid(&task_path, e.to_string()))?;
    if let Some((line, col, message)) = task_file_meaning(&task_text, &task) {
        return Err(invalid(&task_path, format!("line {line} column {col}: {message}")));
    }
    with_ambito(&task_path, &mut task)?;
    if task.id.is_empty() || !task.id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid(
            &task_path,
            format!("`id`: `{}` must be UPPER_SNAKE_CASE, e.g. REVOCA_DELEGA_INTERMEDIARIO", task.id),
        ));
    }
    if let Some(p) = task.profili.iter().find(|p| !PROFILES.contains(&p.as_str())) {
        return Err(invalid(&task_path, format!("`profili`: `{p}` is not a profile (one of {})", PROFILES.join(", "))));
    }
    let profili = if task.profili.is_empty() { PROFILES.iter().map(|p| p.to_string()).collect() } else { task.profili };
    if let Some(group) = &task.pilota
        && !is_group_name(group)
    {
        return Err(invalid(
            &task_path,
            format!("`pilota`: `{group}` must be a group name in lower-case letters, digits, `-` and `_`"),
        ));
    }
    let schema = jsonschema::options()
        .should_validate_formats(true)
        .build(&task.schema)
        .map_err(|e| invalid(&task_path, format!("`schema` is not a valid JSON Schema: {e}")))?;
    let fields = task
        .schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let templates = compile_messages(&task_path, [("reasons", &task.reasons)])?;
    let rule_ast = evaluator.compile(&rule_text).map_err(|e| invalid(&rule_path, e.to_string()))?;
    if !rule_ast.iter_functions().any(|f| f.name == "decide" && f.params.len() == 2) {
        return Err(invalid(
            &rule_path,
            "no `fn decide(req, ctx)` with two parameters: every rule needs one, it is what the daemon calls",
        ));
    }
    let mut ast = lib.merge(&rule_ast);
    let mut hasher = Sha256::new();
    hasher.update(task_text.as_bytes());
    hasher.update([0]);
    hasher.update(rule_text.as_bytes());
    hasher.update([0]);
    hasher.update(lib_hash);
    let digest = hasher.finalize();
    let version = crate::domain::hex_prefix(&digest, 8);
    let mut candidate_source = None;
    let candidate = match (&task.mode, &task.candidate) {
        (Mode::Shadow, None) => {
            return Err(invalid(
                &task_path,
                "`mode: shadow` needs `candidate: FILE` (the candidate rule, beside rule.rhai)",
            ));
        }
        (Mode::Shadow, Some(file)) => {
            let path = folder.join(file);
            let text = read(&path)?;
            let ast = evaluator.compile(&text).map_err(|e| invalid(&path, e.to_string()))?;
            if !ast.iter_functions().any(|f| f.name == "decide" && f.params.len() == 2) {
                return Err(invalid(&path, "no `fn decide(req, ctx)` with two parameters"));
            }
            let mut h = Sha256::new();
            h.update(task_text.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
            h.update(lib_hash);
            let version = crate::domain::hex_prefix(&h.finalize(), 8);
            candidate_source = Some((file.clone(), text));
            // The candidate's catalogue: the task's, with its own codes (task.yaml, hashed above, holds both).
            let own = task.candidate_reasons.clone().unwrap_or_default();
            let templates = compile_messages(&task_path, [("reasons", &task.reasons), ("candidate_reasons", &own)])?;
            let mut reasons = task.reasons.clone();
            reasons.extend(own);
            Some(Candidate { version, ast: lib.merge(&ast), reasons, templates })
        }
        (_, Some(_)) => return Err(invalid(&task_path, "`candidate` is only used with `mode: shadow`")),
        (_, None) => None,
    };
    ast.set_source(format!("{}@{}", task.id, version));
    let name = folder.file_name().unwrap_or_default().to_string_lossy();
    let mut sources = lib_sources.clone();
    sources.insert(format!("{name}/task.yaml"), task_text);
    sources.insert(format!("{name}/rule.rhai"), rule_text);
    if let Some((file, text)) = candidate_source {
        sources.insert(format!("{name}/{file}"), text);
    }
    Ok(TaskRule {
        id: task.id,
        label: task.label,
        mode: task.mode,
        kind: task.tipo,
        ambiti: task.ambiti,
        requires_matricola: task.requires_matricola,
        at_least_one_of: task.at_least_one_of,
        profili,
        pilota: task.pilota,
        version,
        schema,
        schema_source: task.schema,
        fields,
        reasons: task.reasons,
        templates,
        ast,
        dir: folder.to_path_buf(),
        candidate,
        sources,
    })
}

/// The reason messages of task.yaml's catalogues (by key: `reasons`, `candidate_reasons`), compiled.
fn compile_messages<'a>(
    task_path: &Path,
    catalogues: impl IntoIterator<Item = (&'static str, &'a BTreeMap<String, String>)>,
) -> Result<minijinja::Environment<'static>, LoadError> {
    let mut templates = minijinja::Environment::new();
    templates.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (key, messages) in catalogues {
        for (code, message) in messages {
            templates
                .add_template_owned(code.clone(), message.clone())
                .map_err(|e| invalid(task_path, format!("`{key}.{code}`: the message is not a valid template: {e}")))?;
        }
    }
    Ok(templates)
}

/// A pilot group's name: 1–64 of `a-z 0-9 - _`.
pub fn is_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Rebuilds a rule set from the sources recorded for its versions (the union of [`TaskRule::sources`]): written
/// into a private directory and loaded as any rules directory, so it compiles to the same versions. The
/// directory is removed once loaded (the rules keep their sources in memory).
pub fn load_rule_set_from_sources(sources: &Sources, evaluator: &Evaluator) -> Result<RuleSet, LoadError> {
    let dir = super::sources::SourcesDir::write(sources)?;
    load_rule_set(dir.path(), evaluator)
}
