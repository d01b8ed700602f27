//! The results of an invocation: every run's figures as JSON, and a markdown table of each
//! figure's min / median / max over the runs, headed by the date, the machine, the git commit
//! and the exact command, for BENCHMARKS.md.
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::pipeline::Ctx;
use crate::procs::Machine;
use crate::run::{RunResult, Settings};
use crate::stats::Spread;

/// `20261203T081500Z`: a name for files and deployments.
pub fn now_stamp() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// One line of the summary: a figure over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub values: Vec<Option<f64>>,
    pub spread: Option<Spread>,
}

/// Everything an invocation reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub commit: String,
    pub command: String,
    pub kafka: String,
    pub clickhouse: String,
    pub settings: Settings,
    pub minutes: f64,
    pub summary: Vec<Figure>,
    pub runs: Vec<RunResult>,
}

fn commit(ctx: &Ctx) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&ctx.repo)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    match dirty {
        true => format!("{head} (with uncommitted changes)"),
        false => head,
    }
}

impl Report {
    pub fn new(
        ctx: &Ctx,
        settings: &Settings,
        command: &str,
        runs: Vec<RunResult>,
        elapsed: Duration,
    ) -> Report {
        let now = OffsetDateTime::now_utc();
        Report {
            date: format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute()
            ),
            machine: Machine::read(),
            commit: commit(ctx),
            command: command.to_string(),
            kafka: ctx.brokers.clone(),
            clickhouse: ctx.clickhouse_url.clone(),
            settings: settings.clone(),
            minutes: elapsed.as_secs_f64() / 60.0,
            summary: summary(&runs),
            runs,
        }
    }

    /// The date as a file name's part.
    pub fn stamp(&self) -> String {
        self.date.trim_end_matches(" UTC").replace([' ', ':'], "-")
    }

    /// The markdown table, with the run's conditions above it.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "## tally end to end ({})\n", self.date);
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(out, "- commit: {}", self.commit);
        let _ = writeln!(
            out,
            "- machine: {} cores ({}), {:.1} GiB, Linux {}; Kafka at {}, ClickHouse at {} on the same cores",
            m.cores, m.cpu, m.memory_gib, m.kernel, self.kafka, self.clickhouse
        );
        let _ = writeln!(
            out,
            "- {} run(s) in {:.1} minutes; min / median / max over the runs\n",
            self.runs.len(),
            self.minutes
        );
        let _ = writeln!(out, "| figure | unit | min | median | max |");
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: |");
        for f in &self.summary {
            let measured = f.values.iter().flatten().count();
            let note = match measured < f.values.len() {
                true => format!(" ({measured} of {} runs)", f.values.len()),
                false => String::new(),
            };
            let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| number(v, &f.unit));
            let s = f.spread;
            let _ = writeln!(
                out,
                "| {}{note} | {} | {} | {} | {} |",
                f.name,
                f.unit,
                cell(s.map(|s| s.min)),
                cell(s.map(|s| s.median)),
                cell(s.map(|s| s.max))
            );
        }
        let _ = writeln!(out, "\nHeld rates (C: the probe's capacity estimate):\n");
        let _ = writeln!(
            out,
            "| run | held | target calls/s | offered | visible/s | lag growth/s | drained after | verdict | CPU-s per M calls (total) |"
        );
        let _ = writeln!(
            out,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
        );
        for r in &self.runs {
            for h in &r.holds {
                let _ = writeln!(
                    out,
                    "| {} | {:.3} C | {} | {} | {} | {:+.0} | {} | {} | {} |",
                    r.run,
                    h.factor,
                    grouped(h.target_per_sec as f64),
                    grouped(h.hold.offered),
                    grouped(h.hold.visible),
                    h.hold.lag_growth,
                    h.hold
                        .drain_secs
                        .map_or("not drained".into(), |d| format!("{d:.1} s")),
                    h.hold.reason.as_deref().unwrap_or("sustained"),
                    h.cpu_per_million
                        .get("total")
                        .map_or("–".into(), |c| format!("{c:.1}"))
                );
            }
        }
        let _ = writeln!(out, "\nWhere each run's time went (wall-clock seconds):\n");
        for r in &self.runs {
            let steps: Vec<String> = r
                .steps_secs
                .iter()
                .map(|(step, secs)| format!("{step} {secs:.0}"))
                .collect();
            let _ = writeln!(
                out,
                "- run {}: {:.0} s: {}",
                r.run,
                r.secs,
                steps.join(", ")
            );
        }
        out
    }
}

fn grouped(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match v < 0.0 {
        true => format!("-{out}"),
        false => out,
    }
}

fn number(v: f64, unit: &str) -> String {
    match unit {
        "ratio" => format!("{v:.2}"),
        "ms" => grouped(v),
        "CPU-s per M" => format!("{v:.1}"),
        _ => grouped(v),
    }
}

fn summary(runs: &[RunResult]) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut add = |name: &str, unit: &str, get: &dyn Fn(&RunResult) -> Option<f64>| {
        let values: Vec<Option<f64>> = runs.iter().map(get).collect();
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        figures.push(Figure {
            name: name.to_string(),
            unit: unit.to_string(),
            spread: Spread::of(&present),
            values,
        });
    };
    add(
        "Kafka ceiling: ingest's producer → broker → consumer",
        "records/s",
        &|r| Some(r.kafka.records_per_sec),
    );
    add(
        "ClickHouse ceiling: `clickhouse` crate insert of the `llm_calls` rows",
        "rows/s",
        &|r| Some(r.clickhouse.rows_per_sec),
    );
    add(
        "probe: gen as fast as it can, accepted by ingest",
        "calls/s",
        &|r| Some(r.probe.accepted_per_sec),
    );
    add(
        "probe: rows visible while gen sends flat out",
        "rows/s",
        &|r| Some(r.probe.visible_loaded_per_sec),
    );
    add(
        "probe: capacity estimate C (rows visible / load start to drained)",
        "rows/s",
        &|r| Some(r.probe.capacity_per_sec),
    );
    add(
        "**tally end to end: highest sustained rate**",
        "calls/s",
        &|r| r.sustained_per_sec,
    );
    add(
        "**sustained / min(Kafka, ClickHouse ceiling)** (goal ≥ 0.7)",
        "ratio",
        &|r| r.ratio,
    );
    for (process, label) in [
        ("ingest", "tally ingest"),
        ("process", "tally process"),
        ("sink", "tally sink"),
        ("kafka", "Kafka broker"),
        ("clickhouse", "ClickHouse server"),
        ("gen", "tally gen (sending)"),
        ("total", "all of them"),
    ] {
        add(
            &format!("CPU at the sustained rate: {label}"),
            "CPU-s per M",
            &|r| r.sustained_cpu_per_million.get(process).copied(),
        );
    }
    for (process, label) in [
        ("ingest", "tally ingest"),
        ("process", "tally process"),
        ("sink", "tally sink"),
        ("kafka", "Kafka broker"),
        ("clickhouse", "ClickHouse server"),
    ] {
        add(
            &format!("peak RSS at the sustained rate: {label}"),
            "MiB",
            &|r| r.sustained_rss_mib.get(process).copied(),
        );
    }
    for (i, share) in ["50 %", "90 %"].iter().enumerate() {
        add(
            &format!("ingest → row visible at {share} of sustained: p50"),
            "ms",
            &|r| r.latency.get(i)?.row.map(|l| l.p50_ms),
        );
        add(
            &format!("ingest → row visible at {share} of sustained: p99"),
            "ms",
            &|r| r.latency.get(i)?.row.map(|l| l.p99_ms),
        );
        add(
            &format!("retry storm → alert readable at {share}: p50"),
            "ms",
            &|r| r.latency.get(i)?.alert.map(|l| l.p50_ms),
        );
        add(
            &format!("retry storm → alert readable at {share}: p99"),
            "ms",
            &|r| r.latency.get(i)?.alert.map(|l| l.p99_ms),
        );
    }
    add(
        "same records into ClickHouse: `tally sink`",
        "events/s",
        &|r| Some(r.sink.per_sec),
    );
    add(
        "**`tally sink` / ClickHouse ceiling** (goal ≥ 0.8)",
        "ratio",
        &|r| Some(r.sink.per_sec / r.clickhouse.rows_per_sec),
    );
    add("same records: `tally sink`", "CPU-s per M", &|r| {
        Some(r.sink.cpu_per_million)
    });
    add(
        "same records: ClickHouse server under `tally sink`",
        "CPU-s per M",
        &|r| r.sink.server_cpu_per_million,
    );
    add(
        "same records: Python peer (confluent-kafka, fastavro, clickhouse-connect)",
        "events/s",
        &|r| Some(r.peer.per_sec),
    );
    add("same records: Python peer", "CPU-s per M", &|r| {
        Some(r.peer.cpu_per_million)
    });
    add(
        "same records: ClickHouse server under the Python peer",
        "CPU-s per M",
        &|r| r.peer.server_cpu_per_million,
    );
    add("`tally up`: calls accepted", "calls/s", &|r| {
        Some(r.up.accepted_per_sec)
    });
    add("`tally up`: calls until queryable", "calls/s", &|r| {
        Some(r.up.queryable_per_sec)
    });
    add("`tally up`", "CPU-s per M", &|r| Some(r.up.cpu_per_million));
    figures
}
