//! The code map of ARCHITECTURE.md holds: every `crate::` path in `src/` respects the "May not import" column of
//! the module it is written in, every module of `src/` has a row, and the modules' imports form no cycle.
//!
//! The column's grammar (ARCHITECTURE.md says it once): backticked module names it may not import;
//! `everything but` the ones it may; `everything`; `as` another row; `—` for none. Parenthesised words are
//! commentary. A rule the checker cannot read fails the test rather than passing silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a row allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// These top-level modules may not be imported.
    Forbid(BTreeSet<String>),
    /// Only these top-level modules may be imported.
    Allow(BTreeSet<String>),
    /// The same as another row.
    As(String),
}

fn backticked(text: &str) -> (BTreeSet<String>, String) {
    let mut names = BTreeSet::new();
    let mut rest = String::new();
    let mut parts = text.split('`');
    while let Some(outside) = parts.next() {
        rest.push_str(outside);
        if let Some(inside) = parts.next() {
            names.insert(inside.to_string());
        }
    }
    (names, rest)
}

fn without_parentheses(text: &str) -> String {
    let mut depth = 0usize;
    text.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    return false;
                }
                _ => {}
            }
            depth == 0
        })
        .collect()
}

fn parse_rule(cell: &str) -> Result<Rule, String> {
    let text = without_parentheses(cell);
    let text = text.trim();
    let (kind, list) = if text == "—" {
        return Ok(Rule::Forbid(BTreeSet::new()));
    } else if let Some(rest) = text.strip_prefix("everything but") {
        ("allow", rest)
    } else if text == "everything" {
        return Ok(Rule::Allow(BTreeSet::new()));
    } else if let Some(rest) = text.strip_prefix("as ") {
        ("as", rest)
    } else {
        ("forbid", text)
    };
    let (names, rest) = backticked(list);
    let leftover: String = rest.replace([',', ' '], "").replace("and", "");
    if !leftover.is_empty() || names.is_empty() {
        return Err(format!(
            "cannot read `{cell}`: expected backticked module names, `everything but …`, `everything`, `as …` or `—`"
        ));
    }
    Ok(match kind {
        "allow" => Rule::Allow(names),
        "as" => Rule::As(names.into_iter().next().unwrap_or_default()),
        _ => Rule::Forbid(names),
    })
}

/// The code map's rows: module path (e.g. `store` or `store::sql::dialect`) → rule.
fn parse_code_map(architecture: &str) -> Result<BTreeMap<String, Rule>, String> {
    let section = architecture.split("\n## Code map").nth(1).ok_or("ARCHITECTURE.md has no `## Code map` section")?;
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
        let (Some(first), Some(last)) = (cells.first(), cells.last()) else { continue };
        let rule = parse_rule(last).map_err(|e| format!("code map row {first}: {e}"))?;
        let path = first.trim().trim_matches('`');
        // `store::sql::{intake, claims}` names several submodules.
        match path.split_once("::{") {
            Some((parent, group)) => {
                for name in group.trim_end_matches('}').split(',') {
                    rows.insert(format!("{parent}::{}", name.trim()), rule.clone());
                }
            }
            None => {
                rows.insert(path.to_string(), rule);
            }
        }
    }
    if rows.is_empty() {
        return Err("the code map has no rows".into());
    }
    Ok(rows)
}

/// The top-level modules a source file's `crate::` paths name (comments left out).
fn imports(source: &str) -> BTreeSet<String> {
    let code: String = source.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `smart_task::crate::` cannot occur; skip `$crate::` of macros, which names this crate's root.
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut expect_name = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if expect_name && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if expect_name && !name.is_empty() => {
                        out.insert(std::mem::take(&mut name));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The module path of a file under `src/` (`store/sql/dialect.rs` → `store::sql::dialect`, `app/mod.rs` → `app`).
fn module_path(relative: &Path) -> String {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
    }
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Resolves `as` rows and finds the most specific row for a module path.
fn rule_for<'a>(rows: &'a BTreeMap<String, Rule>, module: &str) -> Option<&'a Rule> {
    let mut path = module.to_string();
    loop {
        if let Some(rule) = rows.get(&path) {
            return match rule {
                Rule::As(other) => rule_for(rows, other),
                rule => Some(rule),
            };
        }
        match path.rfind("::") {
            Some(at) => path.truncate(at),
            None => return None,
        }
    }
}

/// Every problem of `files` (module path → source) against `rows`: forbidden imports, modules without a row,
/// rows without a module, cycles among the top-level modules.
fn check(rows: &BTreeMap<String, Rule>, files: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let tops: BTreeSet<String> = files.keys().map(|m| m.split("::").next().unwrap_or_default().to_string()).collect();
    for row in rows.keys() {
        if !files.keys().any(|m| m == row || m.starts_with(&format!("{row}::"))) {
            problems.push(format!("the code map has a row for `{row}`, which is not a module of src/"));
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, source) in files {
        let top = module.split("::").next().unwrap_or_default().to_string();
        let Some(rule) = rule_for(rows, module) else {
            problems.push(format!("`{module}` has no row in the code map of ARCHITECTURE.md"));
            continue;
        };
        for imported in imports(source).into_iter().filter(|i| *i != top && tops.contains(i)) {
            let forbidden = match rule {
                Rule::Forbid(names) => names.contains(&imported),
                Rule::Allow(names) => !names.contains(&imported),
                Rule::As(_) => false,
            };
            if forbidden {
                problems.push(format!("`{module}` imports `crate::{imported}`, which its code map row forbids"));
            }
            graph.entry(top.clone()).or_default().insert(imported);
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("the modules import each other: {}", cycle.join(" → ")));
    }
    problems
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn sources(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read src/").map(|e| e.expect("a directory entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("a path under src/");
            if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            out.insert(module_path(relative), text);
        }
    }
}

#[test]
fn the_code_map_of_architecture_md_holds_for_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let rows = parse_code_map(&architecture).unwrap_or_else(|e| panic!("ARCHITECTURE.md: {e}"));
    let mut files = BTreeMap::new();
    sources(&root.join("src"), &root.join("src"), &mut files);
    let problems = check(&rows, &files);
    assert!(
        problems.is_empty(),
        "the code map of ARCHITECTURE.md does not hold; move the code, or change the map with the reason:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_checker_finds_forbidden_imports_missing_rows_and_cycles() {
    let map = "# x\n## Code map\n\n| Module | Owns | May not import |\n|---|---|---|\n\
        | `domain` | pure | everything (no I/O) |\n\
        | `store` | persistence | everything but `domain` |\n\
        | `store::sql::{a, b}` | statements | as `store` |\n\
        | `rules` | engine | `store`, `cli` (facts by trait) |\n\
        | `cli` | top | — (top) |\n\
        | `gone` | nothing | `cli` |\n## Next\n| `ignored` | x | nonsense here |\n";
    let rows = parse_code_map(map).expect("the map parses");
    assert_eq!(rule_for(&rows, "store::sql::a"), rule_for(&rows, "store"));
    let files: BTreeMap<String, String> = [
        ("domain", "use std::fmt;\n// crate::store in a comment is not an import\n"),
        ("store", "use crate::domain::X;\n"),
        ("store::sql::a", "use crate::{domain::Y, rules::{Z, W}};\n"),
        ("rules", "use crate::store::Store;\nfn f() { crate::cli::run(); }\n"),
        ("cli", "use crate::{store, rules};\n"),
        ("unmapped", "use crate::domain::X;\n"),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_string(), s.to_string()))
    .collect();
    let problems = check(&rows, &files);
    let expected = [
        "the code map has a row for `gone`, which is not a module of src/",
        "the code map has a row for `store::sql::b`, which is not a module of src/",
        "`rules` imports `crate::cli`, which its code map row forbids",
        "`rules` imports `crate::store`, which its code map row forbids",
        "`store::sql::a` imports `crate::rules`, which its code map row forbids",
        "`unmapped` has no row in the code map of ARCHITECTURE.md",
    ];
    for e in expected {
        assert!(problems.iter().any(|p| p == e), "missing `{e}` in {problems:#?}");
    }
    assert!(problems.iter().any(|p| p.starts_with("the modules import each other: ")), "{problems:#?}");
    assert_eq!(problems.len(), expected.len() + 1, "{problems:#?}");
    assert!(parse_rule("`store` internals").is_err(), "words the checker cannot read fail the test");
}
