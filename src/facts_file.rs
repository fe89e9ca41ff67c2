//! Reading a reference-data file (`facts import`): JSON when it starts with `{`, else YAML. A syntax or type
//! error names its line and column and, when it is inside a record, the record (`deleghe[2] (id D-3)`) and
//! the field; string fields are held to intake's rules (no control characters, at most
//! `intake.limits.max_field_chars`); then the records' own checks run (formats, duplicates, references inside
//! the file). References to the database are the store's to check, inside the import transaction.

use serde_json::Value;

use crate::domain::facts::{ImportFile, record_name};
use crate::intake::{Segment, check_strings};

/// Why a reference-data file was refused; the message names the file, and the record and field when known.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct FactsFileError {
    pub file: String,
    pub problem: String,
}

/// Parses and checks a reference-data file; `file` names it in errors, `max_field_chars` bounds its strings.
pub fn parse(text: &str, file: &str, max_field_chars: usize) -> Result<ImportFile, FactsFileError> {
    let refuse = |problem: String| FactsFileError { file: file.to_string(), problem };
    let json = text.trim_start().starts_with('{');
    let typed = if json {
        serde_json::from_str::<ImportFile>(text).map_err(|e| format!("not valid JSON: {e}"))
    } else {
        serde_saphyr::from_str::<ImportFile>(text).map_err(|e| e.to_string().trim_start_matches("error: ").to_string())
    };
    let mut parsed = match typed {
        Ok(parsed) => parsed,
        Err(problem) => {
            return Err(refuse(match locate(text, json) {
                Some(place) => format!("{place}: {problem}"),
                None => problem,
            }));
        }
    };
    let value = serde_json::to_value(&parsed).map_err(|e| refuse(e.to_string()))?;
    check_records(&value, max_field_chars).map_err(refuse)?;
    parsed.normalise_and_check().map_err(|e| refuse(e.to_string()))?;
    Ok(parsed)
}

/// The record and field a deserialisation error is in (`deleghe[2] (id D-3): field `stato``), found by
/// reading the document without types and deserialising it again with its path tracked; None when the
/// document is not even syntactically valid (the error's line and column say where) or the path is empty.
fn locate(text: &str, json: bool) -> Option<String> {
    let untyped: Value = if json { serde_json::from_str(text).ok()? } else { serde_saphyr::from_str(text).ok()? };
    let Err(e) = serde_path_to_error::deserialize::<_, ImportFile>(&untyped) else { return None };
    let mut segments = e.path().iter().filter_map(|s| match s {
        serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
        serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
        _ => None,
    });
    let place = match (segments.next()?, segments.next()) {
        (Segment::Key(section), Some(Segment::Index(i))) => {
            let record = untyped.get(&section).and_then(|s| s.get(i)).unwrap_or(&Value::Null);
            let field = crate::intake::dotted(&segments.collect::<Vec<_>>());
            let name = record_name(&section, i, record);
            if field.is_empty() { name } else { format!("{name}: field `{field}`") }
        }
        (Segment::Key(field), _) => format!("field `{field}`"),
        _ => return None,
    };
    Some(place)
}

/// Every string of every record without control characters and within `max_field_chars`.
fn check_records(value: &Value, max_field_chars: usize) -> Result<(), String> {
    let limit = |_: &[Segment]| (false, max_field_chars, "intake.limits.max_field_chars");
    let Some(sections) = value.as_object() else { return Ok(()) };
    for (section, records) in sections {
        for (i, record) in records.as_array().into_iter().flatten().enumerate() {
            if let Some(obj) = record.as_object() {
                check_strings(obj, &mut Vec::new(), &limit).map_err(|(field, problem)| {
                    format!("{}: field `{field}`: {problem}", record_name(section, i, record))
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "version: 1\nsedi:\n  - {codice: \"7000\", denominazione: Roma, provincia: RM, email: a@inps.it}\n";

    #[test]
    fn a_type_error_names_the_record_the_field_and_the_line() {
        let text = format!(
            "{FILE}deleghe:\n  - {{id: D-1, matricola: \"1234567890\", delegato_cf: X, tipo: INTERMEDIARIO, stato: SOSPESA, data_inizio: 2024-01-01}}\n"
        );
        let e = parse(&text, "f.yaml", 100).expect_err("refused").to_string();
        assert!(e.starts_with("f.yaml: deleghe[0] (id D-1): field `stato`: "), "{e}");
        assert!(e.contains("SOSPESA") && e.contains("line 5"), "{e}");
        let json = r#"{"version": 1, "contatti": [{"id": "C-9", "titolare_cf": 5}]}"#;
        let e = parse(json, "f.json", 100).expect_err("refused").to_string();
        assert!(e.contains("contatti[0] (id C-9): field `titolare_cf`") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn control_characters_and_long_strings_are_refused_naming_the_field() {
        let e = parse(&FILE.replace("Roma", "\"Ro\\u0001ma\""), "f.yaml", 100).expect_err("refused").to_string();
        assert!(
            e.contains("sedi[0] (codice 7000): field `denominazione`: contains the control character U+0001"),
            "{e}"
        );
        let e = parse(FILE, "f.yaml", 3).expect_err("refused").to_string();
        assert!(e.contains("field `codice`") || e.contains("field `denominazione`"), "{e}");
        assert!(e.contains("intake.limits.max_field_chars"), "{e}");
        assert!(parse(FILE, "f.yaml", 100).is_ok());
    }

    #[test]
    fn a_syntax_error_keeps_its_line() {
        let e = parse("version: 1\nsedi: [\n", "f.yaml", 100).expect_err("refused").to_string();
        assert!(e.starts_with("f.yaml: ") && e.contains("line"), "{e}");
    }
}
