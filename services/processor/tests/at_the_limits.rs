//! Sums at the limits: calls at the per-call token limit of the dearest model the catalogue
//! prices (o1-pro, $600 per million output tokens) add up, in a day's window and a month's
//! budget, past what an `i64` holds — 9.2 billion dollars in nano-dollars, less than a year of
//! the seed's company at 1,000 times its volume. Every sum stays exact, through the Avro
//! record too.
use tally_accounting::enrich::Enricher;
use tally_contract::records::{LlmCall, SpendDimension, SpendWindow, MAX_TOKENS_PER_CALL};
use tally_processor::budgets::{self, BudgetConfig, BudgetState, Period, RolesConfig};
use tally_processor::windows::{self, WindowConfig, WindowState};
use tally_processor::ProcessorConfig;

/// 2026-11-02 00:00 UTC.
const MONDAY: i64 = 1_793_577_600_000_000;

fn enricher() -> Enricher {
    let config = ProcessorConfig::default();
    Enricher::new(config.catalogue().unwrap(), config.carbon.clone()).unwrap()
}

fn largest_call(i: i64) -> LlmCall {
    let at = MONDAY + 3_600_000_000 + i * 1_000;
    let mut call = LlmCall::new(
        &format!("max-{i}"),
        at,
        "acme",
        "research",
        "openai",
        "o1-pro",
    );
    call.input_tokens = MAX_TOKENS_PER_CALL;
    call.output_tokens = MAX_TOKENS_PER_CALL;
    call
}

#[test]
fn a_day_window_and_a_month_budget_sum_past_i64_exactly() {
    let enricher = enricher();
    let per_call = enricher
        .enrich(largest_call(0), 0)
        .unwrap()
        .cost_total_nanos
        .unwrap();
    // 1e9 × $1.5e-4 + 1e9 × $6e-4 = $750,000 a call.
    assert_eq!(per_call, 750_000_000_000_000);
    let calls = 20_000i64;
    let expected = i128::from(per_call) * i128::from(calls);
    assert!(expected > i128::from(i64::MAX), "{expected} passes i64");

    let config = WindowConfig {
        sizes_secs: vec![86_400],
        ..WindowConfig::default()
    };
    let budget: BudgetConfig = serde_json::from_value(serde_json::json!({
        "name": "research-month", "tenant": "acme", "team": "research",
        "period": "month", "amount_usd": "20000000000", "thresholds_percent": [50],
        "burn_rate_alert": false
    }))
    .unwrap();
    assert_eq!(budget.period, Period::Month);
    let (mut windows_state, mut budget_state) = (WindowState::default(), BudgetState::default());
    let mut alerts = Vec::new();
    for i in 0..calls {
        let enriched = enricher.enrich(largest_call(i), 0).unwrap();
        windows::apply(&config, &mut windows_state, &enriched);
        alerts.extend(
            budgets::apply(
                std::slice::from_ref(&budget),
                &RolesConfig::default(),
                &mut budget_state,
                &enriched,
                0,
            )
            .alerts,
        );
    }
    // The next day closes the window.
    let mut next = enricher.enrich(largest_call(0), 0).unwrap();
    next.call.occurred_at = MONDAY + 2 * 86_400_000_000;
    windows::apply(&config, &mut windows_state, &next);
    let closed = windows::take_parts(&mut windows_state, 0, 0, 0);
    let window: &SpendWindow = closed
        .iter()
        .find(|w| w.dimension == SpendDimension::Model)
        .expect("the day's model window is emitted");
    assert_eq!(window.calls, calls);
    assert_eq!(window.cost_nanos, expected);
    assert_eq!(
        window.input_tokens,
        i128::from(MAX_TOKENS_PER_CALL) * i128::from(calls)
    );
    // The record carries it whole.
    let decoded: SpendWindow =
        tally_contract::decode(&tally_contract::encode(window).unwrap()).unwrap();
    assert_eq!(&decoded, window);

    // The budget's 50 % ($10 billion) alert names an amount past i64, exactly.
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let amount = alerts[0].amount_nanos.unwrap();
    assert!(amount >= 10_000_000_000 * 1_000_000_000 && amount > i128::from(i64::MAX));
    assert_eq!(amount % i128::from(per_call), 0, "a whole number of calls");
    assert_eq!(alerts[0].limit_nanos, Some(20_000_000_000 * 1_000_000_000));
    assert!(
        alerts[0].message.contains("$10,000,"),
        "{}",
        alerts[0].message
    );
}
