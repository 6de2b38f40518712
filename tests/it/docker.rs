//! `docker/` cannot run here (no Docker engine): what can be checked statically is.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn compose_file_has_the_production_services_wired_to_each_other() {
    let compose: serde_yaml::Value = serde_yaml::from_str(&read("docker/compose.yaml")).unwrap();
    let services = compose["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for want in [
        "kafka",
        "clickhouse",
        "migrate",
        "consumer",
        "simulator",
        "bulletin",
    ] {
        assert!(names.contains(&want), "service {want} in {names:?}");
    }
    assert!(compose["services"]["kafka"]["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    assert_eq!(
        compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft"
    );
    assert!(compose["services"]["clickhouse"]["image"]
        .as_str()
        .unwrap()
        .starts_with("clickhouse/clickhouse-server:"));
    // serde_yaml does not apply `<<` merges: check the anchor the casewatch services share.
    let shared = &compose["x-casewatch"];
    assert_eq!(shared["build"]["dockerfile"], "docker/Dockerfile");
    assert_eq!(
        shared["environment"]["CASEWATCH__KAFKA__BROKERS"],
        "kafka:9092"
    );
    assert_eq!(
        shared["environment"]["CASEWATCH__CLICKHOUSE__URL"],
        "http://clickhouse:8123"
    );
    for (service, command) in [
        ("migrate", "migrate"),
        ("consumer", "run"),
        ("simulator", "simulate"),
        ("bulletin", "bulletin"),
    ] {
        assert_eq!(
            compose["services"][service]["command"][0], command,
            "{service}"
        );
    }
    assert_eq!(
        compose["services"]["consumer"]["depends_on"]["migrate"]["condition"],
        "service_completed_successfully"
    );
    // Every environment key is a real configuration key: check-config accepts them.
    let env = shared["environment"].as_mapping().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_casewatch"));
    cmd.arg("check-config");
    for (k, v) in env {
        let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap());
        if k.starts_with("CASEWATCH__") {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfile_builds_what_the_scripts_build() {
    let dockerfile = read("docker/Dockerfile");
    assert!(dockerfile.contains("RUN cargo build --release --locked --bin casewatch"));
    assert!(
        dockerfile.contains("FROM debian:bookworm-slim"),
        "a slim runtime stage"
    );
    for script in ["scripts/demo", "scripts/bench-e2e"] {
        assert!(
            read(script).contains("cargo build --release --locked"),
            "{script}"
        );
    }
}
