//! `tally up`'s store reads one row per key, the latest version, as ClickHouse's `FINAL` does,
//! whether or not its files say their keys are unique: a table none of whose files repeats a
//! key is read as stored, the days of a replayed call through the de-duplicating view (the
//! other days still as stored), and both give the same figures. The key is ClickHouse's: a call sent again on another day is another
//! row there, and here.
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tally_contract::records::EnrichedLlmCall;
use tally_contract::topics::Topic;
use tally_embedded::journal::{Journal, Record};
use tally_embedded::query;
use tally_embedded::store::snapshot::Snapshot;
use tally_embedded::store::{run_table, ParquetTable, StoreStats};
use tally_sink::tables::LlmCalls;

const DAY: i64 = 86_400_000_000;

fn call(n: u64, enriched_later: i64, cost: i64, day: i64) -> Record {
    let mut e: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    e.call.event_id = format!("call-{n}");
    e.call.tenant = "acme".into();
    e.call.team = format!("team-{}", n % 3);
    e.call.occurred_at = 1_795_564_800_000_000 + day * DAY + n as i64 * 1_000_000;
    e.enriched_at += enriched_later;
    e.unpriced = false;
    e.cost_total_nanos = Some(cost);
    Record {
        topic: Topic::LlmCallsEnriched.name(""),
        key: b"k".to_vec(),
        payload: Some(tally_contract::encode(&e).unwrap()),
    }
}

/// Writes `records` through the journal into a new store, in flushes of `flush` records.
fn store_of(dir: &std::path::Path, batches: Vec<Vec<Record>>) -> std::path::PathBuf {
    let journal = Journal::open(&dir.join("journal")).unwrap();
    let store = dir.join("store");
    for records in batches {
        journal.append("test", &[], records).unwrap();
        let mut table = ParquetTable::open::<LlmCalls>(&store).unwrap();
        // Stopped from the start: it writes what is there, then returns.
        run_table::<LlmCalls>(
            &journal,
            &mut table,
            "",
            Duration::from_millis(10),
            &AtomicBool::new(true),
            &StoreStats::default(),
        )
        .unwrap();
    }
    store
}

/// (calls, cost in nano-dollars) of each team, as text.
async fn totals(store: &std::path::Path) -> String {
    let (context, _snapshot) = query::context(store).await.unwrap();
    let batches = query::run(
        &context,
        "SELECT team, count(*) AS calls, sum(cost_total_nanos) AS cost, sum(cost_usd) AS usd \
         FROM llm_calls GROUP BY team ORDER BY team",
    )
    .await
    .unwrap();
    query::render(&batches, query::Format::Csv).unwrap()
}

#[tokio::test]
async fn a_replayed_call_is_read_once_at_its_latest_version_and_the_rest_as_stored() {
    let plain = tempfile::tempdir().unwrap();
    let calls = |range: std::ops::Range<u64>| range.map(|n| call(n, 0, 100 + n as i64, 0));
    let unique = store_of(
        plain.path(),
        vec![calls(0..6).collect(), calls(6..9).collect()],
    );
    assert!(Snapshot::take(&unique)
        .unwrap()
        .keys_are_unique("llm_calls"));
    let expected = [
        "team,calls,cost,usd",
        "team-0,3,309,0.000000309",
        "team-1,3,312,0.000000312",
        "team-2,3,315,0.000000315",
    ]
    .join("\n");
    assert_eq!(totals(&unique).await.trim_end(), expected);

    // The same calls, with call-4 sent again in a later flush: enriched later and priced
    // otherwise. Its latest version counts, once.
    let replayed = tempfile::tempdir().unwrap();
    let store = store_of(
        replayed.path(),
        vec![
            calls(0..6).collect(),
            calls(6..9).chain([call(4, 1_000_000, 1_004, 0)]).collect(),
        ],
    );
    assert!(!Snapshot::take(&store).unwrap().keys_are_unique("llm_calls"));
    let replaced = expected.replace("team-1,3,312,0.000000312", "team-1,3,1212,0.000001212");
    assert_eq!(totals(&store).await.trim_end(), replaced);

    // call-4 again, but on the next day: another key, as in ClickHouse (its sorting key holds
    // toDate(occurred_at)), counted beside the first.
    let next_day = tempfile::tempdir().unwrap();
    let store = store_of(
        next_day.path(),
        vec![
            calls(0..6).collect(),
            calls(6..9).chain([call(4, 1_000_000, 1_004, 1)]).collect(),
        ],
    );
    assert!(Snapshot::take(&store).unwrap().keys_are_unique("llm_calls"));
    let beside = expected.replace("team-1,3,312,0.000000312", "team-1,4,1316,0.000001316");
    assert_eq!(totals(&store).await.trim_end(), beside);

    // call-4 replayed on day 0 while day 1 has calls of its own: day 0's files are read
    // de-duplicated, day 1's as stored, and the figures are those of both days, call-4 once.
    let two_days = tempfile::tempdir().unwrap();
    let day_1 = |range: std::ops::Range<u64>| range.map(|n| call(n, 0, 100 + n as i64, 1));
    let store = store_of(
        two_days.path(),
        vec![
            calls(0..6).chain(day_1(0..3)).collect(),
            calls(6..9).chain([call(4, 1_000_000, 1_004, 0)]).collect(),
        ],
    );
    let files = Snapshot::take(&store).unwrap().files("llm_calls");
    assert_eq!(
        (files.as_stored.len(), files.to_deduplicate.len()),
        (1, 2),
        "day 1's one file as stored, day 0's two de-duplicated: {files:?}"
    );
    let both = [
        "team,calls,cost,usd",
        "team-0,4,409,0.000000409",
        "team-1,4,1313,0.000001313",
        "team-2,4,417,0.000000417",
    ]
    .join("\n");
    assert_eq!(totals(&store).await.trim_end(), both);
    // `llm_calls_stored` is every row as stored, the replay too: 9 + 3 + 1.
    let (context, _snapshot) = query::context(&store).await.unwrap();
    let batches = query::run(&context, "SELECT count(*) AS n FROM llm_calls_stored")
        .await
        .unwrap();
    let text = query::render(&batches, query::Format::Csv).unwrap();
    assert_eq!(text.trim_end(), "n\n13");
}
