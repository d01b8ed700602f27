//! `tally up`'s store at the limits: three calls of 4 × 10^18 nano-dollars, micro-watt-hours and
//! micrograms each, a spend window and an alert of wide sums, written through the journal into
//! the Parquet store as `tally up` writes them; DataFusion's views and the reports give every
//! sum exactly (a BIGINT sum wraps), as ClickHouse does (services/sink/tests/it.rs).
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tally_contract::records::{Alert, EnrichedLlmCall, SpendWindow};
use tally_contract::topics::Topic;
use tally_embedded::journal::{Journal, Record};
use tally_embedded::query;
use tally_embedded::store::{run_table, ParquetTable, StoreStats};
use tally_sink::tables::{Alerts, LlmCalls, SinkTable, SpendWindows};

/// 2026-11-10 12:00 UTC.
const AT: i64 = 1_794_312_000_000_000;
const HUGE: i64 = 4_000_000_000_000_000_000;

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

#[tokio::test]
async fn views_and_reports_of_the_parquet_store_sum_past_i64_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    let template: EnrichedLlmCall =
        serde_json::from_str(include_str!("../../../tests/golden/EnrichedLlmCall.json")).unwrap();
    let mut records = Vec::new();
    for i in 0..3 {
        let mut e = template.clone();
        e.call.event_id = format!("huge-{i}");
        e.call.team = "research".into();
        e.call.occurred_at = AT + i;
        e.cost_total_nanos = Some(HUGE);
        (e.energy_uwh_low, e.energy_uwh_central, e.energy_uwh_high) = (HUGE, HUGE, HUGE);
        (e.co2e_ug_low, e.co2e_ug_central, e.co2e_ug_high) = (HUGE, HUGE, HUGE);
        records.push(record(Topic::LlmCallsEnriched, &e));
    }
    let mut window: SpendWindow =
        serde_json::from_str(include_str!("../../../tests/golden/SpendWindow.json")).unwrap();
    window.cost_nanos = (1i128 << 70) + 7;
    records.push(record(Topic::SpendWindows, &window));
    let mut alert: Alert =
        serde_json::from_str(include_str!("../../../tests/golden/Alert.json")).unwrap();
    alert.amount_nanos = Some(-((1i128 << 69) + 3));
    records.push(record(Topic::Alerts, &alert));
    journal.append("test", &[], records).unwrap();
    let store = dir.path().join("store");
    fill::<LlmCalls>(&journal, &store);
    fill::<SpendWindows>(&journal, &store);
    fill::<Alerts>(&journal, &store);

    let (context, _snapshot) = query::context(&store).await.unwrap();
    let one = |sql: &'static str| {
        let context = context.clone();
        async move {
            let batches = query::run(&context, sql).await.unwrap();
            let text = query::render(&batches, query::Format::Csv).unwrap();
            text.lines().nth(1).unwrap_or_default().to_string()
        }
    };
    assert_eq!(one("SELECT energy_kwh_central, co2e_kg_high FROM emissions_monthly WHERE team = 'research'").await, "12000000000.000000000,12000000000.000000000");
    assert_eq!(
        one("SELECT cost_nanos, cost_usd FROM team_efficiency WHERE team = 'research'").await,
        "12000000000000000000,12000000000.000000000"
    );
    assert_eq!(
        one("SELECT sum(cost_usd) FROM llm_calls").await,
        "12000000000.000000000"
    );
    assert_eq!(
        one("SELECT cost_nanos FROM spend_windows").await,
        ((1i128 << 70) + 7).to_string()
    );
    assert_eq!(
        one("SELECT amount_nanos FROM alerts").await,
        (-((1i128 << 69) + 3)).to_string()
    );

    let source = tally_embedded::reports::EmbeddedSource {
        context: context.clone(),
        snapshot: _snapshot,
    };
    let spend = tally_report::tabular::spend(&source, "2026-11-01", "2026-12-01", &["team".into()])
        .await
        .unwrap();
    let json = spend.json();
    assert!(
        json.contains("12000000000000000000") && json.contains("12000000000"),
        "{json}"
    );
    let emissions = tally_report::emissions::emissions(
        &source,
        &tally_report::emissions::EmissionsQuery {
            from: "2026-11-01".into(),
            to: "2026-12-01".into(),
            by: vec!["team".into()],
        },
    )
    .await
    .unwrap();
    assert_eq!(emissions.totals.energy_uwh, [12_000_000_000_000_000_000; 3]);
}
