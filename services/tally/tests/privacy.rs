//! Secrets and raw text, after a whole run at debug level. The production pipeline (`tally
//! ingest`, `process`, `sink`, `notify`) runs against the real broker and ClickHouse with
//! every secret it takes configured: an API key, a GitHub webhook secret, a webhook URL and
//! a bearer token for notify, and a SASL password among the Kafka properties. Native JSON
//! calls carry prompt, message, completion and tool-argument text, the real OpenTelemetry
//! SDK sends spans with `gen_ai.input.messages`, and a signed GitHub webhook carries an
//! issue title. Then every log line, every message (key, payload and headers) of every topic
//! and every row of every table is searched: no secret and no raw text is anywhere, while
//! the fingerprints are there and the secrets did their work (the webhook got its token).
//! The same for `tally up`: every byte of its data directory, every row of its store and its
//! log.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use hmac::{Hmac, KeyInit, Mac};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sha2::Sha256;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::topics::Topic;
use tally_tests::{
    clickhouse_url, delete_topics, emit_genai_spans, free_port, kafka_config, require_kafka,
    unique_name, wait_listening, KillOnDrop, TestDatabase,
};

mod common;

const API_KEY: &str = "sk-tally-privacy-key-0f3a9c";
const GITHUB_SECRET: &str = "gh-webhook-secret-77b1e0";
const HOOK_TOKEN: &str = "hook-bearer-token-1d9e44";
const HOOK_PATH: &str = "/services/T0/B0/url-secret-42aa";
const KAFKA_PASSWORD: &str = "kafka-sasl-password-3c7d";
const SECRETS: [&str; 5] = [
    API_KEY,
    GITHUB_SECRET,
    HOOK_TOKEN,
    "url-secret-42aa",
    KAFKA_PASSWORD,
];

const PROMPT: &str = "raw-prompt-9d2f: my card number is 4111 1111 1111 1111";
const MESSAGE: &str = "raw-message-6b3e: please refund order 88";
const COMPLETION: &str = "raw-completion-51ab: refund issued";
const TOOL_ARGS: &str = "raw-tool-args-e7c0";
const TITLE: &str = "raw-issue-title-a4f8 customer data leak";
/// What `tests/otel/emit_genai_spans.py` puts in `gen_ai.input.messages`.
const OTEL_PROMPT: &str = "secret prompt text";
/// Distinct enough parts of each raw text to find a copy of any of it.
const RAW: [&str; 7] = [
    "raw-prompt-9d2f",
    "4111 1111",
    "raw-message-6b3e",
    "raw-completion-51ab",
    "raw-tool-args-e7c0",
    "raw-issue-title-a4f8",
    OTEL_PROMPT,
];

type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A notify destination recording (path, authorization header) of every request.
async fn receiver() -> (u16, Requests) {
    async fn record(
        State(requests): State<Requests>,
        uri: Uri,
        headers: HeaderMap,
    ) -> &'static str {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        requests
            .lock()
            .unwrap()
            .push((uri.path().to_string(), authorization));
        "ok"
    }
    let requests: Requests = Arc::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, requests)
}

/// Every place in `text` where one of `needles` occurs, named.
fn found_in(place: &str, text: &str, needles: &[&str]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| text.contains(*n))
        .map(|n| format!("{n:?} in {place}"))
        .collect()
}

/// Every message of every tally topic: key, payload and headers, as lossy text.
fn every_message(kafka: &KafkaConfig) -> BTreeMap<String, Vec<String>> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique_name("privacy-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut messages = BTreeMap::new();
    for topic in Topic::ALL {
        let name = kafka.topic(topic);
        let metadata = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .unwrap();
        let mut texts = Vec::new();
        for partition in metadata.topics()[0].partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&name, partition.id(), Duration::from_secs(10))
                .unwrap();
            if high <= low {
                continue;
            }
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&name, partition.id(), Offset::Offset(low))
                .unwrap();
            consumer.assign(&assignment).unwrap();
            // Transaction markers take offsets too: read until the high watermark is passed.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let position = consumer
                    .position()
                    .unwrap()
                    .find_partition(&name, partition.id())
                    .and_then(|p| p.offset().to_raw())
                    .unwrap_or(low);
                if position >= high || Instant::now() > deadline {
                    break;
                }
                let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                    continue;
                };
                let message = message.unwrap();
                let mut text = String::new();
                text.push_str(&String::from_utf8_lossy(message.key().unwrap_or_default()));
                text.push('\u{0}');
                text.push_str(&String::from_utf8_lossy(
                    message.payload().unwrap_or_default(),
                ));
                if let Some(headers) = message.headers() {
                    for header in headers.iter() {
                        text.push_str(header.key);
                        text.push_str(&String::from_utf8_lossy(header.value.unwrap_or_default()));
                    }
                }
                texts.push(text);
            }
        }
        messages.insert(name, texts);
    }
    messages
}

/// Every row of every table of `database`, as JSON lines.
async fn every_row(database: &str) -> BTreeMap<String, String> {
    let db = clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_database(database);
    let tables: Vec<String> = db
        .query("SELECT name FROM system.tables WHERE database = ? AND engine NOT IN ('View', 'MaterializedView') ORDER BY name")
        .bind(database)
        .fetch_all()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mut rows = BTreeMap::new();
    for table in tables {
        let text = http
            .post(format!("{}/?database={database}", clickhouse_url()))
            .body(format!("SELECT * FROM `{table}` FORMAT JSONEachRow"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap();
        rows.insert(table, text);
    }
    rows
}

fn github_signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Native JSON calls with every raw text field, `input_tokens` large enough that the team's
/// $1 budget passes all its thresholds.
fn calls_with_raw_text(prefix: &str, n: usize) -> Vec<Value> {
    let now = tally_contract::clock::now_micros();
    (0..n)
        .map(|i| {
            json!({"event_id": format!("{prefix}-{i}"),
                   "occurred_at": tally_contract::clock::rfc3339(now - 60_000_000),
                   "team": "payments", "provider": "openai", "model": "gpt-4o",
                   "input_tokens": 100_000, "output_tokens": 500,
                   "prompt": format!("{PROMPT} #{i}"),
                   "messages": [{"role": "user", "content": MESSAGE}],
                   "completion": COMPLETION,
                   "tool_args": {"query": TOOL_ARGS}})
        })
        .collect()
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_debug_level_pipeline_keeps_secrets_and_raw_text_out_of_logs_topics_and_rows() {
    require_kafka();
    let db = TestDatabase::create("it_privacy").await;
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("privacy")),
        ..kafka_config()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 2,
            replication_factor: 1,
        },
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(unique_name("tally-privacy"));
    std::fs::create_dir_all(&dir).unwrap();
    let (hook_port, hooks) = receiver().await;
    let port = free_port();
    // A SASL password among the Kafka properties (unused by the PLAINTEXT listener, so the
    // pipeline runs) reaches every service's client configuration.
    let kafka_section = format!(
        "[kafka]\nbrokers = \"{}\"\ntopic_prefix = \"{}\"\n[kafka.properties]\n\"sasl.password\" = \"{KAFKA_PASSWORD}\"\n",
        kafka.brokers, kafka.topic_prefix
    );
    let write = |name: &str, text: String| -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let ingest_config = write(
        "ingest.toml",
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [[api_keys]]\nname = \"privacy\"\nsha256 = \"{}\"\ntenant = \"acme\"\nany_team = true\n\
             team = \"payments\"\ngithub_webhook_secret = \"{GITHUB_SECRET}\"\n{kafka_section}",
            tally_ingest::auth::hash_key(API_KEY)
        ),
    );
    let process_config = write(
        "process.toml",
        format!(
            "group_id = \"{}\"\n[[budgets]]\nname = \"payments-month\"\ntenant = \"acme\"\nteam = \"payments\"\n\
             period = \"month\"\namount_usd = \"1\"\nburn_rate_alert = false\n{kafka_section}",
            unique_name("privacy-process")
        ),
    );
    let sink_config = write(
        "sink.toml",
        format!(
            "group_id = \"{}\"\nbatch_max_wait_ms = 200\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\n{kafka_section}",
            unique_name("privacy-sink"),
            clickhouse_url(),
            db.name
        ),
    );
    let notify_config = write(
        "notify.toml",
        format!(
            "group_id = \"{}\"\n[[destinations]]\nname = \"oncall\"\nkind = \"webhook\"\n\
             url_env = \"PRIVACY_HOOK_URL\"\ntoken_env = \"PRIVACY_HOOK_TOKEN\"\n{kafka_section}",
            unique_name("privacy-notify")
        ),
    );
    let start = |service: &str, config: &str| -> KillOnDrop {
        let log = std::fs::File::create(dir.join(format!("{service}.log"))).unwrap();
        KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_tally"))
                .args([service, "--config", config])
                .env_remove("TALLY_KAFKA_BROKERS")
                .env_remove("TALLY_CLICKHOUSE_URL")
                .env("TALLY_LOG", "debug")
                .env(
                    "PRIVACY_HOOK_URL",
                    format!("http://127.0.0.1:{hook_port}{HOOK_PATH}"),
                )
                .env("PRIVACY_HOOK_TOKEN", HOOK_TOKEN)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let migrated = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["migrate", "--config", &sink_config])
        .env_remove("TALLY_CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let mut services = vec![
        start("ingest", &ingest_config),
        start("process", &process_config),
        start("sink", &sink_config),
        start("notify", &notify_config),
    ];
    wait_listening(&mut services[0], port, Duration::from_secs(60));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Native calls with raw text, JSON and NDJSON.
    let calls = calls_with_raw_text("privacy", 20);
    let response = http
        .post(format!("{base}/v1/llm-calls"))
        .bearer_auth(API_KEY)
        .json(&calls[..10])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let ndjson: String = calls[10..].iter().map(|c| format!("{c}\n")).collect();
    let response = http
        .post(format!("{base}/v1/llm-calls"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    // The real OpenTelemetry SDK, with prompt text in its spans.
    emit_genai_spans(
        &format!("{base}/v1/traces"),
        "protobuf",
        API_KEY,
        "privacy-run",
    );
    // A signed GitHub webhook with an issue title, and one signed with another secret.
    let issue = json!({
        "action": "closed",
        "issue": {"id": 5, "number": 5, "title": TITLE, "labels": [{"name": "bug"}],
                  "updated_at": "2026-11-23T12:00:00Z", "html_url": "https://github.com/acme/checkout/issues/5"},
        "repository": {"full_name": "acme/checkout"}
    })
    .to_string();
    for (signature, expected) in [
        (github_signature(&issue), 202),
        ("sha256=00".to_string(), 401),
    ] {
        let response = http
            .post(format!("{base}/v1/tickets"))
            .header("content-type", "application/json")
            .header("x-github-event", "issues")
            .header("x-hub-signature-256", signature)
            .body(issue.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }
    // A wrong key: refused, and the answer names no key.
    let response = http
        .post(format!("{base}/v1/llm-calls"))
        .bearer_auth(format!("{API_KEY}-wrong"))
        .json(&calls[..1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answer = response.text().await.unwrap();
    assert!(!answer.contains(API_KEY), "{answer}");

    // Everything lands: 24 calls (20 native, 4 from the SDK), the ticket, and the budget
    // alerts at the destination.
    let client = clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_database(&db.name);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let calls: u64 = client
            .query("SELECT count() FROM llm_calls FINAL")
            .fetch_one()
            .await
            .unwrap();
        let tickets: u64 = client
            .query("SELECT count() FROM tickets")
            .fetch_one()
            .await
            .unwrap();
        let alerts = hooks.lock().unwrap().len();
        if calls == 24 && tickets == 1 && alerts >= 3 {
            break;
        }
        for service in &mut services {
            assert!(service.0.try_wait().unwrap().is_none(), "a service exited");
        }
        assert!(
            Instant::now() < deadline,
            "{calls} calls, {tickets} tickets, {alerts} alerts after 120 s; logs in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The secrets did their work: the webhook's secret URL and token were used.
    for (path, authorization) in hooks.lock().unwrap().iter() {
        assert_eq!(path, HOOK_PATH);
        assert_eq!(
            authorization.as_deref(),
            Some(&*format!("Bearer {HOOK_TOKEN}"))
        );
    }
    // The raw text was read: every native call has all three fingerprints.
    let fingerprinted: u64 = client
        .query("SELECT count() FROM llm_calls FINAL WHERE prompt_fingerprint != '' AND output_fingerprint != '' AND tool_args_fingerprint != ''")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(fingerprinted, 20);
    // Stop the services, so their logs are whole.
    for service in &mut services {
        let _ = Command::new("kill")
            .args(["-TERM", &service.0.id().to_string()])
            .status();
    }
    for service in &mut services {
        let deadline = Instant::now() + Duration::from_secs(30);
        while service.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let mut leaks = Vec::new();
    let needles: Vec<&str> = SECRETS.iter().chain(RAW.iter()).copied().collect();
    let mut debug_lines = 0;
    for log in log_files(&dir) {
        let text = std::fs::read_to_string(&log).unwrap();
        debug_lines += text.lines().filter(|l| l.contains("DEBUG")).count();
        leaks.extend(found_in(&log.display().to_string(), &text, &needles));
    }
    assert!(debug_lines > 0, "the services logged at debug level");
    let messages = every_message(&kafka);
    let total: usize = messages.values().map(Vec::len).sum();
    assert!(
        total > 24 * 2,
        "{total} messages read: 24 calls, 24 enriched, a ticket and more"
    );
    for (topic, texts) in &messages {
        for text in texts {
            leaks.extend(found_in(&format!("topic {topic}"), text, &needles));
        }
    }
    let rows = every_row(&db.name).await;
    assert!(rows["llm_calls"].lines().count() >= 24);
    for (table, text) in &rows {
        leaks.extend(found_in(&format!("table {table}"), text, &needles));
    }
    assert!(leaks.is_empty(), "{leaks:#?}\nlogs in {}", dir.display());
    println!(
        "[privacy] searched {} log files ({debug_lines} debug lines), {total} messages in {} topics, {} tables: nothing found",
        log_files(&dir).len(),
        messages.len(),
        rows.len()
    );
    drop(services);
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`, recursively.
fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn tally_up_keeps_raw_text_out_of_its_journal_store_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("up.log");
    let port = free_port();
    let mut up = KillOnDrop(
        common::tally(&[
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("TALLY_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap(),
    );
    wait_listening(&mut up, port, Duration::from_secs(30));
    let base = format!("http://127.0.0.1:{port}");
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/llm-calls"))
        .bearer_auth("tally-local")
        .json(&calls_with_raw_text("up-privacy", 20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    emit_genai_spans(
        &format!("{base}/v1/traces"),
        "json",
        "tally-local",
        "up-privacy",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::query(&data, "SELECT count(*) AS n FROM llm_calls_stored")
        .ok()
        .and_then(|rows| rows[0]["n"].as_u64())
        != Some(24)
    {
        assert!(
            Instant::now() < deadline,
            "the calls did not reach the store"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let fingerprinted = common::query(
        &data,
        "SELECT count(*) AS n FROM llm_calls_stored WHERE prompt_fingerprint IS NOT NULL AND output_fingerprint IS NOT NULL AND tool_args_fingerprint IS NOT NULL",
    )
    .unwrap();
    assert_eq!(fingerprinted[0]["n"], 20);
    let _ = Command::new("kill")
        .args(["-TERM", &up.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut leaks = Vec::new();
    let files = every_file(&data);
    let mut bytes = 0;
    for file in &files {
        let content = std::fs::read(file).unwrap();
        bytes += content.len();
        leaks.extend(found_in(
            &file.display().to_string(),
            &String::from_utf8_lossy(&content),
            &RAW,
        ));
    }
    // Parquet pages are compressed: read every row back as text too.
    let mut rows = 0;
    for table in [
        "llm_calls",
        "deploys",
        "tickets",
        "spend_windows",
        "loop_signals",
    ] {
        let all = common::query(&data, &format!("SELECT * FROM {table}_stored")).unwrap();
        rows += all.len();
        leaks.extend(found_in(
            &format!("{table}_stored"),
            &serde_json::to_string(&all).unwrap(),
            &RAW,
        ));
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "tally up logged at debug level");
    leaks.extend(found_in("tally up's log", &logged, &RAW));
    assert!(leaks.is_empty(), "{leaks:#?}");
    println!(
        "[privacy] tally up: {} files ({bytes} bytes), {rows} rows and the log searched: nothing found",
        files.len()
    );
}
