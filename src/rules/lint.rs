//! `smart-taskd rules check`: compiles and lints every task folder, reporting each finding at
//! file:line:col with the source line, a caret, what is wrong and what to do.
//!
//! The lints read the scripts as text (Rhai's AST is not public without its `internals` feature): a small
//! scanner skips comments and finds string literals, `req.` fields, function definitions, calls, and what
//! stands at the top level.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::engine::Evaluator;
use crate::domain::request::ENVELOPE_FIELDS;

/// How much a finding weighs: an error refuses the rule set; a notice says what the scanner could not verify,
/// and passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Notice,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Notice => "notice",
        }
    }
}

/// One problem, where it is, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
}

impl Finding {
    fn new(file: &Path, line: usize, col: usize, message: impl Into<String>, help: Option<String>) -> Self {
        Finding { file: file.to_path_buf(), line, col, severity: Severity::Error, message: message.into(), help }
    }

    /// What the scanner cannot follow, said where it is; `help` says how to write it so that it can.
    fn notice(file: &Path, line: usize, col: usize, message: impl Into<String>, help: impl Into<String>) -> Self {
        Finding { severity: Severity::Notice, ..Finding::new(file, line, col, message, Some(help.into())) }
    }

    /// Whether this finding refuses the rule set (a notice does not).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The finding as a rule author reads it: location, message, the source line with a caret, the help.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}:{}:{}: {}: {}\n",
            self.file.display(),
            self.line,
            self.col,
            self.severity.as_str(),
            self.message
        );
        if let Some(text) = std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|t| t.lines().nth(self.line.saturating_sub(1)).map(str::to_string))
        {
            let _ = writeln!(s, "{:>5} | {text}", self.line);
            let _ = writeln!(s, "      | {}^", " ".repeat(self.col.saturating_sub(1)));
        }
        if let Some(help) = &self.help {
            let _ = writeln!(s, "      = help: {help}");
        }
        s
    }
}

/// What the scanner finds in a script.
#[derive(Debug, Default)]
struct Scan {
    /// String literals with their 1-based line and column.
    strings: Vec<(String, usize, usize)>,
    /// `req.<field>` reads.
    req_fields: Vec<(String, usize, usize)>,
    /// Function definitions: name → (parameter count, line, names of functions it calls).
    functions: BTreeMap<String, (usize, usize, BTreeSet<String>)>,
    /// Codes passed as string literals inside each function: name → literals.
    literals_in: BTreeMap<String, Vec<(String, usize, usize)>>,
    /// Statements at the top level other than `fn`/`const`: (first word, line, col).
    top_level: Vec<(String, usize, usize)>,
    /// Calls of forbidden functions: (name, line, col).
    forbidden: Vec<(String, usize, usize)>,
    /// Every `check(…)` / `refer(…)` / `answer(…)` call: its reason code and the values for the code's message.
    code_calls: Vec<CodeCall>,
    /// Parameter names of each function defined.
    params: BTreeMap<String, Vec<String>>,
    /// Every call `name(a, b)` with its arguments' text, per function: (function, callee, arguments).
    calls: Vec<(String, String, Vec<String>)>,
    /// Variables bound to what a `ctx` method returns, per function: (function, variable, what).
    bindings: Vec<(String, String, Bound)>,
    /// Property reads `name.prop` (not method calls), per function: (function, name, prop, line, col).
    props: Vec<(String, String, String, usize, usize)>,
}

/// A `check(…)` / `refer(…)` call, inside a function (`""` for the top level).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CodeCall {
    scope: String,
    code: CodeArg,
    params: Params,
    line: usize,
    col: usize,
}

/// The first argument of a `check`/`refer` call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CodeArg {
    /// A string literal: the reason code, of any shape.
    Literal(String),
    /// Anything else, as written (`codici.formato`, `codice`).
    Expr(String),
}

/// The values a `check`/`refer` call passes to its reason's message, as far as the scanner can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Params {
    /// No map argument.
    None,
    /// A literal map `#{ a: …, b: … }`: its keys.
    Keys(Vec<String>),
    /// Something else (a variable): not followed.
    Unknown,
}

/// Where the bracket opened at `open` closes (strings skipped), or the end of the text.
fn closing(chars: &[char], open: usize) -> usize {
    let (mut depth, mut j) = (0i32, open);
    while j < chars.len() {
        match chars[j] {
            '"' | '`' => {
                let quote = chars[j];
                j += 1;
                while j < chars.len() && chars[j] != quote {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
        j += 1;
    }
    chars.len()
}

/// The arguments of the call whose `(` is at `open`: each as (index of its first character, text trimmed).
fn call_args(chars: &[char], open: usize) -> Vec<(usize, String)> {
    let end = closing(chars, open);
    let mut args = Vec::new();
    let mut push = |from: usize, to: usize| {
        let text: String = chars[from..to].iter().collect();
        let lead = text.chars().take_while(|c| c.is_whitespace()).count();
        if !text.trim().is_empty() {
            args.push((from + lead, text.trim().to_string()));
        }
    };
    let (mut start, mut j) = (open + 1, open + 1);
    while j < end {
        match chars[j] {
            '"' | '`' => {
                let quote = chars[j];
                j += 1;
                while j < end && chars[j] != quote {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            '(' | '[' | '{' => j = closing(chars, j),
            ',' => {
                push(start, j);
                start = j + 1;
            }
            _ => {}
        }
        j += 1;
    }
    push(start.min(end), end);
    args
}

/// The entries of a literal map `#{ a: x, "b": [1, 2] }` at its own level: (key, value as written).
fn map_entries(text: &str) -> Option<Vec<(String, String)>> {
    let body = text.trim().strip_prefix("#{")?.strip_suffix('}')?;
    let (mut entries, mut depth, mut current) = (Vec::new(), 0i32, String::new());
    let mut quote = None;
    for c in body.chars().chain([',']) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '`') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                if let Some((key, value)) = current.split_once(':') {
                    entries.push((key.trim().trim_matches('"').to_string(), value.trim().to_string()));
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    Some(entries)
}

/// What a `check` (after its condition) or `refer` (after its code) call passes for the message.
fn params_of(args: &[(usize, String)], word: &str) -> Params {
    let wanted = if word == "check" { 2 } else { 1 };
    match args.get(wanted) {
        None => Params::None,
        Some((_, text)) => match map_entries(text) {
            Some(entries) => Params::Keys(entries.into_iter().map(|(k, _)| k).collect()),
            None => Params::Unknown,
        },
    }
}

/// A string literal's text, when `text` is one (no escapes: reason codes have none).
fn string_literal(text: &str) -> Option<&str> {
    text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).filter(|t| !t.contains(['"', '\\']))
}

/// What a variable holds, as far as the scanner can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    /// `let x = ctx.method(…)`: the method's result (a record, or an array of records).
    Ctx(String),
    /// `for x in y`: an element of what `y` holds.
    ElementOf(String),
    /// `let x = #{ … }`: a literal map, its entries as written.
    Map(Vec<(String, String)>),
}

/// The identifier at `j` (after spaces), and the index after it.
fn ident_at(chars: &[char], mut j: usize) -> (String, usize) {
    while j < chars.len() && chars[j] == ' ' {
        j += 1;
    }
    let mut word = String::new();
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        word.push(chars[j]);
        j += 1;
    }
    (word, j)
}

/// Looks ahead of `let NAME = ctx.M(` / `for NAME in ctx.M(` / `for NAME in VAR` (the keyword just read,
/// `j` after it): what NAME holds, if the scanner can tell.
fn binding_at(chars: &[char], keyword: &str, j: usize) -> Option<(String, Bound)> {
    let (name, j) = ident_at(chars, j);
    if name.is_empty() {
        return None;
    }
    let mut k = j;
    while k < chars.len() && chars[k] == ' ' {
        k += 1;
    }
    let k = match keyword {
        "let" if chars.get(k) == Some(&'=') && chars.get(k + 1) != Some(&'=') => k + 1,
        "for" => {
            let (word, k) = ident_at(chars, k);
            if word != "in" {
                return None;
            }
            k
        }
        _ => return None,
    };
    let mut m = k;
    while m < chars.len() && chars[m].is_whitespace() {
        m += 1;
    }
    if keyword == "let" && chars.get(m) == Some(&'#') && chars.get(m + 1) == Some(&'{') {
        let end = closing(chars, m + 1);
        let text: String = chars[m..(end + 1).min(chars.len())].iter().collect();
        return map_entries(&text).map(|entries| (name, Bound::Map(entries)));
    }
    let (first, after) = ident_at(chars, k);
    if first == "ctx" && chars.get(after) == Some(&'.') {
        let (method, after) = ident_at(chars, after + 1);
        return (chars.get(after) == Some(&'(')).then_some((name, Bound::Ctx(method)));
    }
    (keyword == "for" && !first.is_empty() && chars.get(after) != Some(&'(') && chars.get(after) != Some(&'.'))
        .then_some((name, Bound::ElementOf(first)))
}

const FORBIDDEN: &[&str] = &["eval", "sleep", "timestamp", "import", "export"];

/// Moves past the character at `i`, keeping line and column.
fn step(chars: &[char], i: &mut usize, line: &mut usize, col: &mut usize) {
    if chars.get(*i) == Some(&'\n') {
        *line += 1;
        *col = 1;
    } else {
        *col += 1;
    }
    *i += 1;
}

fn scan(source: &str) -> Scan {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Scan::default();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut depth = 0usize;
    let mut current_fn: Option<(String, usize)> = None; // (name, depth at which its body opened)
    let mut at_statement_start = true;
    while i < chars.len() {
        let c = chars[i];
        // Comments.
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                step(&chars, &mut i, &mut line, &mut col);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                step(&chars, &mut i, &mut line, &mut col);
            }
            step(&chars, &mut i, &mut line, &mut col);
            step(&chars, &mut i, &mut line, &mut col);
            continue;
        }
        // String literals.
        if c == '"' || c == '`' {
            let (l0, c0) = (line, col);
            let quote = c;
            step(&chars, &mut i, &mut line, &mut col);
            let mut text = String::new();
            while i < chars.len() && chars[i] != quote {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    step(&chars, &mut i, &mut line, &mut col);
                }
                text.push(chars[i]);
                step(&chars, &mut i, &mut line, &mut col);
            }
            step(&chars, &mut i, &mut line, &mut col);
            if let Some((name, _)) = &current_fn {
                out.literals_in.entry(name.clone()).or_default().push((text.clone(), l0, c0));
            }
            out.strings.push((text, l0, c0));
            at_statement_start = false;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let (l0, c0) = (line, col);
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                word.push(chars[i]);
                step(&chars, &mut i, &mut line, &mut col);
            }
            if depth == 0 && at_statement_start && !matches!(word.as_str(), "fn" | "const" | "private") {
                out.top_level.push((word.clone(), l0, c0));
            }
            at_statement_start = false;
            let next = chars.get(i).copied();
            let scope = current_fn.as_ref().map_or(String::new(), |(n, _)| n.clone());
            if (word == "let" || word == "for")
                && let Some((name, bound)) = binding_at(&chars, &word, i)
            {
                out.bindings.push((scope.clone(), name, bound));
            }
            if next == Some('(') && !matches!(word.as_str(), "fn" | "if" | "while" | "for" | "switch" | "return") {
                let args = call_args(&chars, i);
                if word == "check" || word == "refer" || word == "answer" {
                    // Line and column of the first argument (on the call's line, as rules write them).
                    let first = args.first().map_or(i + 1, |(at, _)| *at);
                    let col = col + (first - i);
                    let code = match args.first().map(|(_, t)| t.as_str()) {
                        Some(t) if t.starts_with('"') => {
                            CodeArg::Literal(t.trim_matches('"').chars().take_while(|c| *c != '"').collect())
                        }
                        t => CodeArg::Expr(t.unwrap_or_default().to_string()),
                    };
                    let params = params_of(&args, &word);
                    out.code_calls.push(CodeCall { scope: scope.clone(), code, params, line, col });
                }
                out.calls.push((scope.clone(), word.clone(), args.into_iter().map(|(_, t)| t).collect()));
            }
            if word != "req" && word != "ctx" && next == Some('.') {
                let (prop, after) = ident_at(&chars, i + 1);
                if !prop.is_empty() && chars.get(after) != Some(&'(') {
                    out.props.push((scope.clone(), word.clone(), prop, l0, c0));
                }
            }
            if word == "req" && next == Some('.') {
                step(&chars, &mut i, &mut line, &mut col);
                let mut field = String::new();
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    field.push(chars[i]);
                    step(&chars, &mut i, &mut line, &mut col);
                }
                out.req_fields.push((field, l0, c0));
                continue;
            }
            if word == "fn" || (word == "private" && depth == 0) {
                // `fn name(a, b)`: skip to the name and count parameters.
                while i < chars.len() && chars[i].is_whitespace() {
                    step(&chars, &mut i, &mut line, &mut col);
                }
                let mut name = String::new();
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    name.push(chars[i]);
                    step(&chars, &mut i, &mut line, &mut col);
                }
                if name == "fn" {
                    continue; // `private fn`: the next iteration reads `fn`
                }
                let mut params = String::new();
                if chars.get(i) == Some(&'(') {
                    step(&chars, &mut i, &mut line, &mut col);
                    while i < chars.len() && chars[i] != ')' {
                        params.push(chars[i]);
                        step(&chars, &mut i, &mut line, &mut col);
                    }
                }
                let names: Vec<String> =
                    params.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
                out.functions.insert(name.clone(), (names.len(), l0, BTreeSet::new()));
                out.params.insert(name.clone(), names);
                current_fn = Some((name, depth + 1));
                continue;
            }
            if next == Some('(') || (word == "import" || word == "export") {
                if FORBIDDEN.contains(&word.as_str()) {
                    out.forbidden.push((word.clone(), l0, c0));
                }
                if let Some((name, _)) = &current_fn
                    && let Some(f) = out.functions.get_mut(name)
                {
                    f.2.insert(word);
                }
            }
            continue;
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if current_fn.as_ref().is_some_and(|(_, d)| depth < *d) {
                    current_fn = None;
                }
                if depth == 0 {
                    at_statement_start = true;
                }
            }
            ';' if depth == 0 => at_statement_start = true,
            _ => {}
        }
        step(&chars, &mut i, &mut line, &mut col);
    }
    out
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    candidates.map(|c| (distance(word, c), c)).filter(|(d, _)| *d <= 3).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

fn looks_like_code(s: &str) -> bool {
    let mut parts = s.split('-');
    matches!((parts.next(), parts.next(), parts.next()), (Some(p), Some(n), None)
        if (1..=4).contains(&p.len()) && p.chars().all(|c| c.is_ascii_uppercase()) && n.len() == 2 && n.chars().all(|c| c.is_ascii_digit()))
}

/// Rewrites Rhai's parse errors where they mislead a rule author; returns (line, col, message, help).
fn parse_finding(
    source: &str,
    err: &rhai::ParseError,
    at: Option<(usize, usize)>,
) -> (usize, usize, String, Option<String>) {
    let (line, col) = at.unwrap_or((1, 1));
    let text = err.0.to_string();
    if text.starts_with("Expecting ';'") {
        // Rhai reports a missing `;` at the start of the next statement: point at the end of the previous one.
        let lines: Vec<&str> = source.lines().collect();
        if let Some((n, l)) =
            lines.iter().enumerate().take(line.saturating_sub(1)).rev().find(|(_, l)| !l.trim().is_empty())
        {
            let end = l.trim_end().chars().count() + 1;
            return (n + 1, end, "missing `;` at the end of this statement".into(), Some("add `;` here".into()));
        }
    }
    if let rhai::ParseErrorType::VariableUndefined(name) = err.0.as_ref() {
        return (
            line,
            col,
            format!("variable `{name}` is not defined"),
            Some(format!(
                "declare it with `let {name} = …;` first, or check the spelling (fields of the request are `req.{name}`)"
            )),
        );
    }
    (line, col, text, None)
}

/// What the scripts of one task are checked against.
struct TaskContext<'a> {
    evaluator: &'a Evaluator,
    /// The shared library files with their sources and scans.
    lib: &'a [(PathBuf, String, Scan)],
    task_path: &'a Path,
    /// The request's fields: the schema's, the envelope's, `protocollo`.
    fields: BTreeSet<String>,
    /// The fields of the records each `ctx` method returns.
    records: BTreeMap<String, BTreeSet<String>>,
}

/// The reason catalogue one script may use.
struct Catalogue<'a> {
    /// Code → message template.
    messages: &'a BTreeMap<String, String>,
    /// The task.yaml key a missing code is added to (`reasons`, or `candidate_reasons` for a candidate).
    section: &'static str,
    /// Codes of the task that this script may not use: the candidate's own, for rule.rhai.
    others: BTreeSet<String>,
}

/// A task.yaml map of reason code → message (`reasons`, `candidate_reasons`); empty when absent.
fn messages_of(task: &serde_json::Value, key: &str) -> BTreeMap<String, String> {
    task.get(key)
        .and_then(|r| r.as_object())
        .map(|r| r.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The line of `code:` in task.yaml after the line of `section:` (1 when not found).
fn code_line(task_path: &Path, section: &str, code: &str) -> usize {
    let text = std::fs::read_to_string(task_path).unwrap_or_default();
    let from = text.lines().position(|l| l.starts_with(&format!("{section}:"))).unwrap_or(0);
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.trim_start().starts_with(&format!("{code}:")))
        .map_or(1, |(n, _)| n + 1)
}

/// Lints one task folder: rule.rhai against `reasons`, and in shadow mode the candidate against `reasons` and
/// `candidate_reasons`. `lib` are the shared library files with their sources.
fn lint_task(folder: &Path, evaluator: &Evaluator, lib: &[(PathBuf, String, Scan)]) -> Vec<Finding> {
    let task_path = folder.join("task.yaml");
    let task: serde_json::Value = match std::fs::read_to_string(&task_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_saphyr::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return vec![Finding::new(&task_path, 1, 1, e, None)],
    };
    // A typo in task.yaml (`reason:` for `reasons:`) is named once, where it is, rather than as every finding it
    // would cause in the rule (each code "not in the catalogue").
    if let Some((line, col, message)) =
        std::fs::read_to_string(&task_path).ok().and_then(|t| super::loader::task_file_problem(&t))
    {
        return vec![Finding::new(
            &task_path,
            line,
            col,
            message,
            Some("fix task.yaml first: the rule is checked once its task file reads".into()),
        )];
    }
    let reasons = messages_of(&task, "reasons");
    let candidate_reasons = messages_of(&task, "candidate_reasons");
    let mut fields: BTreeSet<String> = task
        .get("schema")
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    fields.extend(ENVELOPE_FIELDS.iter().map(|f| f.to_string()));
    fields.insert("protocollo".into());
    // A quesito's `ambito` comes from `ambiti` (the loader adds it to the schema).
    let kind = task.get("tipo").and_then(|t| serde_json::from_value::<super::TaskKind>(t.clone()).ok());
    if kind == Some(super::TaskKind::Quesito) {
        fields.insert("ambito".into());
    }
    let context = TaskContext { evaluator, lib, task_path: &task_path, fields, records: record_fields(evaluator) };

    let active =
        Catalogue { messages: &reasons, section: "reasons", others: candidate_reasons.keys().cloned().collect() };
    let (mut findings, used) = lint_script(&context, &folder.join("rule.rhai"), &active);
    for code in reasons.keys().filter(|c| used.as_ref().is_some_and(|u| !u.contains(*c))) {
        findings.push(Finding::new(
            &task_path,
            code_line(&task_path, "reasons", code),
            3,
            format!("reason code `{code}` is in the catalogue but no check or referral uses it"),
            Some("use it in rule.rhai, or remove it from `reasons`".into()),
        ));
    }
    // The candidate of a shadow task goes live the day it is promoted: it is checked as rule.rhai is, with the
    // catalogue it decides with (its own codes over the task's).
    if task.get("mode").and_then(|m| m.as_str()) == Some("shadow")
        && let Some(file) = task.get("candidate").and_then(|c| c.as_str())
    {
        let mut union = reasons.clone();
        union.extend(candidate_reasons.clone());
        let candidate = Catalogue { messages: &union, section: "candidate_reasons", others: BTreeSet::new() };
        let (more, used) = lint_script(&context, &folder.join(file), &candidate);
        findings.extend(more);
        for code in candidate_reasons.keys().filter(|c| used.as_ref().is_some_and(|u| !u.contains(*c))) {
            findings.push(Finding::new(
                &task_path,
                code_line(&task_path, "candidate_reasons", code),
                3,
                format!("reason code `{code}` is in `candidate_reasons` but no check or referral of {file} uses it"),
                Some(format!("use it in {file}, or remove it from `candidate_reasons`")),
            ));
        }
    }
    // The rest of the loader's checks: schema, templates, id.
    if !findings.iter().any(Finding::is_error)
        && let Err(e) = super::loader::load_task_for_lint(folder, evaluator)
    {
        findings.push(Finding::new(&task_path, 1, 1, e.to_string(), None));
    }
    findings
}

/// Lints one script of a task (rule.rhai, or a shadow candidate) with the library functions it reaches. Returns
/// the findings and, when the script compiles, the reason codes it uses.
fn lint_script(context: &TaskContext, path: &Path, catalogue: &Catalogue) -> (Vec<Finding>, Option<BTreeSet<String>>) {
    let mut findings = Vec::new();
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => return (vec![Finding::new(path, 1, 1, format!("cannot read: {e}"), None)], None),
    };
    if let Err((err, at)) = context.evaluator.compile_at(&source) {
        let (line, col, message, help) = parse_finding(&source, &err, at);
        findings.push(Finding::new(path, line, col, message, help));
        return (findings, None);
    }
    let rule = scan(&source);
    match rule.functions.get("decide") {
        None => findings.push(Finding::new(
            path,
            1,
            1,
            "no `fn decide(req, ctx)`: the daemon calls it to decide each request",
            Some("add `fn decide(req, ctx) { … }`".into()),
        )),
        Some((n, line, _)) if *n != 2 => findings.push(Finding::new(
            path,
            *line,
            1,
            format!("`decide` takes {n} parameter(s); it must take two: `fn decide(req, ctx)`"),
            None,
        )),
        _ => {}
    }
    for (word, line, col) in &rule.top_level {
        findings.push(Finding::new(
            path,
            *line,
            *col,
            format!("`{word}…` at the top level runs on every decision"),
            Some("only `fn` and `const` may stand outside functions: move it into `decide`".into()),
        ));
    }
    for (name, line, col) in &rule.forbidden {
        findings.push(Finding::new(
            path,
            *line,
            *col,
            format!("`{name}` is not allowed in rules"),
            Some("rules are pure: facts come from `ctx`, the date from `ctx.today`".into()),
        ));
    }
    for (field, line, col) in &rule.req_fields {
        if !context.fields.contains(field) {
            let help = closest(field, context.fields.iter())
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| Some("add the field to the task's schema in task.yaml".into()));
            findings.push(Finding::new(
                path,
                *line,
                *col,
                format!("`req.{field}` is not a field of this task's requests"),
                help,
            ));
        }
    }
    // The library functions the script reaches.
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = rule.functions.values().flat_map(|f| f.2.iter().cloned()).collect();
    while let Some(f) = todo.pop() {
        for (_, _, scan) in context.lib {
            if let Some((_, _, calls)) = scan.functions.get(&f)
                && reached.insert(f.clone())
            {
                todo.extend(calls.iter().cloned());
            }
        }
    }
    // The scans whose calls may pass values to a function: the script's and the library's.
    let scans: Vec<&Scan> = std::iter::once(&rule).chain(context.lib.iter().map(|(_, _, s)| s)).collect();
    // The check/refer calls of the script and of the library functions it reaches, with the codes each gives.
    let mut calls: Vec<(&Path, &CodeCall, Vec<String>)> = Vec::new();
    let in_lib = context.lib.iter().flat_map(|(p, _, s)| {
        s.code_calls.iter().filter(|c| reached.contains(&c.scope)).map(move |c| (p.as_path(), s, c))
    });
    for (file, scan, call) in rule.code_calls.iter().map(|c| (path, &rule, c)).chain(in_lib) {
        match &call.code {
            CodeArg::Literal(code) => calls.push((file, call, vec![code.clone()])),
            CodeArg::Expr(expr) => match resolve_code(expr, &call.scope, scan, &scans) {
                Some(codes) => calls.push((file, call, codes)),
                None => findings.push(Finding::notice(
                    file,
                    call.line,
                    call.col,
                    format!(
                        "the reason code is not a literal: rules check cannot verify it against task.yaml's reasons \
                         (`{expr}`)"
                    ),
                    "use a literal, e.g. check(\"XXX-01\", cond), or a key of a literal map the scanner can \
                     follow (`let codici = #{ formato: \"XXX-01\" }` passed to the function)",
                )),
            },
        }
    }
    // A code is a literal shaped like one anywhere, or any code given to check/refer (whatever its shape).
    let mut used: Vec<(String, PathBuf, usize, usize)> = rule
        .strings
        .iter()
        .filter(|(s, _, _)| looks_like_code(s))
        .map(|(s, l, c)| (s.clone(), path.to_path_buf(), *l, *c))
        .collect();
    for (p, _, scan) in context.lib {
        for f in &reached {
            for (s, l, c) in scan.literals_in.get(f).into_iter().flatten() {
                if looks_like_code(s) {
                    used.push((s.clone(), p.clone(), *l, *c));
                }
            }
        }
    }
    for (file, call, codes) in &calls {
        for code in codes.iter().filter(|c| !looks_like_code(c) || matches!(call.code, CodeArg::Expr(_))) {
            used.push((code.clone(), file.to_path_buf(), call.line, call.col));
        }
    }
    let task = context.task_path.display();
    let mut seen = BTreeSet::new();
    for (code, file, line, col) in &used {
        if catalogue.messages.contains_key(code) || !seen.insert((code, file, line, col)) {
            continue;
        }
        if catalogue.others.contains(code) {
            findings.push(Finding::new(
                file,
                *line,
                *col,
                format!("reason code `{code}` is in `candidate_reasons`: only the candidate may use it"),
                Some(format!("to give it in {}, move `{code}` to `reasons` in {task}", file.display())),
            ));
            continue;
        }
        let section = catalogue.section;
        let help = closest(code, catalogue.messages.keys())
            .map(|c| format!("did you mean `{c}`? or add `{code}` to `{section}` in task.yaml"))
            .unwrap_or_else(|| format!("add `{code}` with its Italian message to `{section}` in task.yaml"));
        findings.push(Finding::new(
            file,
            *line,
            *col,
            format!("reason code `{code}` is not in the catalogue of {task}"),
            Some(help),
        ));
    }
    findings.extend(fact_properties(path, &rule, &context.records));
    for (file, call, codes) in &calls {
        for code in codes {
            findings.extend(template_params(file, call, code, catalogue.messages));
        }
    }
    (findings, Some(used.into_iter().map(|(c, ..)| c).collect()))
}

/// The codes a non-literal code argument `var.key` can take, when the scanner can follow it: a key of a literal
/// map bound in the same function (`let codici = #{ formato: "VCI-03" }`), or of the literal maps every call of
/// the function passes for that parameter (the library's `verifica_variazione(…, codici)`); `()` gives no code.
/// `None` when it cannot tell.
fn resolve_code(expr: &str, scope: &str, scan: &Scan, scans: &[&Scan]) -> Option<Vec<String>> {
    let (var, key) = expr.split_once('.')?;
    let is_ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    if !is_ident(var) || !is_ident(key) {
        return None;
    }
    let map_of = |scan: &Scan, scope: &str, var: &str| -> Option<Vec<(String, String)>> {
        match scan.bindings.iter().rev().find(|(s, n, _)| s == scope && n == var).map(|(_, _, b)| b)? {
            Bound::Map(entries) => Some(entries.clone()),
            _ => None,
        }
    };
    let mut values = Vec::new();
    if let Some(entries) = map_of(scan, scope, var) {
        values.push(entries.into_iter().find(|(k, _)| k == key)?.1);
    } else {
        let index = scan.params.get(scope)?.iter().position(|p| p == var)?;
        for s in scans {
            for (caller, _, args) in s.calls.iter().filter(|(_, callee, _)| callee == scope) {
                let arg = args.get(index)?;
                let entries = map_entries(arg).or_else(|| map_of(s, caller, arg))?;
                values.push(entries.into_iter().find(|(k, _)| k == key)?.1);
            }
        }
    }
    if values.is_empty() {
        return None;
    }
    let mut codes = Vec::new();
    for value in values {
        if value == "()" {
            continue;
        }
        codes.push(string_literal(&value)?.to_string());
    }
    Some(codes)
}

/// The fields of what each `ctx` method returns, read from the host API's own documentation (`#{a, b, …}`);
/// the methods returning lists of the same records share them.
fn record_fields(evaluator: &Evaluator) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for doc in evaluator.host_docs() {
        let Some(method) = doc.signature.strip_prefix("ctx.").and_then(|s| s.split('(').next()) else { continue };
        let Some(fields) = doc.doc.split_once("#{").and_then(|(_, rest)| rest.split_once('}')).map(|(f, _)| f) else {
            continue;
        };
        out.insert(
            method.to_string(),
            fields.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect(),
        );
    }
    for (list, of) in
        [("delegations", "delegation"), ("delegations_held", "delegation"), ("position_contacts", "contacts")]
    {
        if let Some(fields) = out.get(of).cloned() {
            out.entry(list.to_string()).or_insert(fields);
        }
    }
    out
}

/// Property reads on what a `ctx` method returned that its records do not have (`azienda.pec_reg`), found where
/// the scanner can follow the variable: `let x = ctx.m(…)`, `for x in ctx.m(…)`, `for x in y`.
fn fact_properties(path: &Path, scan: &Scan, fields: &BTreeMap<String, BTreeSet<String>>) -> Vec<Finding> {
    let method_of = |scope: &str, name: &str| -> Option<String> {
        let mut name = name.to_string();
        for _ in 0..4 {
            match scan.bindings.iter().rev().find(|(s, n, _)| s == scope && *n == name).map(|(_, _, b)| b.clone())? {
                Bound::Ctx(method) => return Some(method),
                Bound::ElementOf(of) => name = of,
                Bound::Map(_) => return None,
            }
        }
        None
    };
    let mut findings = Vec::new();
    for (scope, name, prop, line, col) in &scan.props {
        let Some(method) = method_of(scope, name) else { continue };
        let Some(known) = fields.get(&method) else { continue };
        if !known.contains(prop) {
            // A shortened name (`pec_reg`) is suggested by its prefix, a misspelt one by its distance.
            let nearest = known.iter().find(|k| k.starts_with(prop.as_str())).or_else(|| closest(prop, known.iter()));
            let help = nearest.map_or_else(
                || format!("its records have: {}", known.iter().cloned().collect::<Vec<_>>().join(", ")),
                |c| {
                    format!(
                        "did you mean `{c}`? (its records have: {})",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
            );
            findings.push(Finding::new(
                path,
                *line,
                *col,
                format!("`{name}.{prop}`: what `ctx.{method}(…)` returns has no field `{prop}`"),
                Some(help),
            ));
        }
    }
    findings
}

/// A reason whose message uses a value that the `check`/`refer` call giving it does not pass (`{{ prot }}` with
/// no `#{ prot: … }`): the message would fail to render on the day that reason is given. When the call passes
/// something other than a literal map, the scanner cannot tell, and says so.
fn template_params(path: &Path, call: &CodeCall, code: &str, messages: &BTreeMap<String, String>) -> Option<Finding> {
    let env = minijinja::Environment::new();
    let template = env.template_from_str(messages.get(code)?).ok()?;
    let mut used: Vec<String> = template.undeclared_variables(false).into_iter().collect();
    used.sort();
    let passed: BTreeSet<&str> = match &call.params {
        Params::None => BTreeSet::new(),
        Params::Keys(keys) => keys.iter().map(String::as_str).collect(),
        Params::Unknown if used.is_empty() => return None,
        Params::Unknown => {
            let pass: Vec<String> = used.iter().map(|m| format!("{m}: …")).collect();
            return Some(Finding::notice(
                path,
                call.line,
                call.col,
                format!(
                    "the values for the message of `{code}` are not a literal map: rules check cannot verify they \
                     give {}",
                    used.iter().map(|m| format!("{{{{ {m} }}}}")).collect::<Vec<_>>().join(", ")
                ),
                format!("pass them as `#{{ {} }}` in the call", pass.join(", ")),
            ));
        }
    };
    let missing: Vec<&String> = used.iter().filter(|v| !passed.contains(v.as_str())).collect();
    if missing.is_empty() {
        return None;
    }
    let pass: Vec<String> = missing.iter().map(|m| format!("{m}: …")).collect();
    Some(Finding::new(
        path,
        call.line,
        call.col,
        format!(
            "the message of `{code}` uses {}, which this call does not pass",
            missing.iter().map(|m| format!("{{{{ {m} }}}}")).collect::<Vec<_>>().join(", ")
        ),
        Some(format!("pass it: `#{{ {} }}` as the message's values", pass.join(", "))),
    ))
}

/// Lints every task folder of a rules directory (and its `lib/`).
pub fn check_rules(dir: &Path, evaluator: &Evaluator) -> Result<Vec<Finding>, std::io::Error> {
    let mut lib = Vec::new();
    let lib_dir = dir.join("lib");
    let mut findings = Vec::new();
    if lib_dir.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&lib_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        files.sort();
        for f in files {
            let source = std::fs::read_to_string(&f)?;
            if let Err((err, at)) = evaluator.compile_at(&source) {
                let (line, col, message, help) = parse_finding(&source, &err, at);
                findings.push(Finding::new(&f, line, col, message, help));
            }
            let s = scan(&source);
            for (word, line, col) in &s.top_level {
                findings.push(Finding::new(
                    &f,
                    *line,
                    *col,
                    format!("`{word}…` at the top level of a library"),
                    Some("a library holds only `fn` and `const`".into()),
                ));
            }
            for (name, line, col) in &s.forbidden {
                findings.push(Finding::new(&f, *line, *col, format!("`{name}` is not allowed in rules"), None));
            }
            lib.push((f, source, s));
        }
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("task.yaml").is_file())
        .collect();
    folders.sort();
    for folder in folders {
        findings.extend(lint_task(&folder, evaluator, &lib));
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_fields_codes_top_level_and_calls() {
        let s = scan(
            "// c\nconst X = 1;\nlet y = 2;\nfn decide(req, ctx) {\n  check(\"AB-01\", req.campo == \"x\"); helper(req)\n}\nfn helper(r) { sleep(1); }",
        );
        assert_eq!(s.top_level, vec![("let".to_string(), 3, 1)]);
        assert_eq!(s.req_fields[0], ("campo".to_string(), 5, 18));
        assert_eq!(s.functions["decide"].0, 2);
        assert!(s.functions["decide"].2.contains("helper"));
        assert_eq!(s.forbidden[0].0, "sleep");
        assert!(s.literals_in["decide"].iter().any(|(t, _, _)| t == "AB-01"));
    }

    #[test]
    fn codes_given_to_check_and_properties_of_facts_are_found() {
        let s = scan(
            "fn decide(req, ctx) {\n  let azienda = ctx.company(req.matricola);\n  check(\"RDI-6\", azienda.pec_reg != ());\n  for d in ctx.delegations(req.matricola) { refer(\"altro\"); d.stato; }\n}",
        );
        let codes: Vec<&CodeArg> = s.code_calls.iter().map(|c| &c.code).collect();
        assert_eq!(codes, [&CodeArg::Literal("RDI-6".into()), &CodeArg::Literal("altro".into())]);
        assert!(s.bindings.contains(&("decide".into(), "azienda".into(), Bound::Ctx("company".into()))));
        assert!(s.bindings.contains(&("decide".into(), "d".into(), Bound::Ctx("delegations".into()))));
        let fields = BTreeMap::from([
            ("company".to_string(), BTreeSet::from(["pec_registro_imprese".to_string(), "sede".to_string()])),
            ("delegations".to_string(), BTreeSet::from(["stato".to_string()])),
        ]);
        let found = fact_properties(Path::new("rule.rhai"), &s, &fields);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].message.contains("azienda.pec_reg")
                && found[0].help.as_deref().is_some_and(|h| h.contains("pec_registro_imprese"))
        );
    }

    #[test]
    fn the_values_passed_to_a_message_are_read_from_the_call() {
        let s = scan(
            "fn decide(req, ctx) {\n  check(\"A-01\", f(1, 2), #{ prot: x, \"campo\": [1, 2] });\n  check(\"A-02\", true);\n  refer(\"A-03\", m);\n}",
        );
        let params: Vec<&Params> = s.code_calls.iter().map(|c| &c.params).collect();
        assert_eq!(params, [&Params::Keys(vec!["prot".into(), "campo".into()]), &Params::None, &Params::Unknown]);
        let messages = BTreeMap::from([
            ("A-01".to_string(), "n. {{ prot }}".to_string()),
            ("A-02".to_string(), "il {{ campo }}".to_string()),
            ("A-03".to_string(), "{{ x }}".to_string()),
        ]);
        let found: Vec<Finding> = s
            .code_calls
            .iter()
            .filter_map(|c| match &c.code {
                CodeArg::Literal(code) => template_params(Path::new("rule.rhai"), c, code, &messages),
                CodeArg::Expr(_) => None,
            })
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].is_error() && found[0].message.contains("`A-02` uses {{ campo }}"), "{}", found[0].message);
        assert!(!found[1].is_error() && found[1].message.contains("`A-03` are not a literal map"), "{found:?}");
    }

    #[test]
    fn a_code_passed_in_a_literal_map_is_followed_to_the_calls() {
        let lib = scan(
            "fn verifica(richiesti, codici) {\n  check(codici.formato, true);\n  if codici.anomalo != () { check(codici.anomalo, true); }\n  check(codici[0], true);\n}",
        );
        let rule = scan(
            "fn decide(req, ctx) {\n  let codici = #{ formato: \"A-01\", anomalo: () };\n  verifica([], codici);\n  verifica([], #{ formato: \"A-02\", anomalo: \"A-03\" });\n}",
        );
        let scans = [&rule, &lib];
        let exprs: Vec<&str> = lib
            .code_calls
            .iter()
            .filter_map(|c| match &c.code {
                CodeArg::Expr(e) => Some(e.as_str()),
                CodeArg::Literal(_) => None,
            })
            .collect();
        assert_eq!(exprs, ["codici.formato", "codici.anomalo", "codici[0]"]);
        assert_eq!(resolve_code("codici.formato", "verifica", &lib, &scans), Some(vec!["A-01".into(), "A-02".into()]));
        assert_eq!(resolve_code("codici.anomalo", "verifica", &lib, &scans), Some(vec!["A-03".into()]));
        assert_eq!(resolve_code("codici[0]", "verifica", &lib, &scans), None);
        let local = scan("fn decide(req, ctx) {\n  let c = #{ a: \"A-01\", b: req.x };\n  check(c.a, true);\n}");
        assert_eq!(resolve_code("c.a", "decide", &local, &[&local]), Some(vec!["A-01".into()]));
        assert_eq!(resolve_code("c.b", "decide", &local, &[&local]), None);
        assert_eq!(resolve_code("codice", "decide", &local, &[&local]), None);
    }

    #[test]
    fn suggestions() {
        let fields = ["cf_intermediario".to_string(), "matricola".to_string()];
        assert_eq!(closest("cf_intermediaro", fields.iter()).map(String::as_str), Some("cf_intermediario"));
        assert!(
            looks_like_code("RDI-01")
                && looks_like_code("GEN-05")
                && !looks_like_code("ATTIVA")
                && !looks_like_code("2026-01-01")
        );
    }
}
