//! The attribution views on the real ClickHouse at three sizes, the prefix-sum views (0009)
//! next to the naive ones they replace (0007's text, as views `naive_*`).
//!
//! For each size (deploys × calls, and as many tickets as deploys) a fresh database is
//! migrated and filled on the server (`INSERT ... SELECT FROM numbers(...)`): one tenant, 12
//! teams, 30 days; calls in time order on whole seconds (so calls fall at deploys' and tickets'
//! instants), 30% tagged with one of their team's tickets, 1% unpriced; deploys of three
//! services per team in two environments, 5% failed, each listing 0 to 3 of its team's
//! tickets; tickets opened and closed within five days. Each view is read whole
//! (`SELECT * ... FORMAT Null`) `TALLY_BENCH_RUNS` times (3) as inserted (several parts:
//! `FINAL` merges them as it reads), then again after `OPTIMIZE TABLE ... FINAL` (one part per
//! month, as background merges leave a table). A naive view is run once with
//! `max_execution_time` = `TALLY_BENCH_NAIVE_SECONDS` (300) and, if it answered within 60 s,
//! `TALLY_BENCH_RUNS` times; one that does not answer in time is reported so.
//!
//! Each database is dropped at the end unless `TALLY_BENCH_KEEP` is set (to time queries on
//! it by hand).
//!
//! Needs ClickHouse (`scripts/services.sh start`, or `TALLY_CLICKHOUSE_URL`). Run:
//! `cargo bench -p tally-sink --bench attribution_views`
//! (`TALLY_BENCH_SIZES=31x500000,3100x500000,10000x10000000` by default.)
use std::time::{Duration, Instant};

use tally_sink::migrate::{migrate, Migration, Topology};

const TEAMS: u64 = 12;
const SPAN_SECONDS: u64 = 30 * 86_400;
const START: &str = "toDateTime64('2026-10-01 00:00:00', 6, 'UTC')";

/// The naive views: 0007's `cost_per_deploy` and `cost_per_ticket` under other names.
fn naive_views() -> Vec<String> {
    include_str!("../../../sql/migrations/0007_wide_sums.sql")
        .split(";\n")
        .filter(|s| s.contains("VIEW cost_per_deploy") || s.contains("VIEW cost_per_ticket"))
        .map(|s| {
            s.replace("VIEW cost_per_deploy", "VIEW naive_cost_per_deploy")
                .replace("VIEW cost_per_ticket", "VIEW naive_cost_per_ticket")
        })
        .collect()
}

fn fill(deploys: u64, calls: u64) -> Vec<String> {
    let tickets = deploys;
    let per_team = (tickets / TEAMS).max(1);
    vec![
        format!(
            "INSERT INTO llm_calls (event_id, occurred_at, received_at, enriched_at, tenant, team, provider, model,
                 operation, input_tokens, output_tokens, status, service_tier, ticket_id, unpriced, cost_total_nanos,
                 price_catalogue_version, grid_source, grid_dataset_version, carbon_method, carbon_method_version, canonical_model)
             SELECT concat('call-', toString(number)),
                 {START} + toIntervalSecond(intDiv(number * {SPAN_SECONDS}, {calls})), {START}, {START},
                 'acme', concat('team-', toString(number % {TEAMS})), 'openai', 'gpt-4o', 'chat', 1000, 300, 'ok', 'standard',
                 if(cityHash64(number, 1) % 10 < 3,
                    concat('T-', toString(number % {TEAMS}), '-', toString(cityHash64(number, 2) % {per_team})), NULL),
                 cityHash64(number, 3) % 100 = 0,
                 if(cityHash64(number, 3) % 100 = 0, NULL, toInt64(cityHash64(number, 4) % 5000000 + 1)),
                 'bench', 'annual', 'bench', 'simple', 'bench', 'gpt-4o'
             FROM numbers({calls})"
        ),
        format!(
            "INSERT INTO deploys (event_id, occurred_at, received_at, tenant, team, service, environment, version, status, ticket_ids)
             SELECT concat('deploy-', toString(number)),
                 {START} + toIntervalSecond(cityHash64(number, 5) % {SPAN_SECONDS}), {START},
                 'acme', concat('team-', toString(number % {TEAMS})),
                 concat('svc-', toString(number % {TEAMS}), '-', toString(cityHash64(number, 6) % 3)),
                 if(cityHash64(number, 7) % 4 = 0, 'staging', 'production'),
                 concat('v', toString(number)),
                 if(cityHash64(number, 8) % 20 = 0, 'failed', 'succeeded'),
                 arrayMap(k -> concat('T-', toString(number % {TEAMS}), '-', toString(cityHash64(number, 9, k) % {per_team})),
                          range(cityHash64(number, 10) % 4))
             FROM numbers({deploys})"
        ),
        format!(
            "INSERT INTO tickets (event_id, occurred_at, received_at, tenant, ticket_id, team, kind, status, estimate_hours)
             SELECT concat('ticket-event-', toString(number)),
                 {START} + toIntervalSecond(cityHash64(intDiv(number, 2), 11) % {SPAN_SECONDS}
                     + if(number % 2 = 1, cityHash64(intDiv(number, 2), 12) % (5 * 86400), 0)),
                 {START}, 'acme',
                 concat('T-', toString(intDiv(number, 2) % {TEAMS}), '-', toString(intDiv(intDiv(number, 2), {TEAMS}))),
                 concat('team-', toString(intDiv(number, 2) % {TEAMS})),
                 ['feature', 'bug', 'chore', 'incident'][cityHash64(intDiv(number, 2), 13) % 4 + 1],
                 if(number % 2 = 0, 'opened', 'closed'),
                 if(cityHash64(intDiv(number, 2), 14) % 3 = 0, NULL, toFloat64(cityHash64(intDiv(number, 2), 15) % 40))
             FROM numbers({})",
            2 * tickets
        ),
    ]
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

async fn time(client: &clickhouse::Client, sql: &str) -> Result<Duration, String> {
    let started = Instant::now();
    client
        .query(&format!("{sql} FORMAT Null"))
        .execute()
        .await
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

const VIEWS: [(&str, &str); 3] = [
    ("cost_per_deploy", "SELECT * FROM cost_per_deploy"),
    (
        "cost_per_ticket",
        "SELECT * FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 120)",
    ),
    ("team_efficiency", "SELECT * FROM team_efficiency"),
];

#[tokio::main]
async fn main() {
    let url =
        std::env::var("TALLY_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let sizes = std::env::var("TALLY_BENCH_SIZES")
        .unwrap_or_else(|_| "31x500000,3100x500000,10000x10000000".into());
    let runs: usize = std::env::var("TALLY_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let naive_seconds: u64 = std::env::var("TALLY_BENCH_NAIVE_SECONDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let keep = std::env::var_os("TALLY_BENCH_KEEP").is_some();
    let server = clickhouse::Client::default().with_url(&url);
    let version: String = server
        .query("SELECT version()")
        .fetch_one()
        .await
        .expect("ClickHouse answers");
    println!("ClickHouse {version} at {url}");
    for size in sizes.split(',') {
        let (deploys, calls) = size
            .split_once('x')
            .and_then(|(d, c)| Some((d.parse::<u64>().ok()?, c.parse::<u64>().ok()?)))
            .expect("TALLY_BENCH_SIZES: DEPLOYSxCALLS,...");
        let db = format!("bench_attribution_{}_{deploys}x{calls}", std::process::id());
        migrate(
            &server,
            &db,
            &Migration::embedded().unwrap(),
            &Topology::SingleNode,
        )
        .await
        .expect("migrate");
        let client = server.clone().with_database(&db);
        // The views measured are this checkout's: a build of another checkout's migrations
        // (a target directory shared between checkouts) would time 0007's naive views.
        let view: String = client
            .query("SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'cost_per_deploy'")
            .fetch_one()
            .await
            .unwrap();
        assert!(
            view.contains("ASOF"),
            "cost_per_deploy is not 0009's prefix-sum view: this binary embeds other migrations"
        );
        let started = Instant::now();
        for statement in fill(deploys, calls) {
            client.query(&statement).execute().await.expect("fill");
        }
        for view in naive_views() {
            client.query(&view).execute().await.expect("naive view");
        }
        println!(
            "\n{deploys} deploys x {calls} calls ({deploys} tickets): filled in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for state in ["as inserted", "after OPTIMIZE FINAL"] {
            if state != "as inserted" {
                for table in ["llm_calls", "deploys", "tickets"] {
                    client
                        .query(&format!("OPTIMIZE TABLE {table} FINAL"))
                        .execute()
                        .await
                        .expect("optimize");
                }
            }
            let parts: u64 = client
                .query("SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'llm_calls' AND active")
                .fetch_one()
                .await
                .unwrap();
            for (name, sql) in VIEWS {
                let mut times = Vec::new();
                for _ in 0..runs {
                    times.push(time(&client, sql).await.expect(name));
                }
                println!(
                    "  {name:<22} {state:<20} ({parts} parts): {}",
                    summary(&times)
                );
            }
        }
        for (name, sql) in [
            ("naive_cost_per_deploy", "SELECT * FROM naive_cost_per_deploy"),
            (
                "naive_cost_per_ticket",
                "SELECT * FROM naive_cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 120)",
            ),
        ] {
            let limited = format!("{sql} SETTINGS max_execution_time = {naive_seconds}");
            match time(&client, &limited).await {
                Err(e) if e.contains("TIMEOUT_EXCEEDED") => println!(
                    "  {name:<22} after OPTIMIZE FINAL: did not answer within {naive_seconds} s"
                ),
                Err(e) => panic!("{name}: {e}"),
                Ok(first) => {
                    let mut times = vec![first];
                    if first < Duration::from_secs(60) {
                        for _ in 1..runs {
                            times.push(time(&client, &limited).await.expect(name));
                        }
                    }
                    println!("  {name:<22} after OPTIMIZE FINAL: {}", summary(&times));
                }
            }
        }
        if keep {
            println!("  kept the database {db} (TALLY_BENCH_KEEP)");
            continue;
        }
        server
            .query(&format!("DROP DATABASE {db}"))
            .execute()
            .await
            .expect("drop");
    }
}
