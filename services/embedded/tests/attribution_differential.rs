//! The prefix-sum attribution views of `tally up`'s store (`sql/datafusion/`) against the
//! naive formulation they replace (`tests/naive/`: every deploy or ticket joined to every call
//! of its team), on a seeded random history that meets every boundary case
//! (`tally_tests::attribution`), written through the journal into the Parquet store as `tally
//! up` writes it: the same rows, the same columns and types, and the share read exactly.
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use tally_contract::topics::Topic;
use tally_embedded::journal::{Journal, Record};
use tally_embedded::query;
use tally_embedded::store::{run_table, ParquetTable, StoreStats};
use tally_sink::tables::{Deploys, LlmCalls, SinkTable, Tickets};

fn record<T: tally_contract::AvroRecord>(topic: Topic, value: &T) -> Record {
    Record {
        topic: topic.name(""),
        key: b"k".to_vec(),
        payload: Some(tally_contract::encode(value).unwrap()),
    }
}

fn fill<T: SinkTable>(journal: &Journal, store: &std::path::Path) {
    let mut table = ParquetTable::open::<T>(store).unwrap();
    // Stopped from the start: it writes what is there, then returns.
    let stop = AtomicBool::new(true);
    run_table::<T>(
        journal,
        &mut table,
        "",
        Duration::from_millis(10),
        &stop,
        &StoreStats::default(),
    )
    .unwrap();
}

/// `text` with `from` replaced by `to`, which it must hold exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the naive SQL has {from:?} once"
    );
    text.replace(from, to)
}

/// The naive views with the two orders the prefix-sum views fix where the naive ones left the
/// answer to the order rows arrived in (deploys of one service and environment at one instant;
/// a ticket's events at its latest instant): the oracle.
fn naive_cost_per_deploy() -> String {
    let sql = include_str!("naive/cost_per_deploy.sql");
    let sql = replace_once(
        sql,
        "CREATE VIEW cost_per_deploy AS",
        "CREATE VIEW naive_cost_per_deploy AS",
    );
    replace_once(
        &sql,
        "ORDER BY occurred_at),",
        "ORDER BY occurred_at, team, event_id),",
    )
}

fn naive_cost_per_ticket(share_e9: i64, rate: f64) -> String {
    let mut sql = include_str!("naive/cost_per_ticket.sql").to_string();
    for column in ["team", "kind", "estimate_hours"] {
        sql = replace_once(
            &sql,
            &format!("last_value({column} ORDER BY occurred_at)"),
            &format!("last_value({column} ORDER BY occurred_at, event_id)"),
        );
    }
    sql.replace("{unattributed_share_e9}", &share_e9.to_string())
        .replace(
            "{loaded_hourly_rate_usd}",
            &format!("CAST({rate} AS DOUBLE)"),
        )
}

/// The rows of a query as CSV lines, sorted, and its columns with their types.
async fn rows(context: &SessionContext, sql: &str) -> (Vec<String>, Vec<String>) {
    let frame = context
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let columns = frame
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    let batches = frame.collect().await.unwrap();
    let text = query::render(&batches, query::Format::Csv).unwrap();
    let mut lines: Vec<String> = text.lines().skip(1).map(String::from).collect();
    lines.sort();
    (lines, columns)
}

#[tokio::test]
async fn attribution_views_equal_the_naive_formulation_on_a_random_history() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    let history = tally_tests::attribution::history(7, 3_000, 120, 40);
    let mut records = Vec::new();
    records.extend(
        history
            .calls
            .iter()
            .map(|c| record(Topic::LlmCallsEnriched, c)),
    );
    records.extend(history.deploys.iter().map(|d| record(Topic::Deploys, d)));
    records.extend(history.tickets.iter().map(|t| record(Topic::Tickets, t)));
    journal.append("test", &[], records).unwrap();
    let store = dir.path().join("store");
    fill::<LlmCalls>(&journal, &store);
    fill::<Deploys>(&journal, &store);
    fill::<Tickets>(&journal, &store);

    let (context, _snapshot) = query::context(&store).await.unwrap();
    context.sql(&naive_cost_per_deploy()).await.unwrap();

    let (deploys, columns) = rows(&context, "SELECT * FROM cost_per_deploy").await;
    let (naive, naive_columns) = rows(&context, "SELECT * FROM naive_cost_per_deploy").await;
    assert_eq!(columns, naive_columns);
    assert_eq!(deploys, naive);
    assert!(deploys.len() > 50, "{} deploys", deploys.len());

    for (share, share_e9) in [
        ("0", 0),
        ("0.1", 100_000_000),
        ("'0.1'", 100_000_000),
        ("0.5", 500_000_000),
        ("'0.333333333'", 333_333_333),
        ("1", 1_000_000_000),
    ] {
        let (tickets, columns) = rows(
            &context,
            &format!("SELECT * FROM cost_per_ticket({share}, 120)"),
        )
        .await;
        let (naive, naive_columns) = rows(&context, &naive_cost_per_ticket(share_e9, 120.0)).await;
        assert_eq!(columns, naive_columns, "share {share}");
        assert_eq!(tickets, naive, "share {share}");
        assert!(tickets.len() > 10, "{} tickets", tickets.len());
    }

    // The history meets the cases it is for (so equal figures say something).
    let count = |sql: &'static str| {
        let context = context.clone();
        async move {
            let batches = query::run(&context, sql).await.unwrap();
            let text = query::render(&batches, query::Format::Csv).unwrap();
            text.lines().nth(1).unwrap().parse::<u64>().unwrap()
        }
    };
    for (case, sql) in [
        ("a call at the very instant of its team's deploy", "SELECT count(*) FROM cost_per_deploy AS d JOIN llm_calls AS c ON c.tenant = d.tenant AND c.team = d.team AND c.occurred_at = d.deployed_at"),
        ("a deploy at its previous deploy's instant", "SELECT count(*) FROM cost_per_deploy WHERE previous_deploy_at = deployed_at"),
        ("a deploy with unpriced calls", "SELECT count(*) FROM cost_per_deploy WHERE team_unpriced_calls > 0"),
        ("a deploy with tagged spend", "SELECT count(*) FROM cost_per_deploy WHERE ticket_cost_nanos > 0"),
        ("a ticket with tagged and untagged spend", "SELECT count(*) FROM cost_per_ticket(0.5, 1) WHERE tagged_cost_nanos > 0 AND unattributed_team_cost_nanos > 0"),
        ("a ticket closed before it opened", "SELECT count(*) FROM cost_per_ticket(0.5, 1) WHERE closed_at < opened_at"),
    ] {
        assert!(count(sql).await > 0, "the history has {case}");
    }
}
