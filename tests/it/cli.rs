//! The `casewatch` binary as a user runs it (no services needed).

use std::process::Command;

fn casewatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_casewatch"))
}

#[test]
fn validate_reports_each_invalid_line_with_its_reason_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let good = r#"{"version":1,"event_id":"e1","case_id":"c1","type":"step","occurred_at":"2018-10-15T10:00:00+08:00","source":"hall","center_id":"C1","step":"审核"}"#;
    std::fs::write(
        &file,
        format!("{good}\n\n{{\"version\":2}}\n{good}\nnot json\n"),
    )
    .unwrap();
    let out = casewatch().arg("validate").arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("line 3: unsupported_version"), "{stdout}");
    assert!(stdout.contains("line 5: malformed_json"), "{stdout}");
    assert!(
        !stdout.contains("line 1:") && !stdout.contains("line 4:"),
        "{stdout}"
    );
    assert!(stdout.contains("2 valid, 2 invalid"), "{stdout}");

    std::fs::write(&file, format!("{good}\n")).unwrap();
    let out = casewatch().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_config_masks_secrets_and_rejects_bad_files() {
    let out = casewatch()
        .arg("check-config")
        .env("CASEWATCH__CLICKHOUSE__PASSWORD", "s3cret-pw")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        stdout.contains("[clickhouse]") && stdout.contains("***"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret-pw"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[engine]\nclock = \"sundial\"\n").unwrap();
    let out = casewatch()
        .arg("--config")
        .arg(&bad)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("clock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
