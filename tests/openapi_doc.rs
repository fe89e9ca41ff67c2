//! docs/openapi.json is the generated document, committed so reviewers see API changes in diffs and CI can lint
//! it without building the daemon. This test keeps the two from drifting apart.

use std::path::Path;

const REGENERATE: &str = "cargo run --bin smart-taskd -- openapi --output docs/openapi.json";

#[test]
fn committed_document_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let generated = smart_task::http::openapi::document();
    let committed = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!("cannot read {}: {e}; generate it with `{REGENERATE}`", path.display()),
    };
    if committed != generated {
        // The first differing line, so the developer sees what moved without a diff tool.
        let first = committed.lines().zip(generated.lines()).enumerate().find(|(_, (c, g))| c != g).map_or_else(
            || "the files differ in length".to_string(),
            |(n, (c, g))| format!("line {}: committed `{c}`, generated `{g}`", n + 1),
        );
        panic!("docs/openapi.json is out of date ({first}); regenerate it with `{REGENERATE}` and commit it");
    }
}

#[test]
fn document_is_valid_json_with_openapi_3_1() {
    let doc: serde_json::Value =
        serde_json::from_str(&smart_task::http::openapi::document()).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
}
