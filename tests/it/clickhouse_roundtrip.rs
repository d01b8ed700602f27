//! Rows into a MergeTree table of the real ClickHouse server and back, with the
//! `clickhouse` crate (RowBinary over HTTP, LZ4, schema validation on).
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_tests::TestDatabase;

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct CallRow {
    event_id: String,
    team: String,
    occurred_at: i64,
    input_tokens: u64,
    cost_nanos: Option<i64>,
}

fn rows() -> Vec<CallRow> {
    (0..1_000u64)
        .map(|i| CallRow {
            event_id: format!("e{i:04}"),
            team: ["payments", "search", "growth"][(i % 3) as usize].to_string(),
            occurred_at: 1_763_895_600_000_000 + i as i64 * 1_000_000,
            input_tokens: 100 + i,
            // Every seventh call is unpriced: its cost is NULL, never 0.
            cost_nanos: (i % 7 != 0).then_some(1_500_000 * i as i64),
        })
        .collect()
}

#[tokio::test]
async fn rows_round_trip_through_a_merge_tree_table() {
    let db = TestDatabase::create("it_ch").await;
    db.client
        .query(
            "CREATE TABLE calls (
                event_id String,
                team LowCardinality(String),
                occurred_at DateTime64(6, 'UTC'),
                input_tokens UInt64,
                cost_nanos Nullable(Int64)
            ) ENGINE = MergeTree ORDER BY (team, occurred_at)",
        )
        .execute()
        .await
        .expect("CREATE TABLE");

    let sent = rows();
    let mut insert = db.client.insert::<CallRow>("calls").await.expect("INSERT");
    for row in &sent {
        insert.write(row).await.expect("write row");
    }
    insert.end().await.expect("INSERT acknowledged");

    let (count, tokens, cost, unpriced): (u64, u64, Option<i64>, u64) = db
        .client
        .query("SELECT count(), sum(input_tokens), sum(cost_nanos), countIf(cost_nanos IS NULL) FROM calls")
        .fetch_one()
        .await
        .expect("totals");
    let expected_tokens: u64 = sent.iter().map(|r| r.input_tokens).sum();
    let expected_cost: i64 = sent.iter().filter_map(|r| r.cost_nanos).sum();
    assert_eq!(
        (count, tokens, cost, unpriced),
        (1_000, expected_tokens, Some(expected_cost), 143)
    );

    let back: Vec<CallRow> = db
        .client
        .query("SELECT ?fields FROM calls ORDER BY event_id")
        .fetch_all()
        .await
        .expect("rows");
    assert_eq!(back, sent);
    db.drop_database().await;
}
