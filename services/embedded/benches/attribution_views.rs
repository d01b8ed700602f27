//! The attribution views of `tally up`'s store (`sql/datafusion/`, DataFusion) at three sizes,
//! the prefix-sum views next to the naive ones they replace (`tests/naive/`).
//!
//! For each size (deploys × calls, and as many tickets as deploys) a Parquet store is written
//! as `tally up` writes it (`ParquetTable`: a file per flush of 100,000 rows and day, merged in
//! levels, with its manifest) and read as `tally query` reads it (`query::context`: a snapshot,
//! the de-duplicating views over the files). The history has the shape of the ClickHouse bench
//! (`services/sink/benches/attribution_views.rs`): one tenant, 12 teams, 30 days; calls in
//! time order on whole seconds, 30% tagged with one of their team's tickets, 1% unpriced;
//! deploys of three services per team in two environments, 5% failed, each listing 0 to 3 of
//! its team's tickets; tickets opened and closed within five days. The store is kept under
//! `TALLY_BENCH_DIR` (default: the system's temporary folder) and reused by the next run.
//!
//! Each view is read whole (`SELECT *`, collected) `TALLY_BENCH_RUNS` times (3). A naive view
//! is run once with a limit of `TALLY_BENCH_NAIVE_SECONDS` (300) and, if it answered within
//! 60 s, `TALLY_BENCH_RUNS` times.
//!
//! To try another formulation without a rebuild, `TALLY_BENCH_SQL=FILE` runs FILE's statements
//! (`;`-separated, say `CREATE OR REPLACE VIEW cost_per_deploy AS ...`) before timing; with
//! `TALLY_BENCH_EXPLAIN=1` each view's `EXPLAIN ANALYZE` is printed after its runs (where the
//! time goes, operator by operator).
//!
//! Run: `cargo bench -p tally-embedded --bench attribution_views`
//! (`TALLY_BENCH_SIZES=31x500000,3100x500000,10000x10000000` by default.)
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use tally_contract::records::{
    DeployEvent, DeployStatus, EnrichedLlmCall, TicketEvent, TicketKind, TicketStatus,
};
use tally_embedded::query;
use tally_embedded::store::{Destination, ParquetTable};
use tally_sink::rows::{DeployRow, LlmCallRow, TicketRow};
use tally_sink::tables::{Deploys, LlmCalls, Tickets};

const TEAMS: u64 = 12;
const SPAN_SECONDS: u64 = 30 * 86_400;
/// 2026-10-01 00:00 UTC, in epoch microseconds.
const START: i64 = 1_790_812_800_000_000;
const SECOND: i64 = 1_000_000;
/// Rows per flush, as `tally up`'s store writes them.
const FLUSH: usize = 100_000;

/// A hash of (n, salt): the bench's dice, the same on every run.
fn dice(n: u64, salt: u64) -> u64 {
    let mut z = n
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn write_calls(store: &Path, calls: u64, tickets_per_team: u64) {
    let template: EnrichedLlmCall =
        serde_json::from_str(include_str!("../../../tests/golden/EnrichedLlmCall.json")).unwrap();
    let mut table = ParquetTable::open::<LlmCalls>(store).unwrap();
    let mut rows = Vec::with_capacity(FLUSH);
    let mut from = 0;
    for n in 0..calls {
        let mut e = template.clone();
        e.call.event_id = format!("call-{n}");
        e.call.tenant = "acme".into();
        e.call.team = format!("team-{}", n % TEAMS);
        e.call.occurred_at = START + (n * SPAN_SECONDS / calls) as i64 * SECOND;
        e.call.received_at = e.call.occurred_at;
        e.enriched_at = e.call.occurred_at;
        e.call.ticket_id = (dice(n, 1) % 10 < 3)
            .then(|| format!("T-{}-{}", n % TEAMS, dice(n, 2) % tickets_per_team));
        e.unpriced = dice(n, 3) % 100 == 0;
        e.cost_total_nanos = (!e.unpriced).then(|| (dice(n, 4) % 5_000_000 + 1) as i64);
        rows.push(LlmCallRow::new(e, 0, n as i64));
        if rows.len() == FLUSH || n + 1 == calls {
            let to = n + 1;
            Destination::<LlmCalls>::write(&mut table, &rows, from, to).unwrap();
            rows.clear();
            from = to;
        }
    }
}

fn write_deploys(store: &Path, deploys: u64, tickets_per_team: u64) {
    let template: DeployEvent =
        serde_json::from_str(include_str!("../../../tests/golden/DeployEvent.json")).unwrap();
    let rows: Vec<DeployRow> = (0..deploys)
        .map(|n| {
            let mut d = template.clone();
            d.event_id = format!("deploy-{n}");
            d.tenant = "acme".into();
            d.team = format!("team-{}", n % TEAMS);
            d.service = format!("svc-{}-{}", n % TEAMS, dice(n, 6) % 3);
            d.environment = if dice(n, 7) % 4 == 0 {
                "staging"
            } else {
                "production"
            }
            .into();
            d.occurred_at = START + (dice(n, 5) % SPAN_SECONDS) as i64 * SECOND;
            d.received_at = d.occurred_at;
            d.version = Some(format!("v{n}"));
            d.status = if dice(n, 8) % 20 == 0 {
                DeployStatus::Failed
            } else {
                DeployStatus::Succeeded
            };
            d.ticket_ids = (0..dice(n, 10) % 4)
                .map(|k| format!("T-{}-{}", n % TEAMS, dice(n * 4 + k, 9) % tickets_per_team))
                .collect();
            DeployRow::from(d)
        })
        .collect();
    let mut table = ParquetTable::open::<Deploys>(store).unwrap();
    Destination::<Deploys>::write(&mut table, &rows, 0, deploys).unwrap();
}

fn write_tickets(store: &Path, tickets: u64) {
    let template: TicketEvent =
        serde_json::from_str(include_str!("../../../tests/golden/TicketEvent.json")).unwrap();
    let kinds = [
        TicketKind::Feature,
        TicketKind::Bug,
        TicketKind::Chore,
        TicketKind::Incident,
    ];
    let rows: Vec<TicketRow> = (0..2 * tickets)
        .map(|n| {
            let ticket = n / 2;
            let mut t = template.clone();
            t.event_id = format!("ticket-event-{n}");
            t.tenant = "acme".into();
            t.ticket_id = format!("T-{}-{}", ticket % TEAMS, ticket / TEAMS);
            t.team = format!("team-{}", ticket % TEAMS);
            t.kind = kinds[(dice(ticket, 13) % 4) as usize];
            let opened = (dice(ticket, 11) % SPAN_SECONDS) as i64;
            (t.status, t.occurred_at) = if n % 2 == 0 {
                (TicketStatus::Opened, START + opened * SECOND)
            } else {
                let open_for = (dice(ticket, 12) % (5 * 86_400)) as i64;
                (TicketStatus::Closed, START + (opened + open_for) * SECOND)
            };
            t.received_at = t.occurred_at;
            t.estimate_hours = (dice(ticket, 14) % 3 != 0).then(|| (dice(ticket, 15) % 40) as f64);
            TicketRow::from(t)
        })
        .collect();
    let mut table = ParquetTable::open::<Tickets>(store).unwrap();
    Destination::<Tickets>::write(&mut table, &rows, 0, 2 * tickets).unwrap();
}

/// The store of one size, written once and kept.
fn store(root: &Path, deploys: u64, calls: u64) -> PathBuf {
    let dir = root.join(format!("{deploys}x{calls}"));
    let done = dir.join("complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let tickets_per_team = (deploys / TEAMS).max(1);
        write_calls(&dir, calls, tickets_per_team);
        write_deploys(&dir, deploys, tickets_per_team);
        write_tickets(&dir, deploys);
        std::fs::write(&done, b"").unwrap();
        println!(
            "  wrote the store in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    dir
}

/// min / median / max of the runs, in seconds.
fn summary(runs: &[Duration]) -> String {
    let mut secs: Vec<f64> = runs.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    format!(
        "{:.2} / {:.2} / {:.2} s ({} runs)",
        secs[0],
        secs[secs.len() / 2],
        secs[secs.len() - 1],
        secs.len()
    )
}

/// Reads the whole result of `sql`, within `limit`.
async fn time(context: &SessionContext, sql: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let run = async {
        let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
        std::hint::black_box(batches);
    };
    tokio::time::timeout(limit, run).await.ok()?;
    Some(started.elapsed())
}

/// Prints the operators of `sql`'s plan as run, with their rows and compute time.
async fn explain(context: &SessionContext, sql: &str) {
    let analyze = format!("EXPLAIN ANALYZE {sql}");
    let batches = context
        .sql(&analyze)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    println!(
        "{}",
        datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
    );
}

fn naive_cost_per_deploy() -> String {
    include_str!("../tests/naive/cost_per_deploy.sql").replace(
        "CREATE VIEW cost_per_deploy",
        "CREATE VIEW naive_cost_per_deploy",
    )
}

fn naive_cost_per_ticket() -> String {
    include_str!("../tests/naive/cost_per_ticket.sql")
        .replace("{unattributed_share_e9}", "500000000")
        .replace("{loaded_hourly_rate_usd}", "CAST(120 AS DOUBLE)")
}

#[tokio::main]
async fn main() {
    let sizes = std::env::var("TALLY_BENCH_SIZES")
        .unwrap_or_else(|_| "31x500000,3100x500000,10000x10000000".into());
    let runs: usize = std::env::var("TALLY_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let naive_limit = Duration::from_secs(
        std::env::var("TALLY_BENCH_NAIVE_SECONDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(300),
    );
    let root = std::env::var_os("TALLY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tally-bench-attribution"));
    let forever = Duration::from_secs(24 * 3600);
    for size in sizes.split(',') {
        let (deploys, calls) = size
            .split_once('x')
            .and_then(|(d, c)| Some((d.parse::<u64>().ok()?, c.parse::<u64>().ok()?)))
            .expect("TALLY_BENCH_SIZES: DEPLOYSxCALLS,...");
        println!("\n{deploys} deploys x {calls} calls ({deploys} tickets)");
        let dir = store(&root, deploys, calls);
        let (context, _snapshot) = query::context(&dir).await.unwrap();
        context.sql(&naive_cost_per_deploy()).await.unwrap();
        if let Some(file) = std::env::var_os("TALLY_BENCH_SQL") {
            let text = std::fs::read_to_string(&file).expect("TALLY_BENCH_SQL: a readable file");
            for statement in text.split(';').filter(|s| !s.trim().is_empty()) {
                context
                    .sql(statement)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
        }
        for (name, sql) in [
            ("cost_per_deploy", "SELECT * FROM cost_per_deploy"),
            ("cost_per_ticket", "SELECT * FROM cost_per_ticket(0.5, 120)"),
            ("team_efficiency", "SELECT * FROM team_efficiency"),
        ] {
            let mut times = Vec::new();
            for _ in 0..runs {
                times.push(time(&context, sql, forever).await.unwrap());
            }
            println!("  {name:<22} {}", summary(&times));
            if std::env::var_os("TALLY_BENCH_EXPLAIN").is_some() {
                explain(&context, sql).await;
            }
        }
        for (name, sql) in [
            (
                "naive_cost_per_deploy",
                "SELECT * FROM naive_cost_per_deploy".to_string(),
            ),
            ("naive_cost_per_ticket", naive_cost_per_ticket()),
        ] {
            match time(&context, &sql, naive_limit).await {
                None => println!(
                    "  {name:<22} did not answer within {} s",
                    naive_limit.as_secs()
                ),
                Some(first) => {
                    let mut times = vec![first];
                    if first < Duration::from_secs(60) {
                        for _ in 1..runs {
                            times.push(time(&context, &sql, naive_limit).await.unwrap());
                        }
                    }
                    println!("  {name:<22} {}", summary(&times));
                }
            }
        }
    }
}
