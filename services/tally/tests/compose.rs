//! docker-compose.yml as compose would run it, without Docker (no engine runs here): the file is
//! read, and every tally service (`build: .`) runs its `command` with its `environment`, in the
//! order its `depends_on` gives, against the real Kafka and ClickHouse of scripts/services.sh —
//! the hostnames `kafka` and `clickhouse` mapped to them, each test's topics and database its own.
//! One-shot services (`service_completed_successfully`) must exit 0; the others must keep
//! running. Then a call sent to ingest with the key the file documents reaches ClickHouse.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;
use tally_tests::{
    clickhouse_url, delete_topics, free_port, kafka_config, require_kafka, unique_name, KillOnDrop,
    TestDatabase,
};

/// A tally service of the file: what compose would run.
#[derive(Debug)]
struct Service {
    name: String,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    /// Services it waits for, with the condition (`service_completed_successfully`, ...).
    depends_on: BTreeMap<String, String>,
    profiles: Vec<String>,
}

fn compose_file() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut value: Value = serde_yaml_ng::from_str(&text).unwrap();
    value.apply_merge().unwrap();
    value
}

/// Compose's interpolation of `${VAR}`, `${VAR:-default}` and `$$`, from `env`.
fn interpolate(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(tail) = rest.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix('{') {
            // The closing brace of this expression: the default may hold braces of its own.
            let mut depth = 1;
            let end = tail
                .char_indices()
                .find(|&(_, c)| {
                    depth += i32::from(c == '{') - i32::from(c == '}');
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed ${...}");
            let expression = &tail[..end];
            let (name, default) = match expression.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expression, None),
            };
            let value = env.get(name).filter(|v| !v.is_empty()).cloned();
            out.push_str(&value.or(default.map(str::to_string)).unwrap_or_default());
            rest = &tail[end + 1..];
        } else {
            out.push('$');
        }
    }
    out.push_str(rest);
    out
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn tally_services(file: &Value, host_env: &BTreeMap<String, String>) -> Vec<Service> {
    let services = file["services"].as_mapping().unwrap();
    services
        .iter()
        .filter(|(_, s)| s["build"].as_str() == Some("."))
        .map(|(name, s)| Service {
            name: name.as_str().unwrap().to_string(),
            command: strings(&s["command"]),
            environment: s["environment"]
                .as_mapping()
                .map(|env| {
                    env.iter()
                        .map(|(k, v)| {
                            let value = match v {
                                Value::String(text) => text.clone(),
                                other => serde_yaml_ng::to_string(other).unwrap().trim().into(),
                            };
                            (
                                k.as_str().unwrap().to_string(),
                                interpolate(&value, host_env),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            depends_on: s["depends_on"]
                .as_mapping()
                .map(|deps| {
                    deps.iter()
                        .map(|(k, v)| {
                            let condition = v["condition"].as_str().unwrap_or("service_started");
                            (k.as_str().unwrap().to_string(), condition.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default(),
            profiles: strings(&s["profiles"]),
        })
        .collect()
}

/// The services in an order compose could start them: each after everything it depends on.
fn start_order(services: Vec<Service>) -> Vec<Service> {
    let names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut pending = services;
    let mut order = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|s| {
                s.depends_on
                    .keys()
                    .all(|d| started.contains(d) || !names.contains(d))
            })
            .expect("depends_on has no cycle");
        let service = pending.remove(ready);
        started.insert(service.name.clone());
        order.push(service);
    }
    order
}

#[test]
fn interpolation_follows_compose() {
    let env = BTreeMap::from([("SET".to_string(), "yes".to_string())]);
    assert_eq!(interpolate("a ${SET} b", &env), "a yes b");
    assert_eq!(interpolate("${UNSET:-[{x = 1}]}", &env), "[{x = 1}]");
    assert_eq!(interpolate("${SET:-no}", &env), "yes");
    assert_eq!(interpolate("$$HOME ${UNSET}", &env), "$HOME ");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tally_service_of_docker_compose_starts_and_a_call_reaches_clickhouse() {
    require_kafka();
    let db = TestDatabase::create("it_compose").await;
    let kafka = kafka_config();
    let prefix = format!("{}.", unique_name("compose"));
    let (port, grpc_port) = (free_port(), free_port());
    // The user's environment as compose would interpolate it: nothing set, the defaults apply.
    let host_env = BTreeMap::new();
    let services = start_order(tally_services(&compose_file(), &host_env));
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for needed in ["topics", "migrate", "ingest", "processor", "sink"] {
        assert!(names.contains(&needed), "{needed} in {names:?}");
    }
    let one_shot: BTreeSet<String> = services
        .iter()
        .flat_map(|s| s.depends_on.iter())
        .filter(|(_, condition)| condition.as_str() == "service_completed_successfully")
        .map(|(name, _)| name.clone())
        .collect();
    let mut running = Vec::new();
    let mut api_keys = None;
    for service in services.iter().filter(|s| s.profiles.is_empty()) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
        command
            .args(&service.command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TALLY_LOG", "warn");
        for (key, value) in &service.environment {
            // The compose network's hostnames, on this machine.
            let value = value
                .replace("http://clickhouse:8123", &clickhouse_url())
                .replace("kafka:9092", &kafka.brokers)
                .replace("0.0.0.0:8080", &format!("127.0.0.1:{port}"))
                .replace("0.0.0.0:4317", &format!("127.0.0.1:{grpc_port}"));
            if key == "TALLY__API_KEYS" {
                api_keys = Some(value.clone());
            }
            command.env(key, value);
        }
        // This test's own topics, database and consumer groups (tests run in parallel).
        command
            .env("TALLY__KAFKA__TOPIC_PREFIX", &prefix)
            .env("TALLY__CLICKHOUSE__DATABASE", &db.name)
            .env("TALLY__GROUP_ID", unique_name(&service.name))
            .env("TALLY__BATCH_MAX_WAIT_MS", "200");
        if one_shot.contains(&service.name) {
            let out = command.output().unwrap();
            assert!(
                out.status.success(),
                "compose service {} ({:?}) failed: {}",
                service.name,
                service.command,
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            let mut child = KillOnDrop(command.stderr(Stdio::piped()).spawn().unwrap());
            std::thread::sleep(Duration::from_millis(1_500));
            if let Some(status) = child.0.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                child
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                panic!(
                    "compose service {} ({:?}) exited with {status}: {stderr}",
                    service.name, service.command
                );
            }
            running.push(child);
        }
    }
    // The key the file documents for a first look.
    let api_keys = api_keys.expect("ingest's TALLY__API_KEYS");
    assert!(api_keys.contains(&tally_ingest::auth::hash_key("tally-local")));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let sent = client
            .post(format!("http://127.0.0.1:{port}/v1/llm-calls"))
            .bearer_auth("tally-local")
            .body(
                r#"{"event_id": "compose-1", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai",
                    "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 300}"#,
            )
            .send()
            .await;
        match sent {
            Ok(response) if response.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                break response
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(300)).await,
            other => panic!("ingest did not answer: {other:?}"),
        }
    };
    assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows: Vec<(String, String, Option<i64>)> = db
            .client
            .query("SELECT event_id, team, cost_total_nanos FROM llm_calls FINAL")
            .fetch_all()
            .await
            .unwrap();
        if !rows.is_empty() {
            // gpt-4o: 1,000 x $2.5e-06 + 300 x $1e-05.
            assert_eq!(
                rows,
                vec![("compose-1".into(), "unassigned".into(), Some(5_500_000))]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call did not reach ClickHouse"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The OpenTelemetry SDK's gRPC exporter on the port the file publishes: its 4 GenAI spans
    // reach ClickHouse too.
    let grpc_endpoint = format!("http://127.0.0.1:{grpc_port}");
    tokio::task::spawn_blocking(move || {
        tally_tests::emit_genai_spans(&grpc_endpoint, "grpc", "tally-local", "compose-otel")
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let spans: u64 = db
            .client
            .query("SELECT count() FROM llm_calls FINAL WHERE session_id = 'compose-otel'")
            .fetch_one()
            .await
            .unwrap();
        if spans == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{spans} of the 4 spans reached ClickHouse"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(running);
    delete_topics(
        tally_contract::topics::Topic::ALL
            .iter()
            .map(|t| t.name(&prefix))
            .collect(),
    );
    db.drop_database().await;
}
