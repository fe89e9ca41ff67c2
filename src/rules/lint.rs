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

/// One problem, where it is, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Finding {
    fn new(file: &Path, line: usize, col: usize, message: impl Into<String>, help: Option<String>) -> Self {
        Finding { file: file.to_path_buf(), line, col, message: message.into(), help }
    }

    /// The finding as a rule author reads it: location, message, the source line with a caret, the help.
    pub fn render(&self) -> String {
        let mut s = format!("{}:{}:{}: error: {}\n", self.file.display(), self.line, self.col, self.message);
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
    /// The first argument of `check(…)` / `refer(…)` when it is a string literal: the reason code, of any
    /// shape; inside each function (`""` for the top level).
    code_args: Vec<(String, String, usize, usize)>,
    /// What each of those calls passes for its message's template, in the same order.
    code_params: Vec<Params>,
    /// Variables bound to what a `ctx` method returns, per function: (function, variable, what).
    bindings: Vec<(String, String, Bound)>,
    /// Property reads `name.prop` (not method calls), per function: (function, name, prop, line, col).
    props: Vec<(String, String, String, usize, usize)>,
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

/// The parameters of the call whose code literal ends at `q` (its closing quote): the argument after the
/// condition for `check`, after the code for `refer`.
fn params_after(chars: &[char], q: usize, word: &str) -> Params {
    let wanted = if word == "check" { 2 } else { 1 };
    let (mut depth, mut commas, mut j) = (0i32, 0, q + 1);
    let mut start = None;
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
            ')' | ']' | '}' if depth == 0 => break,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                commas += 1;
                if commas == wanted {
                    start = Some(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    let Some(start) = start else { return Params::None };
    let arg: String = chars[start..j.min(chars.len())].iter().collect();
    let arg = arg.trim();
    let Some(body) = arg.strip_prefix("#{").and_then(|b| b.strip_suffix('}')) else { return Params::Unknown };
    // Keys at the map's own level: split on commas outside nested brackets.
    let (mut keys, mut depth, mut current) = (Vec::new(), 0i32, String::new());
    for c in body.chars().chain([',']) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                if let Some((key, _)) = current.split_once(':') {
                    keys.push(key.trim().trim_matches('"').to_string());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    Params::Keys(keys)
}

/// What a variable holds, as far as the scanner can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    /// `let x = ctx.method(…)`: the method's result (a record, or an array of records).
    Ctx(String),
    /// `for x in y`: an element of what `y` holds.
    ElementOf(String),
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
            if (word == "check" || word == "refer") && next == Some('(') {
                let mut k = i + 1;
                while k < chars.len() && chars[k].is_whitespace() {
                    k += 1;
                }
                if chars.get(k) == Some(&'"') {
                    let code: String = chars[k + 1..].iter().take_while(|c| **c != '"').collect();
                    let col = col + (k - i);
                    out.code_params.push(params_after(&chars, k + 1 + code.chars().count(), &word));
                    out.code_args.push((scope.clone(), code, line, col));
                }
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
                let count = params.split(',').filter(|p| !p.trim().is_empty()).count();
                out.functions.insert(name.clone(), (count, l0, BTreeSet::new()));
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

/// Lints one task folder. `lib` are the shared library files with their sources.
fn lint_task(folder: &Path, evaluator: &Evaluator, lib: &[(PathBuf, String, Scan)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let task_path = folder.join("task.yaml");
    let rule_path = folder.join("rule.rhai");
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
    let catalogue: BTreeSet<String> =
        task.get("reasons").and_then(|r| r.as_object()).map(|r| r.keys().cloned().collect()).unwrap_or_default();
    let mut fields: BTreeSet<String> = task
        .get("schema")
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    fields.extend(ENVELOPE_FIELDS.iter().map(|f| f.to_string()));
    fields.insert("protocollo".into());
    let source = match std::fs::read_to_string(&rule_path) {
        Ok(s) => s,
        Err(e) => return vec![Finding::new(&rule_path, 1, 1, format!("cannot read: {e}"), None)],
    };
    if let Err((err, at)) = evaluator.compile_at(&source) {
        let (line, col, message, help) = parse_finding(&source, &err, at);
        findings.push(Finding::new(&rule_path, line, col, message, help));
        return findings;
    }
    let rule = scan(&source);
    match rule.functions.get("decide") {
        None => findings.push(Finding::new(
            &rule_path,
            1,
            1,
            "no `fn decide(req, ctx)`: the daemon calls it to decide each request",
            Some("add `fn decide(req, ctx) { … }`".into()),
        )),
        Some((n, line, _)) if *n != 2 => findings.push(Finding::new(
            &rule_path,
            *line,
            1,
            format!("`decide` takes {n} parameter(s); it must take two: `fn decide(req, ctx)`"),
            None,
        )),
        _ => {}
    }
    for (word, line, col) in &rule.top_level {
        findings.push(Finding::new(
            &rule_path,
            *line,
            *col,
            format!("`{word}…` at the top level runs on every decision"),
            Some("only `fn` and `const` may stand outside functions: move it into `decide`".into()),
        ));
    }
    for (name, line, col) in &rule.forbidden {
        findings.push(Finding::new(
            &rule_path,
            *line,
            *col,
            format!("`{name}` is not allowed in rules"),
            Some("rules are pure: facts come from `ctx`, the date from `ctx.today`".into()),
        ));
    }
    for (field, line, col) in &rule.req_fields {
        if !fields.contains(field) {
            let help = closest(field, fields.iter())
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| Some("add the field to the task's schema in task.yaml".into()));
            findings.push(Finding::new(
                &rule_path,
                *line,
                *col,
                format!("`req.{field}` is not a field of this task's requests"),
                help,
            ));
        }
    }
    // Codes used: literals of the rule, and of the library functions it reaches.
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = rule.functions.values().flat_map(|f| f.2.iter().cloned()).collect();
    while let Some(f) = todo.pop() {
        for (_, _, scan) in lib {
            if let Some((_, _, calls)) = scan.functions.get(&f)
                && reached.insert(f.clone())
            {
                todo.extend(calls.iter().cloned());
            }
        }
    }
    // A code is a literal shaped like one anywhere, or any literal given to check/refer (whatever its shape).
    let mut used: Vec<(String, PathBuf, usize, usize)> = rule
        .strings
        .iter()
        .filter(|(s, _, _)| looks_like_code(s))
        .map(|(s, l, c)| (s.clone(), rule_path.clone(), *l, *c))
        .chain(
            rule.code_args
                .iter()
                .filter(|(_, s, ..)| !looks_like_code(s))
                .map(|(_, s, l, c)| (s.clone(), rule_path.clone(), *l, *c)),
        )
        .collect();
    for (path, _, scan) in lib {
        for f in &reached {
            for (s, l, c) in scan.literals_in.get(f).into_iter().flatten() {
                if looks_like_code(s) {
                    used.push((s.clone(), path.clone(), *l, *c));
                }
            }
        }
    }
    for (code, path, line, col) in &used {
        if !catalogue.contains(code) {
            let help = closest(code, catalogue.iter())
                .map(|c| format!("did you mean `{c}`? or add `{code}` to `reasons` in task.yaml"))
                .or_else(|| Some(format!("add `{code}` with its Italian message to `reasons` in task.yaml")));
            findings.push(Finding::new(
                path,
                *line,
                *col,
                format!("reason code `{code}` is not in the catalogue of {}", task_path.display()),
                help,
            ));
        }
    }
    findings.extend(fact_properties(&rule_path, &rule, &record_fields(evaluator)));
    findings.extend(template_params(&rule_path, &rule, &task));
    let used_codes: BTreeSet<&String> = used.iter().map(|(c, ..)| c).collect();
    for code in catalogue.iter().filter(|c| !used_codes.contains(c)) {
        let line = std::fs::read_to_string(&task_path)
            .ok()
            .and_then(|t| t.lines().position(|l| l.trim_start().starts_with(&format!("{code}:"))))
            .map_or(1, |p| p + 1);
        findings.push(Finding::new(
            &task_path,
            line,
            3,
            format!("reason code `{code}` is in the catalogue but no check or referral uses it"),
            Some("use it in rule.rhai, or remove it from `reasons`".into()),
        ));
    }
    // The rest of the loader's checks: schema, templates, id.
    if findings.is_empty()
        && let Err(e) = super::loader::load_task_for_lint(folder, evaluator)
    {
        findings.push(Finding::new(&task_path, 1, 1, e.to_string(), None));
    }
    findings
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

/// The reasons whose message uses a value that the rule's `check`/`refer` call does not pass (`{{ prot }}` with
/// no `#{ prot: … }`): the message would fail to render on the day that reason is given.
fn template_params(path: &Path, scan: &Scan, task: &serde_json::Value) -> Vec<Finding> {
    let messages = task.get("reasons").and_then(|r| r.as_object());
    let env = minijinja::Environment::new();
    let mut findings = Vec::new();
    for ((_, code, line, col), params) in scan.code_args.iter().zip(&scan.code_params) {
        let passed: BTreeSet<&str> = match params {
            Params::None => BTreeSet::new(),
            Params::Keys(keys) => keys.iter().map(String::as_str).collect(),
            Params::Unknown => continue,
        };
        let Some(message) = messages.and_then(|m| m.get(code)).and_then(|m| m.as_str()) else { continue };
        let Ok(template) = env.template_from_str(message) else { continue };
        let mut missing: Vec<String> =
            template.undeclared_variables(false).into_iter().filter(|v| !passed.contains(v.as_str())).collect();
        if missing.is_empty() {
            continue;
        }
        missing.sort();
        let pass: Vec<String> = missing.iter().map(|m| format!("{m}: …")).collect();
        findings.push(Finding::new(
            path,
            *line,
            *col,
            format!(
                "the message of `{code}` uses {}, which this call does not pass",
                missing.iter().map(|m| format!("{{{{ {m} }}}}")).collect::<Vec<_>>().join(", ")
            ),
            Some(format!("pass it: `#{{ {} }}` as the message's values", pass.join(", "))),
        ));
    }
    findings
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
        let codes: Vec<&str> = s.code_args.iter().map(|(_, c, ..)| c.as_str()).collect();
        assert_eq!(codes, ["RDI-6", "altro"]);
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
        assert_eq!(s.code_params, [Params::Keys(vec!["prot".into(), "campo".into()]), Params::None, Params::Unknown]);
        let task =
            serde_json::json!({ "reasons": { "A-01": "n. {{ prot }}", "A-02": "il {{ campo }}", "A-03": "{{ x }}" } });
        let found = template_params(Path::new("rule.rhai"), &s, &task);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("`A-02` uses {{ campo }}"), "{}", found[0].message);
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
