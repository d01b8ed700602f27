//! One load phase against a [`Deployment`]: `tally gen` sends its generated traffic to ingest
//! (at a rate, or as fast as it can), while the harness samples, every 250 ms, the calls
//! ingest accepted and the rows visible in ClickHouse, until the backlog has drained. With
//! probes, the harness also sends, beside gen's load:
//!
//! - **markers**: one call per request every 50 ms, each with its own event id, whose
//!   send time it keeps; it asks ClickHouse every 50 ms which of them are visible. A
//!   marker's latency is from the moment its POST was sent to the answer of the first query
//!   that returned it (so the figure includes up to one 50 ms polling interval).
//! - **retry storms**: every 250 ms, six identical failing attempts of a new session in one
//!   request (the 6th opens a `retry_storm`); a consumer reads `tally.alerts.v1` with
//!   `read_committed`, as `tally notify` does. An alert's latency is from the POST to its
//!   firing alert being readable.
//!
//! Markers and storms belong to a tenant of their own and are dated before all of gen's
//! traffic, so they move no watermark and leave gen's windows and sessions alone.
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tally_contract::records::{Alert, AlertKind, AlertState};

use crate::pipeline::{Ctx, Deployment, Key};
use crate::procs::{CpuMeter, Proc, RssPeaks};
use crate::stats::{Latency, Sample};

/// How gen sends.
#[derive(Debug, Clone)]
pub enum Load {
    /// As fast as it can: `calls` calls, stopped (SIGKILL) after `max_secs` of sending.
    Saturate { calls: usize, max_secs: f64 },
    /// `rate` calls/s for `secs` seconds (stopped `RATE_OVERRUN_SECS` later if gen falls behind).
    Rate { rate: u64, secs: u64 },
}

/// A gen that cannot keep up with a held rate is stopped this long after the rate's seconds,
/// so a rate beyond what gen offers costs the run its seconds, not the time to send them all
/// (its offered rate is what ingest accepted over the time it sent).
const RATE_OVERRUN_SECS: f64 = 2.0;

impl Load {
    /// Seconds after the first call accepted at which gen is stopped.
    fn max_secs(&self) -> f64 {
        match *self {
            Load::Saturate { max_secs, .. } => max_secs,
            Load::Rate { secs, .. } => secs as f64 + RATE_OVERRUN_SECS,
        }
    }
}

/// Latency probes sent beside the load.
#[derive(Debug, Clone)]
pub struct Probes {
    pub key: Key,
    /// Event time of the probes, milliseconds (before all of gen's traffic).
    pub dated_ms: i64,
}

/// One phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub label: String,
    /// gen's API key (its tenant is the phase's own, so event ids never repeat).
    pub key: Key,
    pub seed: u64,
    /// gen's `--start` (event time, microseconds) and `--span` (seconds).
    pub start_us: i64,
    pub span_secs: u64,
    pub load: Load,
    pub probes: Option<Probes>,
    /// How long to wait for the backlog to drain (then 240 s more before giving up).
    pub drain_timeout: Duration,
}

/// What a phase measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub samples: Vec<Sample>,
    /// When gen's load ran, seconds since the phase started.
    pub load: (f64, f64),
    /// When every accepted call was visible.
    pub drained_at: Option<f64>,
    /// Calls ingest accepted in the phase, and rows that became visible.
    pub accepted: u64,
    pub visible: u64,
    /// Calls gen says it sent (when it finished), and calls the harness sent.
    pub gen_calls: Option<u64>,
    pub harness_calls: u64,
    /// CPU seconds per process over the phase (gen: its sending only).
    pub cpu: BTreeMap<String, f64>,
    /// Peak resident memory per process over the phase, in bytes (sampled every 250 ms).
    pub rss: BTreeMap<String, u64>,
    pub row_latency: Option<Latency>,
    pub markers: (usize, usize),
    pub alert_latency: Option<Latency>,
    pub storms: (usize, usize),
}

const TICK: Duration = Duration::from_millis(250);
const MARKER_EVERY: Duration = Duration::from_millis(50);
const STORM_EVERY: Duration = Duration::from_millis(250);

/// Runs a phase; `bar` shows its progress.
pub async fn run(ctx: &Ctx, dep: &mut Deployment, phase: &Phase, bar: &ProgressBar) -> Outcome {
    let started = Instant::now();
    let since = |at: Instant| at.duration_since(started).as_secs_f64();
    let base = (dep.accepted(ctx).await, dep.visible(ctx).await);
    let pids = dep.pids(ctx);
    let meter = CpuMeter::start(&pids);
    let mut rss = RssPeaks::default();

    let truth_file = ctx
        .dir
        .join(format!("{}{}-gen.json", dep.prefix, slug(&phase.label)));
    let mut gen = spawn_gen(ctx, dep, phase, &truth_file);
    let mut samples = Vec::new();
    let mut load_start: Option<(f64, f64)> = None; // (t, gen CPU then)
    let mut load_end: Option<(f64, f64)> = None;
    let mut probes: Option<Running> = None;
    let hard_cap = phase.drain_timeout + Duration::from_secs(240);
    let drained_at = loop {
        tokio::time::sleep(TICK).await;
        let t = since(Instant::now());
        let sample = Sample {
            t,
            accepted: dep.accepted(ctx).await - base.0,
            visible: dep.visible(ctx).await - base.1,
        };
        samples.push(sample);
        rss.sample(&pids);
        dep.check_running();
        if load_start.is_none() && sample.accepted > 0 {
            load_start = Some((t, gen.cpu()));
            if let Some(p) = &phase.probes {
                probes = Some(Running::start(ctx, dep, &phase.label, p));
            }
        }
        if let (Some((t0, _)), None) = (load_start, load_end) {
            let elapsed = t - t0;
            bar.set_message(format!(
                "{}: {:.0} s, {} accepted, lag {}",
                phase.label,
                elapsed,
                sample.accepted,
                sample.lag()
            ));
            let stop = elapsed >= phase.load.max_secs();
            if stop || gen.exited() {
                let gen_cpu = if stop { gen.kill() } else { gen.cpu() };
                load_end = Some((t, gen_cpu));
                if let Some(p) = &mut probes {
                    p.stop_sending().await;
                }
            }
        }
        if load_start.is_none() && gen.exited() {
            panic!(
                "tally gen exited before sending (see {})",
                truth_file.display()
            );
        }
        if let Some((end, _)) = load_end {
            bar.set_message(format!("{}: draining, lag {}", phase.label, sample.lag()));
            if t > end && sample.visible >= sample.accepted {
                break Some(t);
            }
            assert!(
                t - end < hard_cap.as_secs_f64(),
                "{}: the backlog did not drain in {hard_cap:?} ({} calls accepted, {} visible)",
                phase.label,
                sample.accepted,
                sample.visible
            );
        }
    };
    let csv: String = std::iter::once("t,accepted,visible\n".to_string())
        .chain(
            samples
                .iter()
                .map(|s| format!("{:.3},{},{}\n", s.t, s.accepted, s.visible)),
        )
        .collect();
    let _ = std::fs::write(
        ctx.dir
            .join(format!("{}{}-samples.csv", dep.prefix, slug(&phase.label))),
        csv,
    );
    let end = load_end.expect("the load ended");
    let start = load_start.expect("the load started");
    let mut cpu = meter.since(&pids);
    let (gen_cpu, status) = gen
        .wait(Duration::from_secs(10))
        .unwrap_or((end.1, Default::default()));
    cpu.insert("gen".into(), gen_cpu.max(end.1) - start.1);
    let gen_calls = match phase.load {
        Load::Rate { .. } if status.success() => {
            let truth: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&truth_file).unwrap_or_default())
                    .unwrap_or_default();
            truth["calls"].as_u64()
        }
        _ => None,
    };
    let last = *samples.last().expect("samples");
    let mut outcome = Outcome {
        load: (start.0, end.0),
        drained_at,
        accepted: last.accepted,
        visible: last.visible,
        gen_calls,
        cpu,
        rss: rss.peaks,
        samples,
        ..Outcome::default()
    };
    if let Some(p) = probes {
        p.finish(&mut outcome).await;
    }
    if let Some(calls) = outcome.gen_calls {
        assert_eq!(
            outcome.accepted,
            calls + outcome.harness_calls,
            "{}: ingest accepted {} calls; gen sent {calls} and the harness {}",
            phase.label,
            outcome.accepted,
            outcome.harness_calls
        );
    }
    assert_eq!(
        outcome.visible, outcome.accepted,
        "{}: {} rows visible for {} calls accepted",
        phase.label, outcome.visible, outcome.accepted
    );
    outcome
}

fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn spawn_gen(ctx: &Ctx, dep: &Deployment, phase: &Phase, truth: &std::path::Path) -> Proc {
    let (calls, rate, duration) = match phase.load {
        Load::Saturate { calls, .. } => (Some(calls), 100_000_000, 1),
        Load::Rate { rate, secs } => (None, rate, secs),
    };
    let start = tally_contract::clock::rfc3339(phase.start_us);
    let mut args = vec![
        "gen".to_string(),
        "--target".into(),
        dep.url.clone(),
        "--api-key".into(),
        phase.key.key.clone(),
        "--tenant".into(),
        phase.key.tenant.clone(),
        "--seed".into(),
        phase.seed.to_string(),
        "--start".into(),
        start,
        "--span".into(),
        format!("{}s", phase.span_secs),
        "--rate".into(),
        rate.to_string(),
        "--duration".into(),
        format!("{duration}s"),
        "--truth".into(),
        truth.to_string_lossy().into_owned(),
    ];
    if let Some(calls) = calls {
        args.extend(["--calls".to_string(), calls.to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = ctx.tally(&refs);
    command
        .stdout(Stdio::null())
        .stderr(ctx.log(&format!("{}gen", dep.prefix)));
    Proc::spawn("tally gen", &mut command)
}

/// Markers and storms while they run.
struct Running {
    stop: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<()>>,
    /// Marker event id → when its POST was sent.
    markers: Arc<Mutex<HashMap<String, Instant>>>,
    /// Storm session → when its POST was sent.
    storms: Arc<Mutex<HashMap<String, Instant>>>,
    /// Marker event id → when a query first returned it.
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    /// Storm session → when its firing alert was read.
    alerted: Arc<Mutex<HashMap<String, Instant>>>,
    poller: tokio::task::JoinHandle<()>,
    poll_stop: Arc<AtomicBool>,
    alert_reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(ctx: &Ctx, dep: &Deployment, label: &str, probes: &Probes) -> Running {
        let tag = slug(label);
        let stop = Arc::new(AtomicBool::new(false));
        let poll_stop = Arc::new(AtomicBool::new(false));
        let markers: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let storms: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let alerted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let team = format!("mark-{tag}");
        let mut senders = Vec::new();

        // Markers.
        {
            let (stop, markers) = (stop.clone(), markers.clone());
            let (http, url, key) = (ctx.http.clone(), dep.url.clone(), probes.key.key.clone());
            let (team, dated, tag) = (team.clone(), probes.dated_ms, tag.clone());
            senders.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(MARKER_EVERY);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let id = format!("m-{tag}-{n}");
                    let body = serde_json::json!({
                        "event_id": id, "occurred_at": dated + n as i64, "team": team,
                        "provider": "openai", "model": "gpt-4o-mini",
                        "input_tokens": 1200, "output_tokens": 300,
                    });
                    let sent = Instant::now();
                    if send(&http, &url, &key, format!("{body}\n")).await {
                        markers.lock().unwrap().insert(id, sent);
                    }
                    n += 1;
                }
            }));
        }
        // Retry storms.
        {
            let (stop, storms) = (stop.clone(), storms.clone());
            let (http, url, key) = (ctx.http.clone(), dep.url.clone(), probes.key.key.clone());
            let (dated, tag) = (probes.dated_ms, tag.clone());
            senders.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(STORM_EVERY);
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let session = format!("storm-{tag}-{n}");
                    let body: String = (0..6)
                        .map(|k| {
                            serde_json::json!({
                                "event_id": format!("{session}-{k}"),
                                "occurred_at": dated + n * 10_000 + k * 1_000,
                                "team": format!("storm-{tag}"), "session_id": session,
                                "agent": "bench-agent", "provider": "openai", "model": "gpt-4o-mini",
                                "input_tokens": 3000, "output_tokens": 0,
                                "prompt": format!("the same prompt, again ({n})"),
                                "error_type": "rate_limit_error",
                            })
                            .to_string()
                                + "\n"
                        })
                        .collect();
                    let sent = Instant::now();
                    if send(&http, &url, &key, body).await {
                        storms.lock().unwrap().insert(session, sent);
                    }
                    n += 1;
                }
            }));
        }
        // Which markers are visible.
        let poller = {
            let (seen, stop) = (seen.clone(), poll_stop.clone());
            let query = format!(
                "SELECT event_id FROM `{}`.llm_calls WHERE tenant = '{}' AND team = '{team}'",
                dep.database, probes.key.tenant
            );
            let server = ctx.server.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(MARKER_EVERY);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let Ok(ids) = server.query(&query).fetch_all::<String>().await else {
                        continue;
                    };
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap();
                    for id in ids {
                        seen.entry(id).or_insert(now);
                    }
                }
            })
        };
        let alert_reader = Some(read_alerts(
            ctx,
            &format!("{}tally.alerts.v1", dep.prefix),
            format!("storm-{tag}-"),
            alerted.clone(),
            poll_stop.clone(),
        ));
        Running {
            stop,
            senders,
            markers,
            storms,
            seen,
            alerted,
            poller,
            poll_stop,
            alert_reader,
        }
    }

    async fn stop_sending(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for sender in self.senders.drain(..) {
            let _ = sender.await;
        }
    }

    /// Waits (up to 30 s) for every marker and storm to show, then fills in the outcome.
    async fn finish(mut self, outcome: &mut Outcome) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let markers_done =
                self.seen.lock().unwrap().len() >= self.markers.lock().unwrap().len();
            let storms_done =
                self.alerted.lock().unwrap().len() >= self.storms.lock().unwrap().len();
            if (markers_done && storms_done) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.poll_stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.poller).await;
        if let Some(reader) = self.alert_reader.take() {
            let _ = reader.join();
        }
        let (markers, seen) = (self.markers.lock().unwrap(), self.seen.lock().unwrap());
        let rows: Vec<Duration> = markers
            .iter()
            .filter_map(|(id, sent)| Some(seen.get(id)?.saturating_duration_since(*sent)))
            .collect();
        let (storms, alerted) = (self.storms.lock().unwrap(), self.alerted.lock().unwrap());
        let alerts: Vec<Duration> = storms
            .iter()
            .filter_map(|(s, sent)| Some(alerted.get(s)?.saturating_duration_since(*sent)))
            .collect();
        outcome.row_latency = Latency::of(&rows);
        outcome.markers = (rows.len(), markers.len());
        outcome.alert_latency = Latency::of(&alerts);
        outcome.storms = (alerts.len(), storms.len());
        outcome.harness_calls = (markers.len() + 6 * storms.len()) as u64;
    }
}

async fn send(http: &reqwest::Client, url: &str, key: &str, body: String) -> bool {
    http.post(format!("{url}/v1/llm-calls"))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status() == 202)
}

/// Reads `topic` (every partition, from the start, `read_committed`) until `stop`, noting
/// when the first firing loop-signal alert of each session starting with `prefix` arrived.
fn read_alerts(
    ctx: &Ctx,
    topic: &str,
    prefix: String,
    alerted: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &ctx.brokers)
        .set("group.id", format!("{topic}-bench-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("a Kafka consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("the alerts topic's metadata");
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&assignment).expect("assigned");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let now = Instant::now();
            let Ok(alert) = tally_contract::decode::<Alert>(message.payload().unwrap_or_default())
            else {
                continue;
            };
            if alert.kind != AlertKind::LoopSignal || alert.state != AlertState::Firing {
                continue;
            }
            if let Some(session) = alert.labels.get("session_id") {
                if session.starts_with(&prefix) {
                    alerted
                        .lock()
                        .unwrap()
                        .entry(session.clone())
                        .or_insert(now);
                }
            }
        }
    })
}
