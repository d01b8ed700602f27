//! Helpers for tally's cross-crate tests: fixtures, service addresses, and per-test Kafka
//! topics and ClickHouse databases with unique names, so tests run in parallel and leave
//! nothing behind.
//!
//! Integration tests talk to the real Kafka broker and ClickHouse server: the ones
//! `scripts/services.sh start` runs on loopback, or the ones `TALLY_KAFKA_BROKERS` and
//! `TALLY_CLICKHOUSE_URL` name. A server that does not answer fails the test, never skips it.
pub mod attribution;
pub mod scenarios;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde::de::DeserializeOwned;
use tally_contract::clickhouse::DEFAULT_URL;
use tally_contract::config::{CLICKHOUSE_URL_ENV, KAFKA_BROKERS_ENV};
use tally_contract::kafka::{KafkaConfig, DEFAULT_BROKERS};

/// The folder of golden files: `<Record>.json` fixtures and `<Record>.v<N>.avro` bytes.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Reads the fully populated fixture of a record type from `golden/<name>.json`.
pub fn fixture<T: DeserializeOwned>(record_name: &str) -> T {
    let path = golden_dir().join(format!("{record_name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} does not fit {record_name}: {e}", path.display()))
}

/// The Kafka brokers the tests use.
pub fn kafka_brokers() -> String {
    std::env::var(KAFKA_BROKERS_ENV).unwrap_or_else(|_| DEFAULT_BROKERS.to_string())
}

/// The ClickHouse URL the tests use.
pub fn clickhouse_url() -> String {
    std::env::var(CLICKHOUSE_URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// The schema registry the tests use (its Confluent REST API): `TALLY_SCHEMA_REGISTRY_URL`,
/// else the Apicurio Registry `scripts/services.sh` starts.
pub fn schema_registry_url() -> String {
    std::env::var("TALLY_SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".to_string())
}

/// Checks the schema registry answers, failing the test with what to do when it does not.
pub fn require_schema_registry() -> String {
    let url = schema_registry_url();
    let answered = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "5", &format!("{url}/subjects")])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        answered,
        "the schema registry is not reachable at {url}. Start it with `scripts/services.sh start` \
         or point TALLY_SCHEMA_REGISTRY_URL at a registry's Confluent API."
    );
    eprintln!("[it] using the real schema registry at {url}");
    url
}

/// A Kafka config pointing at the test broker.
pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        brokers: kafka_brokers(),
        ..KafkaConfig::default()
    }
}

/// A name no other test (or earlier run) uses: `prefix-<millis>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{millis}-{}-{n}", std::process::id())
}

fn admin() -> AdminClient<DefaultClientContext> {
    kafka_config()
        .client_config()
        .create()
        .expect("a Kafka admin client")
}

/// Checks the broker answers, failing the test with what to do when it does not.
pub fn require_kafka() {
    let brokers = kafka_brokers();
    if let Err(e) = admin()
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
    {
        panic!(
            "Kafka is not reachable at {brokers}: {e}. Start it with `scripts/services.sh start` \
             or point {KAFKA_BROKERS_ENV} at a broker."
        );
    }
    eprintln!("[it] using the real Kafka broker at {brokers}");
}

/// Creates a topic for one test and deletes it when dropped.
pub struct TestTopic {
    /// The topic's unique name.
    pub name: String,
}

impl TestTopic {
    /// Creates `prefix-<unique>` with the given number of partitions.
    pub async fn create(prefix: &str, partitions: i32) -> TestTopic {
        require_kafka();
        let name = unique_name(prefix);
        let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        let results = admin()
            .create_topics([&topic], &AdminOptions::new())
            .await
            .expect("create_topics request");
        for result in results {
            result.unwrap_or_else(|(topic, code)| panic!("creating topic {topic}: {code}"));
        }
        TestTopic { name }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        delete_topics(vec![self.name.clone()]);
    }
}

/// Deletes topics, best effort, from sync or async code: a thread of its own runs the
/// request, since the caller may be a `Drop` inside a runtime.
pub fn delete_topics(names: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = runtime.block_on(admin().delete_topics(&refs, &AdminOptions::new()));
        }
    })
    .join();
}

/// A ClickHouse database for one test, dropped at the end.
pub struct TestDatabase {
    /// The database's unique name.
    pub name: String,
    /// A client whose default database is this one.
    pub client: clickhouse::Client,
}

impl TestDatabase {
    /// Creates `prefix_<unique>` and checks the server answers.
    pub async fn create(prefix: &str) -> TestDatabase {
        let url = clickhouse_url();
        let name = unique_name(prefix).replace('-', "_");
        let server = clickhouse::Client::default().with_url(&url);
        let version: String = server
            .query("SELECT version()")
            .fetch_one()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ClickHouse is not reachable at {url}: {e}. Start it with \
                     `scripts/services.sh start` or point {CLICKHOUSE_URL_ENV} at a server."
                )
            });
        eprintln!("[it] using the real ClickHouse server {version} at {url}");
        server
            .query(&format!("CREATE DATABASE {name}"))
            .execute()
            .await
            .expect("CREATE DATABASE");
        TestDatabase {
            client: server.with_database(&name),
            name,
        }
    }

    /// Drops the database.
    pub async fn drop_database(self) {
        self.client
            .query(&format!("DROP DATABASE {}", self.name))
            .execute()
            .await
            .expect("DROP DATABASE");
    }
}

/// Runs `scripts/services.sh COMMAND` for a service of the test's own (its own data folder and
/// ports, given as environment variables); `unset` names the address variable that would make
/// the script use the shared server instead. Fails the test, with the script's output, if the
/// script fails.
pub fn services_script(
    command: &str,
    data: &std::path::Path,
    unset: &str,
    envs: &[(&str, String)],
) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    let mut process = std::process::Command::new(script);
    process
        .arg(command)
        .env_remove(unset)
        .env("TALLY_SERVICES_DIR", data);
    for (key, value) in envs {
        process.env(key, value);
    }
    let output = process.output().expect("scripts/services.sh runs");
    assert!(
        output.status.success(),
        "services.sh {command}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The body of `GET /metrics` from a service's Prometheus endpoint at `address`.
pub async fn fetch_metrics(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("no metrics endpoint at {address}: {e}"));
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

/// Sum of every series of `name` whose labels contain `filter`, exactly: the values are
/// decimals with at most `scale` places, summed as integers of 10^-scale.
pub fn metric_sum(metrics: &str, name: &str, filter: &str, scale: u32) -> i128 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
        .map(|l| {
            let value = l.rsplit(' ').next().unwrap();
            let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
            assert!(fraction.len() <= scale as usize, "{l}");
            let fraction = format!("{fraction:0<width$}", width = scale as usize);
            whole.parse::<i128>().unwrap() * 10_i128.pow(scale)
                + fraction.parse::<i128>().unwrap_or(0)
        })
        .sum()
}

/// `promtool check metrics` (Debian's `prometheus` package; scripts/test.sh installs it) on
/// a scrape: fails the test on any problem it reports (names, units, `_total` counters,
/// HELP and TYPE lines).
pub fn promtool_check_metrics(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `GET /metrics` of an HTTP server on `address` (keep-alive or not): the body.
pub fn scrape_metrics(address: &str) -> String {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("no metrics endpoint at {address}: {e}"));
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// A child process (a `tally` service a test started) killed when dropped, so a failing test
/// leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on loopback that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on loopback")
        .port()
}

/// Waits until something listens on `127.0.0.1:port`; fails if `child` exits first.
pub fn wait_listening(child: &mut KillOnDrop, port: u16, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port} after {timeout:?}"
        );
        assert!(
            child.0.try_wait().expect("the child's status").is_none(),
            "the process that should listen on {port} exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Python of the venv with the real OpenTelemetry SDK (`TALLY_OTEL_PYTHON`, else made by
/// `scripts/otel-venv.sh`).
pub fn otel_python() -> PathBuf {
    venv_python("TALLY_OTEL_PYTHON", "otel-venv.sh")
}

/// The Python of the venv with Confluent's client (`TALLY_CONFLUENT_PYTHON`, else made by
/// `scripts/confluent-venv.sh`).
pub fn confluent_python() -> PathBuf {
    venv_python("TALLY_CONFLUENT_PYTHON", "confluent-venv.sh")
}

fn venv_python(variable: &str, script: &str) -> PathBuf {
    if let Ok(python) = std::env::var(variable) {
        return PathBuf::from(python);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let output = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// `tests/otel/emit_genai_spans.py`: GenAI spans exported by the real OpenTelemetry SDK
/// (`protocol` protobuf or json) to `endpoint` with `api_key`; fails the test if the export
/// did not succeed.
pub fn emit_genai_spans(endpoint: &str, protocol: &str, api_key: &str, run_id: &str) {
    let (exported, output) = try_emit_genai_spans(endpoint, protocol, api_key, run_id);
    assert!(exported, "export failed: {output}");
}

/// Like [`emit_genai_spans`]; says whether the SDK reported success, and what it printed.
pub fn try_emit_genai_spans(
    endpoint: &str,
    protocol: &str,
    api_key: &str,
    run_id: &str,
) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("otel/emit_genai_spans.py");
    let output = std::process::Command::new(otel_python())
        .arg(script)
        .args([endpoint, protocol, api_key, run_id])
        .output()
        .expect("the OpenTelemetry client runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// `record` as a newer tally would write it: single-object encoded with a later version of
/// its schema (today's plus a field today's readers do not know), whose fingerprint no
/// version of this build has.
pub fn newer_version_bytes<T: tally_contract::AvroRecord>(record: &T) -> Vec<u8> {
    let mut json: serde_json::Value = serde_json::from_str(&T::schemas().current.json).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "added_by_a_newer_tally", "type": ["null", "string"], "default": null,
            "doc": "A field of a later version."
        }));
    let schema = apache_avro::Schema::parse_str(&json.to_string()).unwrap();
    let mut value = apache_avro::to_value(record).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.push((
            "added_by_a_newer_tally".into(),
            apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
        ));
    }
    let mut bytes = tally_contract::codec::MARKER.to_vec();
    bytes.extend_from_slice(&tally_contract::schema::fingerprint(&schema));
    bytes.extend_from_slice(&apache_avro::to_avro_datum(&schema, value).unwrap());
    bytes
}

/// Headless Chromium (Debian's `chromium`, which `scripts/test.sh` installs).
pub fn chromium() -> PathBuf {
    for candidate in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("headless Chromium is needed to render the report (scripts/test.sh installs Debian's chromium)");
}

/// The DOM headless Chromium builds from `html` once any script on it has run, serialised:
/// what a reader's browser makes of a page, by a parser that is not tally's.
pub fn rendered_dom(html: &str) -> String {
    let dir = std::env::temp_dir().join(unique_name("tally-dom"));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.html");
    std::fs::write(&page, html).unwrap();
    let output = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&dir);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        dom.contains("<body"),
        "chromium gave no DOM: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

/// Strings a client may send as a team, user or workflow, each an attack on one reader of a
/// report: a browser (markup, script, attributes), a spreadsheet (formulas), a terminal
/// (escape sequences, forged lines) or SQL.
pub const HOSTILE_TEXT: [&str; 8] = [
    "'; DROP TABLE llm_calls; --",
    "\\' OR 1=1 --",
    "back\\slash and \"quotes\" and `ticks`",
    "line\nbreak\r\nand\ttab",
    "nul\u{0}byte",
    "<script>document.body.setAttribute('data-pwned','1')</script>",
    "\"><img src=x onerror=\"document.title='pwned'\"><b>bold</b>",
    "=HYPERLINK(\"http://evil.example\",\"click\")\u{1b}[2J",
];

/// Asserts that a report holding every one of [`HOSTILE_TEXT`] renders each safely: the HTML
/// page, parsed and run by Chromium, has no element or script of the text's and shows the
/// text; the CSV parses back (by the `csv` crate) to every text, a formula guarded by a
/// leading `'`; the text table holds no control character but its own newlines.
pub fn assert_report_renders_hostile_text_safely(html: &str, csv_text: &str, table: &str) {
    let dom = rendered_dom(html);
    for injected in [
        "data-pwned=\"1\"",
        "<img",
        "<b>",
        "<script",
        "pwned</title>",
    ] {
        assert!(
            !dom.contains(injected),
            "{injected} in the rendered page:\n{dom}"
        );
    }
    assert!(
        dom.contains("&lt;script&gt;document.body.setAttribute('data-pwned','1')&lt;/script&gt;"),
        "the script shows as text:\n{dom}"
    );

    let mut cells = std::collections::BTreeSet::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(csv_text.as_bytes());
    for record in reader.records() {
        cells.extend(record.unwrap().iter().map(str::to_string));
    }
    for text in HOSTILE_TEXT {
        let expected = if text.starts_with('=') {
            format!("'{text}")
        } else {
            text.to_string()
        };
        assert!(
            cells.contains(&expected),
            "{expected:?} is not a cell of the CSV:\n{csv_text}"
        );
    }

    let control = table.chars().find(|c| c.is_control() && *c != '\n');
    assert_eq!(
        control, None,
        "a control character in the text table:\n{table}"
    );
    assert!(table.contains("line\\nbreak\\r\\nand\\ttab"), "{table}");
    assert!(table.contains("nul\\u{0}byte"), "{table}");
}
