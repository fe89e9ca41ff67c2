//! docs/openapi.json passes spectral/agid.yaml (AgID "Italian Guidelines Full") with 0 errors, and every rule of
//! the ruleset is proven to fire by its document in spectral/broken/. Runs the Spectral CLI pinned by
//! spectral/package-lock.json, installed with `npm ci` under the cargo target directory (once; again when the
//! lock file changes). Needs node and npm: without them the test fails, because a skipped lint is a silent gate.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Spectral CLI, installed once per test binary into `$CARGO_TARGET_TMPDIR/spectral`.
fn spectral() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("spectral");
        common::npm::install(&root().join("spectral"), &dir, "node_modules/.bin/spectral", "lint the OpenAPI document");
        dir.join("node_modules/.bin/spectral")
    })
}

/// Lints `files` with spectral/agid.yaml; the findings, by file name.
fn lint(files: &[PathBuf]) -> BTreeMap<String, Vec<Value>> {
    let out = Command::new(spectral())
        .arg("lint")
        .arg("--ruleset")
        .arg(root().join("spectral/agid.yaml"))
        .args(files)
        .args(["-f", "json", "--quiet"])
        // Spectral exits 1 when it finds errors; the findings on stdout are what the tests judge.
        .output()
        .expect("run spectral");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "spectral did not print JSON findings ({e}; exit {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut by_file: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for finding in findings {
        let source = finding["source"].as_str().unwrap_or_default();
        let name = Path::new(source).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        by_file.entry(name).or_default().push(finding);
    }
    by_file
}

fn describe(findings: &[Value]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "  {} (severity {}) at {} line {}: {}",
                f["code"].as_str().unwrap_or("?"),
                f["severity"],
                f["path"]
                    .as_array()
                    .map(|p| p.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("."))
                    .unwrap_or_default(),
                f["range"]["start"]["line"].as_u64().map_or(0, |l| l + 1),
                f["message"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_committed_document_passes_the_agid_ruleset() {
    let findings = lint(&[root().join("docs/openapi.json")]);
    let all: Vec<Value> = findings.into_values().flatten().collect();
    let errors: Vec<Value> = all.iter().filter(|f| f["severity"] == 0).cloned().collect();
    assert!(
        errors.is_empty(),
        "docs/openapi.json has {} AgID error(s) (spectral/agid.yaml); fix the annotations or src/http/openapi.rs, \
         then `cargo run --bin smart-taskd -- openapi --output docs/openapi.json`:\n{}",
        errors.len(),
        describe(&errors)
    );
}

#[test]
fn the_valid_example_passes_and_every_rule_fires_on_its_broken_document() {
    let text = std::fs::read_to_string(root().join("spectral/agid.yaml")).expect("read the ruleset");
    let ruleset: Value = serde_saphyr::from_str(&text).expect("the ruleset is YAML");
    let rules: BTreeSet<String> =
        ruleset["rules"].as_object().expect("the ruleset has rules").keys().cloned().collect();
    let mut broken: Vec<PathBuf> = std::fs::read_dir(root().join("spectral/broken"))
        .expect("read spectral/broken")
        .map(|e| e.expect("list spectral/broken").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    broken.sort();
    let names: BTreeSet<String> =
        broken.iter().filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect();
    let untested: Vec<&String> = rules.difference(&names).collect();
    assert!(untested.is_empty(), "rules without a document in spectral/broken/: {untested:?}");

    let mut files = broken.clone();
    files.push(root().join("spectral/valid.yaml"));
    let findings = lint(&files);
    if let Some(valid) = findings.get("valid.yaml") {
        panic!("spectral/valid.yaml, the base of the broken documents, should pass:\n{}", describe(valid));
    }
    let mut failures = Vec::new();
    for name in &names {
        let found = findings.get(&format!("{name}.yaml")).map_or(&[][..], Vec::as_slice);
        let codes: BTreeSet<&str> = found.iter().filter_map(|f| f["code"].as_str()).collect();
        let fires_as_error = found.iter().any(|f| f["code"] == name.as_str() && f["severity"] == 0);
        if !rules.contains(name) {
            failures.push(format!("spectral/broken/{name}.yaml names no rule of spectral/agid.yaml"));
        } else if !fires_as_error || codes.len() != 1 {
            failures.push(format!(
                "spectral/broken/{name}.yaml should break `{name}` (as an error) and nothing else; found:\n{}",
                describe(found)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
