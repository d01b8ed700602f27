//! Business metrics for Prometheus — cost, tokens, calls, energy, CO2e, budgets, open loop
//! signals — taken from the stages' state, never from a process-local counter.
//!
//! The totals ([`BusinessState`]) are part of the aggregate stage's partition state: they are
//! added to in the transaction that consumes a call and written to its changelog in that
//! transaction, so a restart restores them exactly where the committed offsets are, and the
//! calls read again after it add to the totals they had then (no call is counted twice, none
//! lost). The endpoint shows only committed state ([`Snapshot`], refreshed after each commit and
//! each assignment), and each series carries the `partition` it comes from: a partition that
//! moves to another instance leaves this one's endpoint (its series go stale) and appears on
//! the other's with the same values, so `sum by (...)` over instances is the total.
//!
//! Cardinality is bounded by construction: labels are tenant, team, model, provider and
//! region (never user, session or event ids), and a partition keeps at most
//! `business_metrics_max_series` label sets; calls of any further one are counted under
//! `other` in every label.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use tally_accounting::decimal::Decimal;
use tally_contract::records::{CallStatus, EnrichedLlmCall};

/// The label set of the call totals.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetricKey {
    pub tenant: String,
    pub team: String,
    pub model: String,
    pub provider: String,
    pub region: String,
}

impl MetricKey {
    fn of(call: &EnrichedLlmCall) -> MetricKey {
        let model = if call.canonical_model.is_empty() {
            &call.call.model
        } else {
            &call.canonical_model
        };
        MetricKey {
            tenant: call.call.tenant.clone(),
            team: call.call.team.clone(),
            model: model.clone(),
            provider: call.call.provider.clone(),
            region: call.call.region.clone().unwrap_or_default(),
        }
    }

    /// Where the calls of label sets beyond the cap are counted.
    pub fn other() -> MetricKey {
        let other = || "other".to_string();
        MetricKey {
            tenant: other(),
            team: other(),
            model: other(),
            provider: other(),
            region: other(),
        }
    }
}

/// What the calls of one label set add up to, exactly (integers in the records' units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Calls by status and whether the catalogue priced them: ok priced, ok unpriced,
    /// error priced, error unpriced.
    pub calls: [i64; 4],
    /// Cost of the priced calls, nano-dollars.
    pub cost_nanos: i128,
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub cache_read_tokens: i128,
    pub cache_write_tokens: i128,
    pub reasoning_tokens: i128,
    /// Central estimate, micro-watt-hours.
    pub energy_uwh: i128,
    /// Central estimate, micrograms CO2e.
    pub co2e_ug: i128,
}

impl Totals {
    fn add(&mut self, call: &EnrichedLlmCall) {
        let status = match call.call.status {
            CallStatus::Ok => 0,
            CallStatus::Error => 2,
        };
        self.calls[status + usize::from(call.unpriced)] += 1;
        self.cost_nanos += i128::from(call.cost_total_nanos.unwrap_or(0));
        self.input_tokens += i128::from(call.call.input_tokens);
        self.output_tokens += i128::from(call.call.output_tokens);
        self.cache_read_tokens += i128::from(call.call.cache_read_tokens);
        self.cache_write_tokens += i128::from(call.call.cache_write_tokens);
        self.reasoning_tokens += i128::from(call.call.reasoning_tokens);
        self.energy_uwh += i128::from(call.energy_uwh_central);
        self.co2e_ug += i128::from(call.co2e_ug_central);
    }
}

/// One partition's totals: part of the aggregate stage's state and of its changelog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BusinessState {
    #[serde(with = "crate::state_serde")]
    pub totals: BTreeMap<MetricKey, Totals>,
    /// Label sets changed since the changelog was last written (`crate::aggregate_state`).
    #[serde(skip)]
    pub changed: BTreeSet<MetricKey>,
}

impl BusinessState {
    /// Adds one call to its label set's totals, or to `other` once `max_series` label sets
    /// exist.
    pub fn add(&mut self, call: &EnrichedLlmCall, max_series: usize) {
        let mut key = MetricKey::of(call);
        if !self.totals.contains_key(&key) && self.totals.len() >= max_series {
            key = MetricKey::other();
        }
        match self.totals.get_mut(&key) {
            Some(totals) => totals.add(call),
            None => self.totals.entry(key.clone()).or_default().add(call),
        }
        // Most calls of a transaction fall on a label set it changed already.
        if !self.changed.contains(&key) {
            self.changed.insert(key);
        }
    }
}

/// A budget's spend in this partition in its current period (the one holding the newest
/// event time seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpend {
    pub budget: String,
    pub tenant: String,
    pub team: String,
    pub amount_nanos: i128,
    pub spent_nanos: i128,
}

/// What one partition shows on `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionMetrics {
    pub totals: BTreeMap<MetricKey, Totals>,
    pub budgets: Vec<BudgetSpend>,
}

/// The committed state the endpoint renders: per stage and partition, replaced after each
/// commit and assignment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The aggregate stage's partitions.
    pub aggregate: BTreeMap<i32, PartitionMetrics>,
    /// The detect stage's partitions: open loop signals by signal type.
    pub open_signals: BTreeMap<i32, BTreeMap<&'static str, usize>>,
}

/// A label value escaped for the text format (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `mantissa / 10^scale` written exactly.
fn exact(mantissa: i128, scale: u32) -> String {
    Decimal::new(mantissa, scale).to_string()
}

const TOKEN_KINDS: [&str; 5] = ["input", "output", "cache_read", "cache_write", "reasoning"];
const CALL_LABELS: [(&str, &str); 4] = [
    ("ok", "true"),
    ("ok", "false"),
    ("error", "true"),
    ("error", "false"),
];

impl Snapshot {
    /// The business metrics in Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let series = |out: &mut String, name: &str| {
            for (partition, metrics) in &self.aggregate {
                for (key, totals) in &metrics.totals {
                    let labels = format!(
                        "partition=\"{partition}\",tenant=\"{}\",team=\"{}\",model=\"{}\",provider=\"{}\",region=\"{}\"",
                        label(&key.tenant),
                        label(&key.team),
                        label(&key.model),
                        label(&key.provider),
                        label(&key.region)
                    );
                    for (extra, value) in values(name, totals) {
                        let _ = writeln!(out, "{name}{{{labels}{extra}}} {value}");
                    }
                }
            }
        };
        for (name, help) in [
            (
                "tally_cost_usd_total",
                "Cost of the priced calls, US dollars (exact to the nano-dollar).",
            ),
            (
                "tally_tokens_total",
                "Tokens by kind, as the calls reported them.",
            ),
            (
                "tally_calls_total",
                "Calls by status and whether the catalogue priced them.",
            ),
            (
                "tally_energy_wh_total",
                "Energy of the calls, watt-hours (central estimate).",
            ),
            (
                "tally_co2e_grams_total",
                "Emissions of the calls, grams CO2e (central estimate).",
            ),
        ] {
            header(&mut out, name, "counter", help);
            series(&mut out, name);
        }
        header(
            &mut out,
            "tally_budget_amount_usd",
            "gauge",
            "A budget's amount per period, US dollars.",
        );
        let mut amounts = BTreeMap::new();
        for spend in self.aggregate.values().flat_map(|m| &m.budgets) {
            amounts.insert(&spend.budget, (spend, spend.amount_nanos));
        }
        for (budget, (spend, amount)) in &amounts {
            let _ = writeln!(
                out,
                "tally_budget_amount_usd{{budget=\"{}\",tenant=\"{}\",team=\"{}\"}} {}",
                label(budget),
                label(&spend.tenant),
                label(&spend.team),
                exact(*amount, 9)
            );
        }
        for (name, help) in [
            ("tally_budget_spent_usd", "A budget's spend in its current period held by this partition, US dollars; sum by (budget) for the whole."),
            ("tally_budget_spent_ratio", "The part of a budget's amount spent in this partition in its current period; sum by (budget) for the whole."),
        ] {
            header(&mut out, name, "gauge", help);
            for (partition, metrics) in &self.aggregate {
                for spend in &metrics.budgets {
                    let value = if name == "tally_budget_spent_usd" {
                        exact(spend.spent_nanos, 9)
                    } else {
                        ratio(spend.spent_nanos, spend.amount_nanos)
                    };
                    let _ = writeln!(
                        out,
                        "{name}{{partition=\"{partition}\",budget=\"{}\",tenant=\"{}\",team=\"{}\"}} {value}",
                        label(&spend.budget),
                        label(&spend.tenant),
                        label(&spend.team)
                    );
                }
            }
        }
        header(
            &mut out,
            "tally_loop_signals_open",
            "gauge",
            "Loop signals open now, by signal type.",
        );
        for (partition, open) in &self.open_signals {
            for (signal_type, count) in open {
                let _ = writeln!(
                    out,
                    "tally_loop_signals_open{{partition=\"{partition}\",signal_type=\"{signal_type}\"}} {count}"
                );
            }
        }
        out
    }
}

/// spent / amount to 12 decimals, from the integers (0 for a zero amount).
fn ratio(spent: i128, amount: i128) -> String {
    if amount == 0 {
        return "0".into();
    }
    let scaled = spent.saturating_mul(1_000_000_000_000) / amount;
    exact(scaled, 12)
}

/// The (extra labels, value) of each series of metric `name` for one label set.
fn values(name: &str, totals: &Totals) -> Vec<(String, String)> {
    match name {
        "tally_cost_usd_total" => vec![(String::new(), exact(totals.cost_nanos, 9))],
        "tally_tokens_total" => TOKEN_KINDS
            .iter()
            .zip([
                totals.input_tokens,
                totals.output_tokens,
                totals.cache_read_tokens,
                totals.cache_write_tokens,
                totals.reasoning_tokens,
            ])
            .map(|(kind, value)| (format!(",kind=\"{kind}\""), value.to_string()))
            .collect(),
        "tally_calls_total" => CALL_LABELS
            .iter()
            .zip(totals.calls)
            .map(|((status, priced), value)| {
                (
                    format!(",status=\"{status}\",priced=\"{priced}\""),
                    value.to_string(),
                )
            })
            .collect(),
        "tally_energy_wh_total" => vec![(String::new(), exact(totals.energy_uwh, 6))],
        "tally_co2e_grams_total" => vec![(String::new(), exact(totals.co2e_ug, 6))],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(team: &str, model: &str, unpriced: bool) -> EnrichedLlmCall {
        let mut call =
            crate::windows::tests::enriched("e", 0, model, (!unpriced).then_some(1_234_567_891));
        call.call.tenant = "acme".into();
        call.call.team = team.into();
        call.call.provider = "openai".into();
        call.call.region = Some("eu-west-1".into());
        call.call.cache_read_tokens = 600;
        call.call.status = CallStatus::Ok;
        call.energy_uwh_central = 2_500_001;
        call.co2e_ug_central = 750_000;
        call
    }

    #[test]
    fn totals_are_exact_and_label_sets_beyond_the_cap_go_to_other() {
        let mut state = BusinessState::default();
        state.add(&call("payments", "gpt-4o", false), 2);
        state.add(&call("payments", "gpt-4o", false), 2);
        state.add(&call("search", "gpt-4o", true), 2);
        state.add(&call("growth", "gpt-4o", false), 2);
        state.add(&call("ads", "o3", false), 2);
        assert_eq!(state.totals.len(), 3);
        let payments = &state.totals[&MetricKey::of(&call("payments", "gpt-4o", false))];
        assert_eq!(payments.calls, [2, 0, 0, 0]);
        assert_eq!(payments.cost_nanos, 2_469_135_782);
        assert_eq!(state.totals[&MetricKey::other()].calls, [2, 0, 0, 0]);

        let snapshot = Snapshot {
            aggregate: BTreeMap::from([(
                3,
                PartitionMetrics {
                    totals: state.totals.clone(),
                    budgets: vec![BudgetSpend {
                        budget: "payments-daily".into(),
                        tenant: "acme".into(),
                        team: "payments".into(),
                        amount_nanos: 50_000_000_000_000,
                        spent_nanos: 2_469_135_782,
                    }],
                },
            )]),
            open_signals: BTreeMap::from([(1, BTreeMap::from([("retry_storm", 2)]))]),
        };
        let text = snapshot.render();
        let labels = "partition=\"3\",tenant=\"acme\",team=\"payments\",model=\"gpt-4o\",provider=\"openai\",region=\"eu-west-1\"";
        for line in [
            format!("tally_cost_usd_total{{{labels}}} 2.469135782"),
            format!("tally_tokens_total{{{labels},kind=\"cache_read\"}} 1200"),
            format!("tally_calls_total{{{labels},status=\"ok\",priced=\"true\"}} 2"),
            format!("tally_energy_wh_total{{{labels}}} 5.000002"),
            format!("tally_co2e_grams_total{{{labels}}} 1.5"),
            "tally_calls_total{partition=\"3\",tenant=\"acme\",team=\"search\",model=\"gpt-4o\",provider=\"openai\",region=\"eu-west-1\",status=\"ok\",priced=\"false\"} 1".to_string(),
            "tally_budget_amount_usd{budget=\"payments-daily\",tenant=\"acme\",team=\"payments\"} 50000".to_string(),
            "tally_budget_spent_usd{partition=\"3\",budget=\"payments-daily\",tenant=\"acme\",team=\"payments\"} 2.469135782".to_string(),
            "tally_budget_spent_ratio{partition=\"3\",budget=\"payments-daily\",tenant=\"acme\",team=\"payments\"} 0.000049382715".to_string(),
            "tally_loop_signals_open{partition=\"1\",signal_type=\"retry_storm\"} 2".to_string(),
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} not in:\n{text}");
        }
    }
}
