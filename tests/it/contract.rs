//! The event contract: the Rust validator and `schemas/case-event.v1.schema.json` agree with
//! the shared fixtures (`tests/fixtures/contract.json`), reason code by reason code.

use casewatch::core::event::parse_event;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    line: String,
    reason: String,
    /// Whether JSON Schema can express the rule that decides this line.
    schema: bool,
    note: String,
}

fn fixtures() -> Vec<Fixture> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/contract.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

const NOW: i64 = 1_800_000_000; // 2027-01-15

#[test]
fn rust_validator_gives_the_expected_reason_for_every_fixture() {
    let mut failures = Vec::new();
    for f in fixtures() {
        let got = match parse_event(f.line.as_bytes(), NOW) {
            Ok(_) => "ok".to_string(),
            Err(r) => r.to_string(),
        };
        if got != f.reason {
            failures.push(format!(
                "expected {} got {got} ({}) for {}",
                f.reason,
                f.note,
                &f.line[..f.line.len().min(160)]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_schema_and_rust_validator_agree_on_validity() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/case-event.v1.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let mut checked = 0;
    for f in fixtures().into_iter().filter(|f| f.schema) {
        let instance: serde_json::Value = serde_json::from_str(&f.line).unwrap();
        let schema_ok = validator.is_valid(&instance);
        let rust_ok = parse_event(f.line.as_bytes(), NOW).is_ok();
        assert_eq!(
            schema_ok, rust_ok,
            "schema and validator disagree ({}) on {}",
            f.note, f.line
        );
        assert_eq!(rust_ok, f.reason == "ok");
        checked += 1;
    }
    assert!(checked > 80, "only {checked} fixtures checked");
}
