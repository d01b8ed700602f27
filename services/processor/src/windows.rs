//! Event-time tumbling windows of spend, per partition: pure logic, no I/O.
//!
//! For each configured size (1 minute, 1 hour, 1 day by default) and each key — tenant × team
//! × model, tenant × team × user, tenant × team × workflow — a window sums calls, tokens by
//! kind, cost, energy and CO2e. The partition's watermark is the latest event time seen minus
//! `max_out_of_order`. A window is emitted (revision 0) when the watermark passes its end; a
//! call that arrives later but within `allowed_lateness` of the end updates it and re-emits it
//! with the next revision (downstream keeps the highest); after that the window is dropped and
//! a later call is counted as late (it stays in the enriched stream, never lost).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tally_contract::records::{EnrichedLlmCall, Micros, SpendDimension, SpendWindow};

const MICROS_PER_SECOND: Micros = 1_000_000;

/// Identifies one window of one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    pub window_seconds: i64,
    pub window_start: Micros,
    pub tenant: String,
    pub team: String,
    pub dimension: String,
    pub dimension_value: String,
}

/// The running totals of one window. Sums are 128-bit: a day of one team at 1,000 times
/// the seed's volume (60 quadrillion tokens a month) passes `i64::MAX` nano-dollars; an `i128`
/// holds 10^19 times more, so no sum of calls below the per-call limits can wrap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowTotals {
    pub calls: i64,
    pub unpriced_calls: i64,
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub cache_read_tokens: i128,
    pub cache_write_tokens: i128,
    pub reasoning_tokens: i128,
    pub cost_nanos: i128,
    pub energy_uwh_central: i128,
    pub co2e_ug_low: i128,
    pub co2e_ug_central: i128,
    pub co2e_ug_high: i128,
    /// The revision last emitted, if any.
    pub emitted_revision: Option<i32>,
}

impl WindowTotals {
    fn add(&mut self, call: &EnrichedLlmCall) {
        self.calls += 1;
        self.unpriced_calls += i64::from(call.unpriced);
        self.input_tokens += i128::from(call.call.input_tokens);
        self.output_tokens += i128::from(call.call.output_tokens);
        self.cache_read_tokens += i128::from(call.call.cache_read_tokens);
        self.cache_write_tokens += i128::from(call.call.cache_write_tokens);
        self.reasoning_tokens += i128::from(call.call.reasoning_tokens);
        self.cost_nanos += i128::from(call.cost_total_nanos.unwrap_or(0));
        self.energy_uwh_central += i128::from(call.energy_uwh_central);
        self.co2e_ug_low += i128::from(call.co2e_ug_low);
        self.co2e_ug_central += i128::from(call.co2e_ug_central);
        self.co2e_ug_high += i128::from(call.co2e_ug_high);
    }
}

/// One partition's windows and watermark: what the changelog keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    pub watermark: Micros,
    #[serde(with = "crate::state_serde")]
    pub windows: BTreeMap<WindowKey, WindowTotals>,
}

/// Window settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Window lengths, seconds.
    #[serde(default = "default_sizes")]
    pub sizes_secs: Vec<i64>,
    /// How long after its end a window still takes late calls (and re-emits), seconds.
    #[serde(default = "default_allowed_lateness_secs")]
    pub allowed_lateness_secs: i64,
    /// How far behind the latest event time the watermark trails, seconds.
    #[serde(default = "default_max_out_of_order_secs")]
    pub max_out_of_order_secs: i64,
}

fn default_sizes() -> Vec<i64> {
    vec![60, 3_600, 86_400]
}
fn default_allowed_lateness_secs() -> i64 {
    300
}
fn default_max_out_of_order_secs() -> i64 {
    5
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            sizes_secs: default_sizes(),
            allowed_lateness_secs: default_allowed_lateness_secs(),
            max_out_of_order_secs: default_max_out_of_order_secs(),
        }
    }
}

/// What one call did to the windows.
#[derive(Debug, Default, PartialEq)]
pub struct WindowOutput {
    /// Windows to emit now (closed, or revised after closing).
    pub emitted: Vec<SpendWindow>,
    /// Whether the call was too late for at least one window size.
    pub late: bool,
}

/// Applies calls to a partition's window state.
pub fn apply(
    config: &WindowConfig,
    state: &mut WindowState,
    call: &EnrichedLlmCall,
    now: Micros,
) -> WindowOutput {
    let mut output = WindowOutput::default();
    let at = call.call.occurred_at;
    let lateness = config.allowed_lateness_secs * MICROS_PER_SECOND;
    for &size in &config.sizes_secs {
        let length = size * MICROS_PER_SECOND;
        let start = at.div_euclid(length) * length;
        if state.watermark >= start + length + lateness {
            output.late = true;
            continue;
        }
        for (dimension, value) in dimensions(call) {
            let key = WindowKey {
                window_seconds: size,
                window_start: start,
                tenant: call.call.tenant.clone(),
                team: call.call.team.clone(),
                dimension: dimension.as_str().to_string(),
                dimension_value: value,
            };
            let totals = state.windows.entry(key.clone()).or_default();
            totals.add(call);
            // A window whose end the watermark already passed is emitted at once: revised if it
            // was emitted before, first emitted if this late call created it.
            if start + length <= state.watermark {
                let revision = totals.emitted_revision.map_or(0, |r| r + 1);
                totals.emitted_revision = Some(revision);
                output.emitted.push(to_record(&key, totals, now));
            }
        }
    }
    let watermark = at - config.max_out_of_order_secs * MICROS_PER_SECOND;
    if watermark > state.watermark {
        advance(config, state, watermark, now, &mut output);
    }
    output
}

/// Moves the watermark forward: emits windows that ended since the last watermark, drops
/// those past lateness. Looks only at windows whose state changes (key ranges by size and
/// start), so its cost does not grow with the number of open windows.
pub fn advance(
    config: &WindowConfig,
    state: &mut WindowState,
    watermark: Micros,
    now: Micros,
    output: &mut WindowOutput,
) {
    let previous = state.watermark;
    state.watermark = watermark;
    let lateness = config.allowed_lateness_secs * MICROS_PER_SECOND;
    for &size in &config.sizes_secs {
        let length = size * MICROS_PER_SECOND;
        // Ended in (previous, watermark]: start in (previous - length, watermark - length].
        let ended = bound(size, previous - length + 1)..bound(size, watermark - length + 1);
        for (key, totals) in state.windows.range_mut(ended) {
            if totals.emitted_revision.is_none() {
                totals.emitted_revision = Some(0);
                output.emitted.push(to_record(key, totals, now));
            }
        }
        // Past lateness: start + length + lateness <= watermark.
        let expired: Vec<WindowKey> = state
            .windows
            .range(bound(size, Micros::MIN)..bound(size, watermark - length - lateness + 1))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            state.windows.remove(&key);
        }
    }
}

/// The smallest key of a window size at a start: every key of that start sorts at or after it.
fn bound(window_seconds: i64, window_start: Micros) -> WindowKey {
    WindowKey {
        window_seconds,
        window_start,
        tenant: String::new(),
        team: String::new(),
        dimension: String::new(),
        dimension_value: String::new(),
    }
}

fn dimensions(call: &EnrichedLlmCall) -> [(SpendDimension, String); 3] {
    [
        // One model, one window, however the caller spelled it.
        (
            SpendDimension::Model,
            match call.canonical_model.is_empty() {
                true => tally_contract::provider::canonical_model(&call.call.model),
                false => call.canonical_model.clone(),
            },
        ),
        (
            SpendDimension::User,
            call.call.user.clone().unwrap_or_default(),
        ),
        (
            SpendDimension::Workflow,
            call.call.workflow.clone().unwrap_or_default(),
        ),
    ]
}

fn to_record(key: &WindowKey, totals: &WindowTotals, now: Micros) -> SpendWindow {
    SpendWindow {
        window_start: key.window_start,
        window_seconds: key.window_seconds,
        revision: totals.emitted_revision.unwrap_or(0),
        tenant: key.tenant.clone(),
        team: key.team.clone(),
        dimension: key.dimension.parse().expect("written from SpendDimension"),
        dimension_value: key.dimension_value.clone(),
        calls: totals.calls,
        unpriced_calls: totals.unpriced_calls,
        input_tokens: totals.input_tokens,
        output_tokens: totals.output_tokens,
        cache_read_tokens: totals.cache_read_tokens,
        cache_write_tokens: totals.cache_write_tokens,
        reasoning_tokens: totals.reasoning_tokens,
        cost_nanos: totals.cost_nanos,
        energy_uwh_central: totals.energy_uwh_central,
        co2e_ug_low: totals.co2e_ug_low,
        co2e_ug_central: totals.co2e_ug_central,
        co2e_ug_high: totals.co2e_ug_high,
        emitted_at: now,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn enriched(
        event_id: &str,
        at_secs: i64,
        model: &str,
        cost: Option<i64>,
    ) -> EnrichedLlmCall {
        let mut value: EnrichedLlmCall =
            serde_json::from_str(include_str!("../../../tests/golden/EnrichedLlmCall.json"))
                .unwrap();
        value.call.event_id = event_id.into();
        value.call.occurred_at = at_secs * MICROS_PER_SECOND;
        value.call.model = model.into();
        value.canonical_model = model.into();
        value.call.input_tokens = 100;
        value.call.output_tokens = 10;
        value.unpriced = cost.is_none();
        value.cost_total_nanos = cost;
        value.co2e_ug_central = 7;
        value
    }

    fn minute_only() -> WindowConfig {
        WindowConfig {
            sizes_secs: vec![60],
            allowed_lateness_secs: 120,
            max_out_of_order_secs: 0,
        }
    }

    fn model_windows(output: &WindowOutput) -> Vec<(i64, i32, i64, i128)> {
        output
            .emitted
            .iter()
            .filter(|w| w.dimension == SpendDimension::Model)
            .map(|w| {
                (
                    w.window_start / MICROS_PER_SECOND,
                    w.revision,
                    w.calls,
                    w.cost_nanos,
                )
            })
            .collect()
    }

    #[test]
    fn a_window_is_emitted_once_the_watermark_passes_its_end() {
        let config = minute_only();
        let mut state = WindowState::default();
        assert!(
            apply(&config, &mut state, &enriched("a", 10, "m", Some(5)), 0)
                .emitted
                .is_empty()
        );
        assert!(apply(&config, &mut state, &enriched("b", 59, "m", None), 0)
            .emitted
            .is_empty());
        let out = apply(&config, &mut state, &enriched("c", 60, "m", Some(7)), 0);
        assert_eq!(
            model_windows(&out),
            [(0, 0, 2, 5)],
            "[0, 60) closes at 60 with 2 calls, one unpriced"
        );
        assert_eq!(
            out.emitted
                .iter()
                .find(|w| w.dimension == SpendDimension::Model)
                .unwrap()
                .unpriced_calls,
            1
        );
        assert_eq!(out.emitted.len(), 3, "model, user and workflow windows");
    }

    #[test]
    fn late_calls_revise_within_lateness_and_are_counted_after() {
        let config = minute_only();
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 10, "m", Some(5)), 0);
        apply(&config, &mut state, &enriched("b", 70, "m", Some(1)), 0); // closes [0,60)
        let out = apply(
            &config,
            &mut state,
            &enriched("late", 30, "m", Some(100)),
            0,
        );
        assert_eq!(
            model_windows(&out),
            [(0, 1, 2, 105)],
            "revision 1 with the late call"
        );
        assert!(!out.late);
        let out = apply(&config, &mut state, &enriched("far", 180, "m", Some(1)), 0); // watermark 180 = 60 + 120
        assert!(
            state.windows.keys().all(|k| k.window_start != 0),
            "[0,60) dropped after lateness"
        );
        assert!(model_windows(&out).contains(&(60, 0, 1, 1)));
        let out = apply(
            &config,
            &mut state,
            &enriched("too-late", 20, "m", Some(1)),
            0,
        );
        assert!(out.late && out.emitted.is_empty());
    }

    #[test]
    fn a_late_call_for_a_window_nobody_opened_emits_it_at_once() {
        let config = minute_only();
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 130, "m", Some(1)), 0); // watermark 130
        let out = apply(
            &config,
            &mut state,
            &enriched("late", 70, "other", Some(9)),
            0,
        );
        let windows: Vec<_> = out
            .emitted
            .iter()
            .filter(|w| w.dimension == SpendDimension::Model)
            .map(|w| {
                (
                    w.window_start / MICROS_PER_SECOND,
                    w.revision,
                    w.dimension_value.clone(),
                )
            })
            .collect();
        assert_eq!(windows, [(60, 0, "other".to_string())]);
    }

    proptest::proptest! {
        /// Whatever the order of arrival: once a far-later call closes everything, every call
        /// is in exactly one final window of each size, or counted late for it.
        #[test]
        fn every_call_is_windowed_once_or_counted_late(times in proptest::collection::vec(0i64..1_000, 1..80)) {
            let config = WindowConfig { sizes_secs: vec![60, 300], allowed_lateness_secs: 120, max_out_of_order_secs: 10 };
            let mut state = WindowState::default();
            let mut latest: BTreeMap<WindowKey, SpendWindow> = BTreeMap::new();
            let mut late_for: BTreeMap<i64, i64> = BTreeMap::new();
            let mut calls: Vec<EnrichedLlmCall> = times.iter().enumerate().map(|(i, t)| enriched(&i.to_string(), *t, "m", Some(1))).collect();
            calls.push(enriched("closer", 100_000, "m", Some(1)));
            for call in &calls {
                let before = state.watermark;
                for &size in &config.sizes_secs {
                    let length = size * MICROS_PER_SECOND;
                    let start = call.call.occurred_at.div_euclid(length) * length;
                    if before >= start + length + config.allowed_lateness_secs * MICROS_PER_SECOND {
                        *late_for.entry(size).or_default() += 1;
                    }
                }
                for window in apply(&config, &mut state, call, 0).emitted {
                    let key = WindowKey {
                        window_seconds: window.window_seconds,
                        window_start: window.window_start,
                        tenant: window.tenant.clone(),
                        team: window.team.clone(),
                        dimension: window.dimension.to_string(),
                        dimension_value: window.dimension_value.clone(),
                    };
                    let newer = latest.get(&key).is_none_or(|seen| seen.revision < window.revision);
                    proptest::prop_assert!(newer, "revisions only grow");
                    latest.insert(key, window);
                }
            }
            for &size in &config.sizes_secs {
                let windowed: i64 = latest.values().filter(|w| w.window_seconds == size && w.dimension == SpendDimension::Model).map(|w| w.calls).sum();
                // The closer's own windows are still open; every other call is windowed or late.
                proptest::prop_assert_eq!(windowed + late_for.get(&size).copied().unwrap_or(0), times.len() as i64, "size {}", size);
            }
        }
    }

    #[test]
    fn state_survives_a_json_round_trip() {
        let config = minute_only();
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 10, "m", Some(5)), 0);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<WindowState>(&json).unwrap(), state);
    }

    #[test]
    fn out_of_order_events_within_the_delay_are_not_late() {
        let config = WindowConfig {
            sizes_secs: vec![60],
            allowed_lateness_secs: 0,
            max_out_of_order_secs: 10,
        };
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 65, "m", Some(1)), 0); // watermark 55
        let out = apply(&config, &mut state, &enriched("b", 50, "m", Some(2)), 0);
        assert!(!out.late && out.emitted.is_empty());
        let out = apply(&config, &mut state, &enriched("c", 75, "m", Some(4)), 0); // watermark 65
        assert_eq!(model_windows(&out), [(0, 0, 1, 2)]);
    }
}
