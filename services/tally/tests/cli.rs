//! The `tally` binary as a user runs it: configuration errors, and `tally topics create`
//! twice in a row against the real broker.
use std::process::{Command, Output};

use tally_tests::{delete_topics, kafka_brokers, require_kafka, unique_name};

fn tally(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.args(args).env_remove("TALLY_LOG");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("tally runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn topics_create_twice_against_the_real_broker() {
    require_kafka();
    let prefix = format!("{}.", unique_name("cli"));
    let brokers = kafka_brokers();
    let envs = [
        ("TALLY_KAFKA_BROKERS", brokers.as_str()),
        ("TALLY__KAFKA__TOPIC_PREFIX", prefix.as_str()),
    ];

    let first = tally(&["topics", "create", "--partitions", "2"], &envs);
    assert!(first.status.success(), "first run: {}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with(&format!("created {prefix}tally."))),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "created {prefix}tally.llm_calls.v1 (2 partitions, replication factor 1)"
    )));

    let second = tally(&["topics", "create", "--partitions", "2"], &envs);
    assert!(
        second.status.success(),
        "second run: {}",
        text(&second.stderr)
    );
    let stdout = text(&second.stdout);
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "exists  {prefix}tally.dead_letter.v1 (2 partitions)"
        )),
        "{stdout}"
    );

    let third = tally(&["topics", "create", "--partitions", "3"], &envs);
    assert!(third.status.success());
    assert!(text(&third.stdout).contains("(2 partitions; 3 were asked for, left as is)"));
    let names = stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string());
    delete_topics(names.collect());
}

#[test]
fn a_missing_config_file_is_named() {
    let out = tally(&["ingest", "--config", "/nonexistent/ingest.toml"], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/ingest.toml") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_config_key_is_named_with_its_file() {
    let dir = std::env::temp_dir().join(unique_name("cli-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sink.toml");
    std::fs::write(
        &file,
        "[clickhouse]\nurl = \"http://127.0.0.1:8123\"\ndatabse = \"x\"\n",
    )
    .unwrap();
    let out = tally(&["sink", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("databse") && stderr.contains("sink.toml"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn zero_partitions_are_refused_before_connecting() {
    let out = tally(
        &["topics", "create", "--partitions", "0"],
        &[("TALLY_KAFKA_BROKERS", "127.0.0.1:1")],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--partitions and --replication-factor must be at least 1"));
}
