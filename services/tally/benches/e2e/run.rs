//! One run of the harness, in order: tally deployed (probe, held rates, latency), the
//! ceilings, `tally sink` beside the hand-written peer, `tally up`; and its sizes, default
//! and `--quick`.
//!
//! Event time: every gen phase sends its own slice of generated traffic (`--start`,
//! `--span`): slices of `SLICE` hours, `GAP` hours apart, in order, from three days before
//! the run — so the partitions' watermarks only move forward from phase to phase and no call
//! of gen's is late (a session that would run past its slice's end is moved earlier by gen,
//! into the gap, never before the previous slice's end). Each phase has a tenant of its own
//! (gen's event ids repeat across seeds; the tenant keeps them apart). The harness's markers
//! and storms are dated an hour before the first slice.
use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::ceilings::{self, ClickHouseCeiling, KafkaCeiling};
use crate::load::{self, Load, Outcome, Phase, Probes};
use crate::peer::{self, SinkRun};
use crate::pipeline::{Ctx, Deployment};
use crate::say;
use crate::stats::{self, Criteria, Hold, Latency, Search};
use crate::up::{self, UpRun};

const HOUR_US: i64 = 3_600_000_000;
/// Event time each gen phase spans, and the gap after it, in hours.
const SLICE: i64 = 2;
const GAP: i64 = 4;
/// Held rates, as factors of the probe's capacity estimate C: the first at C, then ×/÷ STEP
/// until the verdict turns, then bisection down to RESOLUTION (see `stats::Search`).
pub const STEP: f64 = 1.25;
pub const RESOLUTION: f64 = 0.08;
/// API keys of a deployment: 0 for the markers and storms, then one per gen phase.
const KEYS: usize = 12;
/// Progress steps of a run.
pub const STEPS: usize = 8;

/// Sizes of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The probe sends for this long (gen is stopped then), with up to this many calls.
    pub probe_secs: f64,
    pub probe_calls: usize,
    pub hold_secs: u64,
    pub max_holds: usize,
    pub latency_secs: u64,
    pub kafka_records: usize,
    pub clickhouse_rows: usize,
    pub backlog: usize,
    pub up_calls: usize,
    pub criteria: Criteria,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            probe_secs: 10.0,
            probe_calls: 400_000,
            hold_secs: 20,
            max_holds: 4,
            latency_secs: 12,
            kafka_records: 300_000,
            clickhouse_rows: 200_000,
            backlog: 200_000,
            up_calls: 100_000,
            criteria: Criteria::default(),
        }
    }
}

impl Settings {
    pub fn quick() -> Settings {
        Settings {
            probe_secs: 8.0,
            probe_calls: 300_000,
            hold_secs: 15,
            max_holds: 3,
            latency_secs: 8,
            kafka_records: 100_000,
            clickhouse_rows: 50_000,
            backlog: 50_000,
            up_calls: 30_000,
            criteria: Criteria::default(),
        }
    }
}

/// The probe's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Calls/s ingest accepted while gen sent as fast as it could.
    pub accepted_per_sec: f64,
    /// Rows/s that became visible over the last 70 % of the load.
    pub visible_loaded_per_sec: f64,
    /// Rows visible / seconds from the load's start until the backlog had drained.
    pub visible_overall_per_sec: f64,
    /// The capacity estimate C the held rates are factors of: the larger of the two.
    pub capacity_per_sec: f64,
    pub load_secs: f64,
    pub drain_secs: Option<f64>,
}

/// A held rate and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct HeldRate {
    pub factor: f64,
    pub target_per_sec: u64,
    #[serde(flatten)]
    pub hold: Hold,
    pub calls: u64,
    /// CPU seconds per million calls, by process.
    pub cpu_per_million: BTreeMap<String, f64>,
    /// Peak resident memory per process during the hold, in MiB.
    pub rss_mib: BTreeMap<String, f64>,
}

/// Latency at a share of the sustained rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    pub share: f64,
    pub target_per_sec: u64,
    pub offered_per_sec: f64,
    pub row: Option<Latency>,
    pub markers_seen: usize,
    pub markers_sent: usize,
    pub alert: Option<Latency>,
    pub storms_alerted: usize,
    pub storms_sent: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub run: usize,
    pub deploy_secs: f64,
    pub probe: Probe,
    pub holds: Vec<HeldRate>,
    /// The highest sustained rate (calls/s ingest accepted during that hold), if any held.
    pub sustained_per_sec: Option<f64>,
    /// CPU seconds per million calls at that rate, by process, and their total.
    pub sustained_cpu_per_million: BTreeMap<String, f64>,
    /// Peak resident memory per process during the sustained hold, in MiB.
    pub sustained_rss_mib: BTreeMap<String, f64>,
    pub latency: Vec<LatencyRun>,
    pub kafka: KafkaCeiling,
    pub clickhouse: ClickHouseCeiling,
    /// sustained / min(Kafka, ClickHouse).
    pub ratio: Option<f64>,
    pub sink: SinkRun,
    pub peer: SinkRun,
    pub up: UpRun,
    pub secs: f64,
    /// Wall-clock seconds of each step of the run, in order (where a run's time goes).
    pub steps_secs: Vec<(String, f64)>,
}

/// Wall-clock time of each step of a run.
#[derive(Default)]
struct Steps {
    last: Option<std::time::Instant>,
    secs: Vec<(String, f64)>,
}

impl Steps {
    /// Ends the step `name`, begun at the previous mark (or when the run began).
    fn mark(&mut self, name: &str, began: std::time::Instant) {
        let now = std::time::Instant::now();
        let since = now.duration_since(self.last.unwrap_or(began));
        self.secs.push((name.to_string(), since.as_secs_f64()));
        self.last = Some(now);
    }
}

fn per_million(outcome: &Outcome) -> BTreeMap<String, f64> {
    let calls = outcome.accepted.max(1) as f64;
    let mut cpu: BTreeMap<String, f64> = outcome
        .cpu
        .iter()
        .map(|(name, secs)| (name.clone(), secs / calls * 1e6))
        .collect();
    let total = cpu.values().sum();
    cpu.insert("total".into(), total);
    cpu
}

/// One run.
pub async fn run(ctx: &Ctx, settings: &Settings, n: usize, bar: &ProgressBar) -> RunResult {
    let started = std::time::Instant::now();
    let mut steps = Steps::default();
    let name = format!("e2e-{}-r{n}", crate::report::now_stamp().to_lowercase());
    let now = tally_contract::clock::now_micros();
    let base = (now / HOUR_US - 72) * HOUR_US;
    let dated_ms = (base - HOUR_US) / 1_000;
    let mut slices = (0..).map(|i: i64| base + i * (SLICE + GAP) * HOUR_US);
    let mut next_key = 1;

    bar.set_message(format!("run {n}: deploying tally"));
    let mut dep = Deployment::start(ctx, &name, KEYS, dated_ms).await;
    let deploy_secs = dep.ready_after.as_secs_f64();
    say(
        bar,
        &format!("run {n}: tally deployed ({name}) in {deploy_secs:.1} s"),
    );
    bar.inc(1);
    steps.mark("deploy", started);

    let keys = dep.keys.clone();
    let mut phase = |label: String, load: Load, probes: bool, drain: u64| {
        let key = keys[next_key].clone();
        next_key += 1;
        Phase {
            label,
            seed: (n * 100 + next_key) as u64,
            start_us: slices.next().expect("slices"),
            span_secs: (SLICE * 3_600) as u64,
            load,
            probes: probes.then(|| Probes {
                key: keys[0].clone(),
                dated_ms,
            }),
            drain_timeout: Duration::from_secs(drain),
            key,
        }
    };

    // The saturation probe.
    let spec = phase(
        "probe".into(),
        Load::Saturate {
            calls: settings.probe_calls,
            max_secs: settings.probe_secs,
        },
        false,
        120,
    );
    let outcome = load::run(ctx, &mut dep, &spec, bar).await;
    let (t0, t1) = outcome.load;
    // gen sending flat out takes most of the 2 cores, so the rows that become visible while
    // it sends understate what the pipeline does once it has the cores; the backlog then
    // drains much faster. C is the larger of the two: rows/s while loaded, and every call
    // from the load's start until the last is visible.
    let loaded = stats::visible_rate(&outcome.samples, t0 + 0.3 * (t1 - t0), t1).unwrap_or(0.0);
    let overall = outcome
        .drained_at
        .map_or(0.0, |t| outcome.visible as f64 / (t - t0).max(1e-3));
    let capacity = loaded.max(overall);
    let probe = Probe {
        accepted_per_sec: outcome.accepted as f64 / (t1 - t0).max(1e-3),
        visible_loaded_per_sec: loaded,
        visible_overall_per_sec: overall,
        capacity_per_sec: capacity,
        load_secs: t1 - t0,
        drain_secs: outcome.drained_at.map(|t| t - t1),
    };
    say(
        bar,
        &format!(
            "run {n}: probe: gen and ingest {:.0} calls/s for {:.0} s; {loaded:.0} rows/s visible under load, drained {:.1} s after it, {overall:.0} rows/s overall: C = {capacity:.0}",
            probe.accepted_per_sec,
            probe.load_secs,
            probe.drain_secs.unwrap_or(f64::NAN)
        ),
    );
    bar.inc(1);
    steps.mark("probe", started);

    // Held rates.
    let mut search = Search::new(1.0, STEP, RESOLUTION, settings.max_holds);
    let mut holds: Vec<(HeldRate, Outcome)> = Vec::new();
    while let Some(factor) = search.next_factor() {
        let target = ((factor * capacity).round() as u64).max(100);
        let spec = phase(
            format!("hold {factor:.3}C"),
            Load::Rate {
                rate: target,
                secs: settings.hold_secs,
            },
            false,
            settings.criteria.max_drain.as_secs() + 1,
        );
        let outcome = load::run(ctx, &mut dep, &spec, bar).await;
        let hold = stats::judge(
            &outcome.samples,
            outcome.load,
            outcome.drained_at,
            &settings.criteria,
        );
        say(
            bar,
            &format!(
                "run {n}: hold {factor:.3}C = {target} calls/s: {:.0} offered, {:.0} visible/s, lag {:+.0}/s, drained in {:.1} s: {}",
                hold.offered,
                hold.visible,
                hold.lag_growth,
                hold.drain_secs.unwrap_or(f64::NAN),
                hold.reason.as_deref().unwrap_or("sustained")
            ),
        );
        search.record(hold.sustained);
        holds.push((
            HeldRate {
                factor,
                target_per_sec: target,
                calls: outcome.accepted,
                cpu_per_million: per_million(&outcome),
                rss_mib: outcome
                    .rss
                    .iter()
                    .map(|(name, bytes)| (name.clone(), *bytes as f64 / 1_048_576.0))
                    .collect(),
                hold,
            },
            outcome,
        ));
    }
    bar.inc(1);
    steps.mark("held rates", started);
    let best = holds
        .iter()
        .filter(|(h, _)| h.hold.sustained)
        .max_by(|a, b| a.0.hold.offered.total_cmp(&b.0.hold.offered));
    let sustained = best.map(|(h, _)| h.hold.offered);
    let sustained_cpu = best
        .map(|(h, _)| h.cpu_per_million.clone())
        .unwrap_or_default();
    let sustained_rss = best.map(|(h, _)| h.rss_mib.clone()).unwrap_or_default();
    // Latency at shares of the sustained rate (of the lowest rate tried if none held).
    let reference = sustained.unwrap_or_else(|| {
        holds
            .iter()
            .map(|(h, _)| h.hold.offered)
            .fold(f64::INFINITY, f64::min)
    });
    let mut latency = Vec::new();
    for share in [0.5, 0.9] {
        let target = ((share * reference).round() as u64).max(100);
        let spec = phase(
            format!("latency {:.0}%", share * 100.0),
            Load::Rate {
                rate: target,
                secs: settings.latency_secs,
            },
            true,
            60,
        );
        let outcome = load::run(ctx, &mut dep, &spec, bar).await;
        let offered = outcome.accepted as f64 / (outcome.load.1 - outcome.load.0).max(1e-3);
        let l = LatencyRun {
            share,
            target_per_sec: target,
            offered_per_sec: offered,
            row: outcome.row_latency,
            markers_seen: outcome.markers.0,
            markers_sent: outcome.markers.1,
            alert: outcome.alert_latency,
            storms_alerted: outcome.storms.0,
            storms_sent: outcome.storms.1,
        };
        say(
            bar,
            &format!(
                "run {n}: latency at {:.0}% ({target} calls/s): row p50 {} p99 {} ms ({}/{} markers); alert p50 {} p99 {} ms ({}/{} storms)",
                share * 100.0,
                ms(l.row.map(|x| x.p50_ms)),
                ms(l.row.map(|x| x.p99_ms)),
                l.markers_seen,
                l.markers_sent,
                ms(l.alert.map(|x| x.p50_ms)),
                ms(l.alert.map(|x| x.p99_ms)),
                l.storms_alerted,
                l.storms_sent
            ),
        );
        latency.push(l);
    }
    bar.inc(1);
    steps.mark("latency", started);

    // The run's records, then the services go.
    bar.set_message(format!("run {n}: reading the run's records back"));
    let raw = ceilings::read_topic(
        ctx,
        &format!("{}tally.llm_calls.v1", dep.prefix),
        settings.kafka_records,
    );
    let enriched = ceilings::read_topic(
        ctx,
        &format!("{}tally.llm_calls_enriched.v1", dep.prefix),
        settings.clickhouse_rows.max(settings.backlog),
    );
    dep.remove(ctx).await;
    steps.mark("records read back, tally removed", started);

    bar.set_message(format!("run {n}: Kafka ceiling"));
    let kafka = ceilings::kafka(ctx, &raw, settings.kafka_records).await;
    drop(raw);
    say(
        bar,
        &format!(
            "run {n}: Kafka ceiling: {:.0} records/s ({} records of {:.0} bytes, produced in {:.2} s, read by {:.2} s)",
            kafka.records_per_sec, kafka.records, kafka.mean_bytes, kafka.produce_secs, kafka.secs
        ),
    );
    bar.inc(1);
    steps.mark("Kafka ceiling", started);
    bar.set_message(format!("run {n}: ClickHouse ceiling"));
    let rows = ceilings::rows(&enriched[..settings.clickhouse_rows.min(enriched.len())]);
    let clickhouse =
        ceilings::clickhouse(ctx, &rows, &format!("{}_ceiling", name.replace('-', "_"))).await;
    drop(rows);
    say(
        bar,
        &format!(
            "run {n}: ClickHouse ceiling: {:.0} rows/s ({} rows in {:.2} s)",
            clickhouse.rows_per_sec, clickhouse.rows, clickhouse.secs
        ),
    );
    bar.inc(1);
    steps.mark("ClickHouse ceiling", started);

    bar.set_message(format!(
        "run {n}: tally sink and the Python peer on the same records"
    ));
    let backlog = &enriched[..settings.backlog.min(enriched.len())];
    let db = |who: &str| format!("{}_{who}", name.replace('-', "_"));
    let sink = peer::tally_sink(ctx, &format!("{name}-sink."), &db("sink"), backlog).await;
    let peer = peer::python_peer(
        ctx,
        &ctx.python,
        &format!("{name}-peer."),
        &db("peer"),
        backlog,
    )
    .await;
    drop(enriched);
    say(
        bar,
        &format!(
            "run {n}: {} enriched calls into ClickHouse: tally sink {:.0}/s ({:.1} CPU-s/M, server {:.1}), Python peer {:.0}/s ({:.1} CPU-s/M, server {:.1})",
            sink.records,
            sink.per_sec,
            sink.cpu_per_million,
            sink.server_cpu_per_million.unwrap_or(f64::NAN),
            peer.per_sec,
            peer.cpu_per_million,
            peer.server_cpu_per_million.unwrap_or(f64::NAN)
        ),
    );
    bar.inc(1);
    steps.mark("tally sink and the peer", started);

    bar.set_message(format!("run {n}: tally up"));
    let up = up::run(ctx, &format!("{name}-up"), settings.up_calls, base, "1d").await;
    say(
        bar,
        &format!(
            "run {n}: tally up: {:.0} calls/s accepted, {:.0} calls/s until queryable",
            up.accepted_per_sec, up.queryable_per_sec
        ),
    );
    bar.inc(1);
    steps.mark("tally up", started);

    let ceiling = kafka.records_per_sec.min(clickhouse.rows_per_sec);
    RunResult {
        run: n,
        deploy_secs,
        probe,
        holds: holds.into_iter().map(|(h, _)| h).collect(),
        ratio: sustained.map(|s| s / ceiling),
        sustained_per_sec: sustained,
        sustained_cpu_per_million: sustained_cpu,
        sustained_rss_mib: sustained_rss,
        latency,
        kafka,
        clickhouse,
        sink,
        peer,
        up,
        secs: started.elapsed().as_secs_f64(),
        steps_secs: steps.secs,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// The Python of the peer's venv (`TALLY_PEER_PYTHON`, else made by scripts/peer-venv.sh).
pub fn peer_python() -> String {
    if let Ok(python) = std::env::var("TALLY_PEER_PYTHON") {
        return python;
    }
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peer-venv.sh");
    let out = std::process::Command::new(&script)
        .output()
        .expect("scripts/peer-venv.sh runs");
    assert!(
        out.status.success(),
        "scripts/peer-venv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
