//! The README's first look, as a newcomer runs it: the commands of its "Run it" section, read
//! from the README itself and run as written (`cargo run --release -p tally --` is the `tally`
//! binary under test), in a fresh directory, at several times of day. The clock is set with
//! libfaketime (Debian's `faketime`, which scripts/test.sh installs): every process of a run
//! sees the same shifted wall clock, so `tally gen`'s default start (`--span` before now) and
//! ingest's clock-skew check meet at that hour. Each run checks that `tally gen` succeeds and
//! that `tally query` gives its ground truth, team by team, to the nano-dollar.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tally_tests::{wait_listening, KillOnDrop};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const CARGO_RUN: &str = "cargo run --release -p tally --";

/// The `tally` commands of the README's "Run it" section before its Kafka part: each
/// `cargo run --release -p tally -- ARGS` line (with `\` continuations), as its arguments.
fn first_look_commands() -> Vec<Vec<String>> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme
        .split("## Run it")
        .nth(1)
        .and_then(|rest| rest.split("Against Kafka and ClickHouse").next())
        .expect("the README has a Run it section with a first look");
    let joined = section.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix(CARGO_RUN))
        .map(|args| {
            let mut words = shlex::split(args).expect("shell words");
            if let Some(comment) = words.iter().position(|w| w.starts_with('#')) {
                words.truncate(comment);
            }
            words
        })
        .collect()
}

/// A `tally` command in `dir` whose wall clock reads `offset_secs` from the real one.
fn tally(dir: &Path, offset_secs: i64, args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("TALLY_KAFKA_BROKERS")
        .env_remove("TALLY_CLICKHOUSE_URL")
        .env("TALLY_LOG", "warn")
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", format!("{offset_secs:+}"))
        // Timers and rate limits keep the real monotonic clock.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    command
}

/// Seconds to add to the real clock so that it reads `hh:mm` UTC today.
fn offset_to(hour: i64, minute: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now.div_euclid(86_400) * 86_400 + hour * 3_600 + minute * 60 - now
}

fn run_first_look(hour: i64, minute: i64, commands: &[Vec<String>]) {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let offset = offset_to(hour, minute);
    let at = format!("{hour:02}:{minute:02} UTC");
    let (up, rest) = commands.split_first().unwrap();
    assert_eq!(up, &["up"], "the first look starts tally up");
    let mut up = KillOnDrop(
        tally(dir.path(), offset, up)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&mut up, 8080, Duration::from_secs(30));

    let gen = &rest[0];
    assert_eq!(gen[0], "gen");
    let out = tally(dir.path(), offset, gen)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "at {at}: tally gen {gen:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The store flushes every second: wait until it holds every call, then compare team by
    // team with the ground truth (the README's query, as JSON to read the numbers).
    let by_team = "SELECT team, count(*) AS calls, sum(coalesce(cost_total_nanos, 0)) AS nanos \
                   FROM llm_calls GROUP BY team ORDER BY team";
    let json = |sql: &str| -> Vec<Value> {
        let args = ["query", "--format", "json", sql].map(String::from);
        let out = tally(dir.path(), offset, &args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let teams = loop {
        let teams = json(by_team);
        let calls: u64 = teams.iter().map(|t| t["calls"].as_u64().unwrap()).sum();
        if truth["calls"] == calls {
            break teams;
        }
        assert!(
            Instant::now() < deadline,
            "at {at}: {calls} of {} calls",
            truth["calls"]
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let expected: Vec<Value> = truth["by_team"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(team, t)| serde_json::json!({"team": team, "calls": t["calls"], "nanos": t["cost_nanos"]}))
        .collect();
    assert_eq!(teams, expected, "at {at}");

    // Every other command of the first look, as written, succeeds.
    for args in &rest[1..] {
        let out = tally(dir.path(), offset, args).output().unwrap();
        assert!(
            out.status.success(),
            "at {at}: tally {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args[0] == "query" && args[1].contains("sum(cost_usd)") {
            // The README's spend query: every team with its exact dollars.
            let text = String::from_utf8_lossy(&out.stdout);
            for team in &expected {
                let nanos = team["nanos"].as_i64().unwrap();
                let usd = format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
                let name = team["team"].as_str().unwrap();
                assert!(
                    text.lines().any(|l| l.contains(name) && l.contains(&usd)),
                    "at {at}: {name} ${usd} not in\n{text}"
                );
            }
        }
    }
    let html = std::fs::read_to_string(dir.path().join("emissions.html")).unwrap();
    assert!(
        html.contains("<svg"),
        "at {at}: the emissions page has its plots"
    );
}

#[test]
fn the_readme_first_look_runs_as_written_at_any_time_of_day() {
    let commands = first_look_commands();
    let names: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(names, ["up", "gen", "query", "query", "report"]);
    // Just after midnight, in business hours, and just before midnight (UTC).
    for (hour, minute) in [(0, 20), (9, 5), (23, 50)] {
        run_first_look(hour, minute, &commands);
    }
}
