//! The end-to-end harness (the "Performance" issue): tally against the real Kafka and
//! ClickHouse, loaded by `tally gen`, beside the ceilings of those two servers measured in
//! the same run on the same records. Each run:
//!
//! 1. deploys tally as its services (`tally ingest`, `tally process`, `tally sink`, each its
//!    own process, after `tally topics create` and `tally migrate`; a topic prefix and a
//!    database of its own), then
//!    - a **saturation probe**: gen as fast as it can; the rows made visible from the load's
//!      start until the backlog drained (or while loaded, if more) estimate the capacity C;
//!    - **held rates**, factors of C (1.0 first, then ×1.25 while they hold, ÷1.25 while they
//!      do not, then bisection between the highest that held and the lowest that did not): a
//!      rate is sustained when the lag (calls accepted by ingest minus rows visible in
//!      `llm_calls`) does not grow by more than 10 % of the rate per second over the last two
//!      thirds of the hold (fitted slope; the lag is saw-toothed) and the backlog drains
//!      within 15 s of the load's end; the highest sustained rate is tally's end-to-end rate,
//!      with the CPU seconds per million calls of every process (the services, the Kafka
//!      broker, the ClickHouse server, gen);
//!    - **latency** at 50 % and 90 % of that rate: marked calls from HTTP to row visible, and
//!      injected retry storms from HTTP to their alert readable on `tally.alerts.v1`;
//! 2. the **ceilings**: the run's `LlmCall` bytes through the broker with ingest's producer
//!    and a consumer; the run's `llm_calls` rows inserted with the `clickhouse` crate;
//! 3. `tally sink` and a hand-written Python sink (scripts/bench/peer_sink.py) on the same
//!    enriched calls of the run, each warmed up by one record first;
//! 4. `tally up` on its embedded store.
//!
//! It prints a markdown table of every figure (min / median / max over the runs) and writes
//! it, with the JSON of every run, to `<target>/e2e/`.
//!
//! Needs Kafka and ClickHouse (`scripts/services.sh start`, or `TALLY_KAFKA_BROKERS` and
//! `TALLY_CLICKHOUSE_URL`) and python3 (the peer's venv is made by scripts/peer-venv.sh).
//! Run: `cargo bench -p tally --bench e2e` (3 runs, under 15 min), `-- --quick` (~2.5 min),
//! `-- --runs N`.
#[path = "e2e/ceilings.rs"]
mod ceilings;
#[path = "e2e/load.rs"]
mod load;
#[path = "e2e/peer.rs"]
mod peer;
#[path = "e2e/pipeline.rs"]
mod pipeline;
#[path = "e2e/procs.rs"]
mod procs;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/run.rs"]
mod run;
#[path = "e2e/stats.rs"]
mod stats;
#[path = "e2e/up.rs"]
mod up;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use crate::pipeline::Ctx;
use crate::run::Settings;

/// Options (after `cargo bench -p tally --bench e2e --`).
#[derive(Debug, Parser)]
#[command(about = "tally's end-to-end benchmark against the real Kafka and ClickHouse")]
struct Args {
    /// Repeat every measurement this many times; the table gives min / median / max.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A smoke run of about two minutes: one run, short phases, small record counts.
    #[arg(long)]
    quick: bool,
    /// Also write the JSON results here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    let runs = if args.quick && !std::env::args().any(|a| a.starts_with("--runs")) {
        1
    } else {
        args.runs.max(1)
    };
    let settings = if args.quick {
        Settings::quick()
    } else {
        Settings::default()
    };
    let command = command_line();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let ctx = context();
        let bar = ProgressBar::new((runs * run::STEPS) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {wide_msg}",
            )
            .expect("a template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        say(
            &bar,
            &format!(
                "e2e: {runs} run(s), {} settings; logs and results in {}",
                if args.quick { "quick" } else { "default" },
                ctx.dir.display()
            ),
        );
        let mut results = Vec::new();
        for n in 1..=runs {
            results.push(run::run(&ctx, &settings, n, &bar).await);
        }
        bar.finish_and_clear();
        let report = report::Report::new(&ctx, &settings, &command, results, started.elapsed());
        let markdown = report.markdown();
        println!("{markdown}");
        let json = serde_json::to_string_pretty(&report).expect("JSON");
        let stem = ctx
            .dir
            .parent()
            .expect("the e2e folder")
            .join(format!("results-{}", report.stamp()));
        std::fs::write(stem.with_extension("json"), &json).expect("the JSON results");
        std::fs::write(stem.with_extension("md"), &markdown).expect("the markdown results");
        if let Some(out) = &args.out {
            std::fs::write(out, &json).expect("--out");
        }
        eprintln!(
            "results: {} (and .md); {} minutes",
            stem.with_extension("json").display(),
            (started.elapsed().as_secs_f64() / 60.0 * 10.0).round() / 10.0
        );
    });
}

/// Prints a line above the progress bar (also when stderr is not a terminal).
pub fn say(bar: &ProgressBar, line: &str) {
    bar.suspend(|| eprintln!("{line}"));
}

/// What the user typed, as far as the harness can tell.
fn command_line() -> String {
    let extra: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match extra.is_empty() {
        true => "cargo bench -p tally --bench e2e".to_string(),
        false => format!("cargo bench -p tally --bench e2e -- {}", extra.join(" ")),
    }
}

fn context() -> Ctx {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tally"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let brokers = tally_tests::kafka_brokers();
    let clickhouse_url = tally_tests::clickhouse_url();
    // The bench profile's binaries are in <target>/release.
    let target = bin
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("e2e").join(report::now_stamp());
    std::fs::create_dir_all(&dir).expect("the run's folder");
    let mut servers = Vec::new();
    for (name, address) in [("kafka", &brokers), ("clickhouse", &clickhouse_url)] {
        match procs::port_of(address).and_then(procs::listening_pid) {
            Some(pid) => servers.push((name.to_string(), pid)),
            None => eprintln!(
                "e2e: no process of this machine listens for {name} at {address}; its CPU is not counted"
            ),
        }
    }
    tally_tests::require_kafka();
    Ctx {
        bin,
        repo,
        brokers,
        clickhouse_url: clickhouse_url.clone(),
        dir,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client"),
        server: clickhouse::Client::default().with_url(&clickhouse_url),
        servers,
        python: run::peer_python(),
    }
}
