//! The chaos run: the whole pipeline on a Kafka broker and a ClickHouse server of its own —
//! two `tally ingest`, two `tally process` in one group, `tally sink` and `tally notify` — under
//! steady load while faults are injected on a seeded schedule:
//!
//! - SIGKILL and restart of every tally service, several times each;
//! - ClickHouse stopped, then started; the Kafka broker stopped, then started (ingest answers
//!   503 meanwhile; the load retries per Retry-After and counts only what got a 202);
//! - a burst at three times the rate;
//! - requests already acknowledged sent again to the other ingest instance.
//!
//! Then it waits for the pipeline to drain and compares ClickHouse with the ground truth of
//! every call that got a 202: per team, calls, tokens by kind, cost in nano-dollars and CO2e in
//! `llm_calls FINAL`, the 1-minute and 1-day spend windows, and each budget threshold alert
//! once — all exactly. It prints a table of what happened.
//!
//! The profile CI runs lasts 2 minutes of load (`TALLY_CHAOS_SECS`, default 120; 600 for the
//! full run) at `TALLY_CHAOS_RATE` calls a second (default 200), seeded by `TALLY_CHAOS_SEED`:
//! `TALLY_CHAOS_SECS=600 cargo test -p tally --test chaos -- --nocapture`.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tally_accounting::enrich::Enricher;
use tally_contract::records::{LlmCall, Micros};
use tally_gen::traffic::{self, Event, Mix, TrafficConfig};
use tally_processor::ProcessorConfig;
use tally_tests::{free_port, services_script, unique_name};

const KEY: &str = "chaos-key";
const KAFKA_PORT: u16 = 19292;
const CLICKHOUSE_PORT: u16 = 18423;
const HOUR: Micros = 3_600_000_000;

/// The tally binary the services run: `TALLY_CHAOS_BIN` (a copy, so a long run is not
/// changed by a rebuild), else the one cargo built for this test.
fn tally_bin() -> String {
    std::env::var("TALLY_CHAOS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tally").into())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The Kafka broker and ClickHouse server of this run, on ports of their own.
struct Servers {
    data: PathBuf,
}

impl Servers {
    fn envs() -> [(&'static str, String); 4] {
        [
            ("TALLY_KAFKA_PORT", KAFKA_PORT.to_string()),
            ("TALLY_KAFKA_CONTROLLER_PORT", (KAFKA_PORT + 1).to_string()),
            ("TALLY_CLICKHOUSE_HTTP_PORT", CLICKHOUSE_PORT.to_string()),
            (
                "TALLY_CLICKHOUSE_TCP_PORT",
                (CLICKHOUSE_PORT + 1).to_string(),
            ),
        ]
    }

    fn run(&self, command: &str) {
        run_script(&self.data, command);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.run("stop-kafka");
        self.run("stop-clickhouse");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One tally service: how to start it, and its process while it runs.
struct Service {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    kills: u32,
    max_rss_kib: u64,
}

impl Service {
    fn new(name: &str, args: &[&str], env: &[(&str, String)]) -> Service {
        Service {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            child: None,
            kills: 0,
            max_rss_kib: 0,
        }
    }

    fn start(&mut self, log_dir: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.log", self.name)))
            .unwrap();
        let mut command = Command::new(tally_bin());
        command
            .args(&self.args)
            .env_remove("TALLY_KAFKA_BROKERS")
            .env_remove("TALLY_CLICKHOUSE_URL")
            .env("TALLY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().unwrap());
    }

    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
    }

    fn sample_rss(&mut self) {
        let Some(child) = &self.child else { return };
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        self.max_rss_kib = self.max_rss_kib.max(rss);
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A destination for notify that answers 200 to every request and counts them.
fn receiver(count: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buffer = [0u8; 65_536];
            let _ = stream.read(&mut buffer);
            count.fetch_add(1, Ordering::Relaxed);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    port
}

/// What a team's acknowledged calls add up to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Figures {
    calls: i128,
    input_tokens: i128,
    output_tokens: i128,
    cache_read_tokens: i128,
    cache_write_tokens: i128,
    reasoning_tokens: i128,
    cost_nanos: i128,
    co2e_ug: i128,
}

/// Sends batches of calls round robin to the ingest instances, retrying each until it gets
/// a 202; the truth is built from the 202s only. Every `duplicate_every`-th acknowledged
/// batch is sent again to the other instance.
struct Load {
    targets: Vec<String>,
    http: reqwest::Client,
    acknowledged: Vec<LlmCall>,
    requests: u64,
    retries: u64,
    /// The instance that gave the last 202.
    last_target: usize,
}

impl Load {
    async fn send(&mut self, calls: &[LlmCall], duplicate: bool) {
        let body: String = calls
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("received_at");
                o.retain(|_, v| !v.is_null());
                o.insert(
                    "occurred_at".into(),
                    Value::String(tally_contract::clock::rfc3339(c.occurred_at)),
                );
                v.to_string() + "\n"
            })
            .collect();
        // A duplicate goes to the instance that did not take the original.
        let mut target = match duplicate {
            true => (self.last_target + 1) % self.targets.len(),
            false => (self.requests as usize) % self.targets.len(),
        };
        loop {
            self.requests += 1;
            let sent = self
                .http
                .post(format!("{}/v1/llm-calls", self.targets[target]))
                .bearer_auth(KEY)
                .timeout(Duration::from_secs(30))
                .body(body.clone())
                .send()
                .await;
            let wait = match sent {
                Ok(response) if response.status() == 202 => {
                    self.last_target = target;
                    break;
                }
                Ok(response) if response.status() == 429 || response.status() == 503 => response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1u64),
                Ok(response) => panic!(
                    "ingest answered {}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                // Killed meanwhile: the other instance takes it.
                Err(_) => 0,
            };
            self.retries += 1;
            target = (target + 1) % self.targets.len();
            tokio::time::sleep(Duration::from_millis(200).max(Duration::from_secs(wait.min(5))))
                .await;
        }
        if !duplicate {
            self.acknowledged.extend_from_slice(calls);
        }
    }
}

fn truth(calls: &[LlmCall]) -> BTreeMap<String, Figures> {
    let config = ProcessorConfig::default();
    let enricher = Enricher::new(config.catalogue().unwrap(), config.carbon.clone()).unwrap();
    let mut by_team: BTreeMap<String, Figures> = BTreeMap::new();
    for call in calls {
        let enriched = enricher.enrich(call.clone(), 0).unwrap();
        let t = by_team.entry(call.team.clone()).or_default();
        t.calls += 1;
        t.input_tokens += i128::from(call.input_tokens);
        t.output_tokens += i128::from(call.output_tokens);
        t.cache_read_tokens += i128::from(call.cache_read_tokens);
        t.cache_write_tokens += i128::from(call.cache_write_tokens);
        t.reasoning_tokens += i128::from(call.reasoning_tokens);
        t.cost_nanos += i128::from(enriched.cost_total_nanos.unwrap_or(0));
        t.co2e_ug += i128::from(enriched.co2e_ug_central);
    }
    by_team
}

async fn clickhouse_figures(client: &clickhouse::Client, sql: &str) -> BTreeMap<String, Figures> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Row {
        team: String,
        calls: i128,
        input_tokens: i128,
        output_tokens: i128,
        cache_read_tokens: i128,
        cache_write_tokens: i128,
        reasoning_tokens: i128,
        cost_nanos: i128,
        co2e_ug: i128,
    }
    let rows: Vec<Row> = match client.query(sql).fetch_all().await {
        Ok(rows) => rows,
        Err(_) => return BTreeMap::new(),
    };
    rows.into_iter()
        .map(|r| {
            (
                r.team,
                Figures {
                    calls: r.calls,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cache_read_tokens: r.cache_read_tokens,
                    cache_write_tokens: r.cache_write_tokens,
                    reasoning_tokens: r.reasoning_tokens,
                    cost_nanos: r.cost_nanos,
                    co2e_ug: r.co2e_ug,
                },
            )
        })
        .collect()
}

const CALLS_SQL: &str = "SELECT team, toInt128(count()) AS calls, sum(toInt128(input_tokens)) AS input_tokens, \
    sum(toInt128(output_tokens)) AS output_tokens, sum(toInt128(cache_read_tokens)) AS cache_read_tokens, \
    sum(toInt128(cache_write_tokens)) AS cache_write_tokens, sum(toInt128(reasoning_tokens)) AS reasoning_tokens, \
    sum(toInt128(ifNull(cost_total_nanos, 0))) AS cost_nanos, sum(toInt128(co2e_ug_central)) AS co2e_ug \
    FROM llm_calls FINAL GROUP BY team ORDER BY team";

fn windows_sql(seconds: i64, before: Micros) -> String {
    format!(
        "SELECT team, toInt128(sum(calls)) AS calls, sum(input_tokens) AS input_tokens, \
         sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens, \
         sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens, \
         sum(cost_nanos) AS cost_nanos, sum(co2e_ug_central) AS co2e_ug FROM spend_window_totals \
         WHERE window_seconds = {seconds} AND dimension = 'model' AND window_start < fromUnixTimestamp64Micro({before}) \
         GROUP BY team ORDER BY team"
    )
}

/// A fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Kill(usize),
    ClickHouseDown,
    KafkaDown,
    Burst,
}

/// What the fault injector and the load share.
#[derive(Default)]
struct Chaos {
    /// The load's rate multiplier: 3 during a burst, else 1.
    rate_factor: AtomicU64,
    /// Set by the load when every call is acknowledged.
    load_done: AtomicBool,
    /// A service that exited by itself.
    failure: std::sync::Mutex<Option<String>>,
}

fn run_script(data: &Path, command: &str) {
    let unset = if command.contains("kafka") {
        "TALLY_KAFKA_BROKERS"
    } else {
        "TALLY_CLICKHOUSE_URL"
    };
    services_script(command, data, unset, &Servers::envs());
}

/// Runs the fault schedule against the services and the servers until the load is done, then
/// brings everything back up; returns the services and how many faults of each kind it made.
fn inject(
    schedule: Vec<(f64, Fault)>,
    mut services: Vec<Service>,
    data: &Path,
    logs: &Path,
    chaos: &Chaos,
    secs: u64,
    started: Instant,
) -> (Vec<Service>, BTreeMap<&'static str, u32>) {
    let scale = secs as f64 / 600.0;
    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut next_fault = 0usize;
    let mut clickhouse_up_at: Option<f64> = None;
    let mut kafka_up_at: Option<f64> = None;
    let mut burst_until: Option<f64> = None;
    let mut restart_at: Vec<(f64, usize)> = Vec::new();
    chaos.rate_factor.store(1, Ordering::Relaxed);
    loop {
        let t = started.elapsed().as_secs_f64();
        let done = chaos.load_done.load(Ordering::SeqCst);
        while !done && next_fault < schedule.len() && schedule[next_fault].0 <= t {
            match schedule[next_fault].1 {
                Fault::Kill(s) => {
                    services[s].sample_rss();
                    services[s].sigkill();
                    restart_at.push((t + 1.0, s));
                    *faults.entry("SIGKILL and restart").or_default() += 1;
                }
                Fault::ClickHouseDown => {
                    run_script(data, "stop-clickhouse");
                    clickhouse_up_at = Some(t + (60.0 * scale).max(10.0));
                    *faults.entry("ClickHouse stopped").or_default() += 1;
                }
                Fault::KafkaDown => {
                    run_script(data, "stop-kafka");
                    kafka_up_at = Some(t + (30.0 * scale).max(6.0));
                    *faults.entry("Kafka stopped").or_default() += 1;
                }
                Fault::Burst => {
                    burst_until = Some(t + (30.0 * scale).max(6.0));
                    chaos.rate_factor.store(3, Ordering::Relaxed);
                    *faults.entry("burst at 3x").or_default() += 1;
                }
            }
            next_fault += 1;
        }
        if clickhouse_up_at.is_some_and(|at| done || t >= at) {
            run_script(data, "start-clickhouse");
            clickhouse_up_at = None;
        }
        if kafka_up_at.is_some_and(|at| done || t >= at) {
            run_script(data, "start-kafka");
            kafka_up_at = None;
        }
        if burst_until.is_some_and(|at| done || t >= at) {
            chaos.rate_factor.store(1, Ordering::Relaxed);
            burst_until = None;
        }
        restart_at.retain(|(at, s)| {
            let due = done || t >= *at;
            if due {
                services[*s].start(logs);
            }
            !due
        });
        for service in &mut services {
            service.sample_rss();
            if let Some(status) = service.exited() {
                *chaos.failure.lock().unwrap() =
                    Some(format!("{} exited by itself ({status})", service.name));
                return (services, faults);
            }
        }
        if done {
            return (services, faults);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_loses_and_doubles_nothing_under_faults() {
    let secs: u64 = env_or("TALLY_CHAOS_SECS", 120);
    let rate: u64 = env_or("TALLY_CHAOS_RATE", 200);
    let seed: u64 = env_or("TALLY_CHAOS_SEED", 7);
    let mut rng = StdRng::seed_from_u64(seed);
    let servers = Servers {
        data: std::env::temp_dir().join(unique_name("tally-chaos")),
    };
    servers.run("start-kafka");
    servers.run("start-clickhouse");
    // The services' logs outlive the run (the servers' data does not), to read after a failure.
    let logs = std::env::temp_dir().join(unique_name("tally-chaos-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let brokers = format!("127.0.0.1:{KAFKA_PORT}");
    let clickhouse_url = format!("http://127.0.0.1:{CLICKHOUSE_PORT}");
    let common = [
        ("TALLY_KAFKA_BROKERS", brokers.clone()),
        ("TALLY_CLICKHOUSE_URL", clickhouse_url.clone()),
    ];
    for args in [
        &["topics", "create", "--partitions", "4"][..],
        &["migrate"][..],
    ] {
        let out = Command::new(tally_bin())
            .args(args)
            .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The workload: a day of calls three days ago, sent at `rate` for `secs`.
    let now = tally_contract::clock::now_micros();
    let day_start = (now / (24 * HOUR) - 3) * 24 * HOUR;
    let workload = traffic::generate(&TrafficConfig {
        seed,
        tenant: "acme".into(),
        teams: 6,
        calls: (rate * secs) as usize,
        start: day_start,
        span: 24 * HOUR,
        mix: Mix::Mixed,
    });
    let calls: Vec<LlmCall> = workload
        .events
        .into_iter()
        .filter_map(|e| match e {
            Event::Call(c) => Some(*c),
            _ => None,
        })
        .collect();
    let teams: Vec<String> = {
        let mut t: Vec<String> = calls.iter().map(|c| c.team.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    // A monthly budget per team small enough that every threshold fires during the run.
    let expected_month = truth(&calls);
    let budgets: String = teams
        .iter()
        .map(|team| {
            let dollars = (expected_month[team].cost_nanos / 1_000_000_000 / 2).max(1);
            format!(
                "[[budgets]]\nname = \"{team}-month\"\ntenant = \"acme\"\nteam = \"{team}\"\nperiod = \"month\"\namount_usd = \"{dollars}\"\nburn_rate_alert = false\n"
            )
        })
        .collect();
    let processor_config = servers.data.join("processor.toml");
    std::fs::write(&processor_config, &budgets).unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let ingest_config = |port: u16| {
        let path = servers.data.join(format!("ingest-{port}.toml"));
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:{port}\"\nproduce_timeout_ms = 5000\n[[api_keys]]\nname = \"chaos\"\nsha256 = \"{}\"\ntenant = \"acme\"\nany_team = true\nrate_limit_per_sec = {}\n",
                tally_ingest::auth::hash_key(KEY),
                rate * 2
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let webhook = receiver(delivered.clone());
    let notify_config = servers.data.join("notify.toml");
    std::fs::write(
        &notify_config,
        format!("[[destinations]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{webhook}/\"\n"),
    )
    .unwrap();
    let group = unique_name("chaos");
    let env = |extra: &[(&str, String)]| -> Vec<(&'static str, String)> {
        let mut all: Vec<(&'static str, String)> = common.to_vec();
        for (k, v) in extra {
            all.push((Box::leak(k.to_string().into_boxed_str()), v.clone()));
        }
        all
    };
    let (ia, ib) = (ingest_config(port_a), ingest_config(port_b));
    let processor_path = processor_config.to_string_lossy().into_owned();
    let notify_path = notify_config.to_string_lossy().into_owned();
    let mut services = vec![
        Service::new("ingest-a", &["ingest", "--config", &ia], &env(&[])),
        Service::new("ingest-b", &["ingest", "--config", &ib], &env(&[])),
        Service::new(
            "process-a",
            &["process", "--config", &processor_path],
            &env(&[
                ("TALLY__GROUP_ID", format!("{group}-p")),
                ("TALLY__INSTANCE_ID", "a".into()),
                ("TALLY__TRANSACTION_TIMEOUT_MS", "10000".into()),
                ("TALLY__SESSION_TIMEOUT_MS", "6000".into()),
            ]),
        ),
        Service::new(
            "process-b",
            &["process", "--config", &processor_path],
            &env(&[
                ("TALLY__GROUP_ID", format!("{group}-p")),
                ("TALLY__INSTANCE_ID", "b".into()),
                ("TALLY__TRANSACTION_TIMEOUT_MS", "10000".into()),
                ("TALLY__SESSION_TIMEOUT_MS", "6000".into()),
            ]),
        ),
        Service::new(
            "sink",
            &["sink"],
            &env(&[
                ("TALLY__GROUP_ID", format!("{group}-s")),
                ("TALLY__BATCH_MAX_WAIT_MS", "300".into()),
            ]),
        ),
        Service::new(
            "notify",
            &["notify", "--config", &notify_path],
            &env(&[("TALLY__GROUP_ID", format!("{group}-n"))]),
        ),
    ];
    for service in &mut services {
        service.start(&logs);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The fault schedule, seeded: (second, fault), run by a thread of its own while the load
    // goes on (a request waiting out a Kafka outage must not hold back Kafka's restart).
    let mut schedule: Vec<(f64, Fault)> = Vec::new();
    for s in 0..services.len() {
        for _ in 0..3 {
            schedule.push((rng.random_range(0.05..0.9) * secs as f64, Fault::Kill(s)));
        }
    }
    schedule.push((0.3 * secs as f64, Fault::ClickHouseDown));
    schedule.push((0.6 * secs as f64, Fault::KafkaDown));
    schedule.push((0.8 * secs as f64, Fault::Burst));
    schedule.sort_by(|a, b| a.0.total_cmp(&b.0));

    let chaos = Arc::new(Chaos::default());
    let started = Instant::now();
    let injector = {
        let (chaos, data, logs) = (chaos.clone(), servers.data.clone(), logs.clone());
        std::thread::spawn(move || inject(schedule, services, &data, &logs, &chaos, secs, started))
    };
    let mut load = Load {
        targets: vec![
            format!("http://127.0.0.1:{port_a}"),
            format!("http://127.0.0.1:{port_b}"),
        ],
        http: reqwest::Client::new(),
        acknowledged: Vec::new(),
        requests: 0,
        retries: 0,
        last_target: 0,
    };
    let batch = 50usize;
    let mut sent = 0usize;
    let mut resent = 0u32;
    // Calls due so far: the rate integrated over time (three times it during a burst).
    let (mut due, mut last_t) = (0.0f64, 0.0f64);
    while sent < calls.len() {
        if let Some(failure) = chaos.failure.lock().unwrap().clone() {
            panic!("{failure}; see {}", logs.display());
        }
        let t = started.elapsed().as_secs_f64();
        due += (t - last_t) * (rate * chaos.rate_factor.load(Ordering::Relaxed)) as f64;
        last_t = t;
        let due = due as usize;
        if sent < due.min(calls.len()) {
            let chunk_end = (sent + batch).min(calls.len());
            let chunk = calls[sent..chunk_end].to_vec();
            load.send(&chunk, false).await;
            if load.acknowledged.len() % (batch * 20) == 0 {
                // A client that lost its 202 sends the request again, to the other instance.
                load.send(&chunk, true).await;
                resent += 1;
            }
            sent = chunk_end;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    chaos.load_done.store(true, Ordering::SeqCst);
    let (mut services, mut faults) = tokio::task::spawn_blocking(move || injector.join())
        .await
        .unwrap()
        .unwrap_or_else(|_| panic!("the fault injector panicked; see its message above"));
    faults.insert("acknowledged request sent again", resent);
    // No call closes the day's windows: each partition, once quiet, closes its own
    // (`windows.idle_close_secs`).
    let load_secs = started.elapsed().as_secs_f64();

    // Drain: ClickHouse equals the truth of every acknowledged call.
    let expected = truth(&load.acknowledged);
    let client = clickhouse::Client::default()
        .with_url(&clickhouse_url)
        .with_database("tally");
    let drained_at = Instant::now();
    let before = day_start + 24 * HOUR;
    let mut last = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        last = (
            clickhouse_figures(&client, CALLS_SQL).await,
            clickhouse_figures(&client, &windows_sql(60, before)).await,
            clickhouse_figures(&client, &windows_sql(86_400, before)).await,
        );
        if last.0 == expected && last.1 == expected && last.2 == expected {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let drain_secs = drained_at.elapsed().as_secs_f64();
    for service in &mut services {
        service.sample_rss();
    }
    let acknowledged = load.acknowledged.len() as i128;
    let stored: i128 = last.0.values().map(|f| f.calls).sum();
    let mut table = format!(
        "chaos run (seed {seed}, {secs} s of load at {rate} calls/s, {load_secs:.0} s with retries)\n"
    );
    for (fault, n) in &faults {
        table += &format!("  fault {fault:<34} {n}\n");
    }
    table += &format!(
        "  calls acknowledged (202)               {acknowledged}\n  in llm_calls FINAL                     {stored}\n  lost                                   {}\n  duplicated                             {}\n  requests / retried                     {} / {}\n  alerts delivered to the webhook        {}\n  time to drain                          {drain_secs:.0} s\n",
        (acknowledged - stored).max(0),
        (stored - acknowledged).max(0),
        load.requests,
        load.retries,
        delivered.load(Ordering::Relaxed)
    );
    for service in &services {
        table += &format!(
            "  {:<10} killed {} times, max RSS {} MiB\n",
            service.name,
            service.kills,
            service.max_rss_kib / 1024
        );
    }
    println!("{table}");
    assert_eq!(last.0, expected, "llm_calls FINAL per team\n{table}");
    assert_eq!(last.1, expected, "1-minute windows per team\n{table}");
    assert_eq!(last.2, expected, "1-day windows per team\n{table}");

    // Each budget threshold alerted exactly once per team (every one was crossed).
    let thresholds: Vec<(String, String, u64)> = client
        .query(
            "SELECT ifNull(team, '') AS team, labels['threshold_percent'] AS t, count() FROM alerts FINAL \
             WHERE kind = 'budget_threshold' GROUP BY team, t ORDER BY team, t",
        )
        .fetch_all()
        .await
        .unwrap();
    for team in &teams {
        let of_team: Vec<(&str, u64)> = thresholds
            .iter()
            .filter(|(t, _, _)| t == team)
            .map(|(_, p, n)| (p.as_str(), *n))
            .collect();
        assert_eq!(
            of_team,
            [("100", 1), ("50", 1), ("80", 1)],
            "{team}: {thresholds:?}"
        );
    }
    assert!(
        delivered.load(Ordering::Relaxed) > 0,
        "notify delivered alerts"
    );
    drop(services);
    drop(servers);
}
