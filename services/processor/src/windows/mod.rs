//! Event-time tumbling windows of spend, per partition: pure logic, no I/O.
//!
//! For each configured size (1 minute, 1 hour, 1 day by default) and each key — tenant × team
//! × model, tenant × team × user, tenant × team × workflow — a window sums calls, tokens by
//! kind, cost, energy and CO2e.
//!
//! A window is emitted in **parts**, each a sum of some of its calls; its totals are the sum
//! of its parts, whatever arrives when. The partition's watermark is the latest event time
//! seen minus `max_out_of_order`. When the watermark passes a window's end plus
//! `allowed_lateness`, the window closes: the part of every call so far (revision 0) is
//! emitted and the window leaves the state. A call for a window that closed already goes into
//! a late part (revision 1) of its transaction, emitted with the transaction's outputs — a
//! backfill, a gateway's buffer or a replay days later all count. Each part names the input
//! partition and the first offset of the transaction that emitted it (`source_partition`,
//! `source_offset`): with the window's key, its identity, so a sink replay never counts it
//! twice. State holds only open windows.
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use foldhash::fast::RandomState;

use serde::{Deserialize, Serialize};
use tally_contract::records::{EnrichedLlmCall, Micros, SpendDimension, SpendWindow};

const MICROS_PER_SECOND: Micros = 1_000_000;

mod open;

use open::Key;
pub use open::OpenWindows;

/// Identifies one window of one key, in names: how a window is written to the changelog and
/// emitted. The state keeps it in numbers ([`OpenWindows`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    pub window_seconds: i64,
    pub window_start: Micros,
    pub tenant: Arc<str>,
    pub team: Arc<str>,
    pub dimension: Arc<str>,
    pub dimension_value: Arc<str>,
}

/// The running totals of one window, or of one part of it. Sums are 128-bit: a day of one
/// team at 1,000 times the seed's volume (60 quadrillion tokens a month) passes `i64::MAX`
/// nano-dollars; an `i128` holds 10^19 times more, so no sum of calls below the per-call
/// limits can wrap.
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

/// One partition's windows and watermark: what the changelog keeps (open windows only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    pub watermark: Micros,
    pub windows: OpenWindows,
    /// Windows that closed in this transaction (their first part, with any later call of the
    /// same transaction), and late parts of windows closed before: emitted at its end.
    /// (Hashed, not ordered: these take a record per window that changes or closes, a
    /// B-tree's string comparisons were a tenth of the aggregate stage, and the records of one
    /// transaction need no order among themselves.)
    #[serde(skip)]
    closing: HashMap<WindowKey, WindowTotals, RandomState>,
    #[serde(skip)]
    late: HashMap<WindowKey, WindowTotals, RandomState>,
    /// Open windows changed since the changelog was last written.
    #[serde(skip)]
    changed: HashSet<Key, RandomState>,
    /// Windows closed since then (their changelog records are deleted).
    #[serde(skip)]
    gone: HashSet<WindowKey, RandomState>,
    /// Whether the watermark moved since then.
    #[serde(skip)]
    pub watermark_changed: bool,
}

impl WindowState {
    /// Puts back an open window read from the changelog.
    pub fn restore_window(&mut self, key: WindowKey, totals: WindowTotals) -> Result<(), String> {
        self.windows.insert(key, totals)
    }

    /// Removes a window the changelog deleted.
    pub fn forget_window(&mut self, key: &WindowKey) {
        self.windows.remove(key);
    }

    /// What changed since the last call, for the changelog: each window that closed (to
    /// delete; first, so a window reopened since is written after its deletion), then each
    /// open window that changed, with its totals. Clears the marks.
    pub fn take_changes(&mut self) -> Vec<(WindowKey, Option<WindowTotals>)> {
        let gone = std::mem::take(&mut self.gone)
            .into_iter()
            .map(|key| (key, None));
        let changed: Vec<_> = std::mem::take(&mut self.changed)
            .into_iter()
            .map(|key| (self.windows.window_key(key), self.windows.totals(key)))
            .collect();
        gone.chain(changed).collect()
    }

    /// Marks every open window changed (to write all of them again).
    pub fn mark_all_changed(&mut self) {
        self.changed.extend(self.windows.keys_in_numbers());
    }

    /// Forgets what changed (after a restore, or in tests), and the room it took: a hash
    /// set keeps its table when cleared.
    pub fn clear_changes(&mut self) {
        self.changed = HashSet::default();
        self.gone = HashSet::default();
        self.watermark_changed = false;
    }

    /// Moves closed windows out of the open ones into this transaction's parts.
    fn close(&mut self, closed: Vec<(Key, WindowKey, WindowTotals)>) {
        for (key, named, totals) in closed {
            self.changed.remove(&key);
            self.gone.insert(named.clone());
            self.closing.insert(named, totals);
        }
    }
}

/// Window settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Window lengths, seconds.
    #[serde(default = "default_sizes")]
    pub sizes_secs: Vec<i64>,
    /// How long after its end a window waits before it closes and its first part is emitted,
    /// seconds; a call after that goes into a late part, never lost.
    #[serde(default = "default_allowed_lateness_secs")]
    pub allowed_lateness_secs: i64,
    /// How far behind the latest event time the watermark trails, seconds.
    #[serde(default = "default_max_out_of_order_secs")]
    pub max_out_of_order_secs: i64,
    /// A partition that receives nothing for this long (wall clock, seconds) closes all its
    /// open windows, so their figures are complete without waiting for later events; a call
    /// that comes after reopens its window, and the window's parts still add up. 0: never.
    #[serde(default = "default_idle_close_secs")]
    pub idle_close_secs: u64,
}

fn default_sizes() -> Vec<i64> {
    vec![60, 3_600, 86_400]
}
fn default_allowed_lateness_secs() -> i64 {
    60
}
fn default_max_out_of_order_secs() -> i64 {
    5
}
fn default_idle_close_secs() -> u64 {
    60
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            sizes_secs: default_sizes(),
            allowed_lateness_secs: default_allowed_lateness_secs(),
            max_out_of_order_secs: default_max_out_of_order_secs(),
            idle_close_secs: default_idle_close_secs(),
        }
    }
}

/// What one call did to the windows.
#[derive(Debug, Default, PartialEq)]
pub struct WindowOutput {
    /// Whether the call was later than a window's close for at least one window size: it
    /// went into a late part.
    pub late: bool,
}

/// Applies a call to a partition's window state. Parts are emitted by [`take_parts`].
pub fn apply(
    config: &WindowConfig,
    state: &mut WindowState,
    call: &EnrichedLlmCall,
) -> WindowOutput {
    let mut output = WindowOutput::default();
    let at = call.call.occurred_at;
    let lateness = config.allowed_lateness_secs * MICROS_PER_SECOND;
    let tenant = state.windows.name_id(&call.call.tenant);
    let team = state.windows.name_id(&call.call.team);
    let names = dimensions(call).map(|(dimension, value)| {
        let id = state.windows.name_id(&value);
        (dimension, value, id)
    });
    for &size in &config.sizes_secs {
        let length = size * MICROS_PER_SECOND;
        let start = at.div_euclid(length) * length;
        let closed = state.watermark >= start + length + lateness;
        output.late |= closed;
        for (dimension, value, id) in &names {
            if !closed {
                let key = state
                    .windows
                    .key(size, start, tenant, team, *dimension, *id);
                state.windows.add(key, call);
                state.changed.insert(key);
                continue;
            }
            let key = WindowKey {
                window_seconds: size,
                window_start: start,
                tenant: call.call.tenant.as_str().into(),
                team: call.call.team.as_str().into(),
                dimension: dimension.as_str().into(),
                dimension_value: Arc::from(&**value),
            };
            match state.closing.get_mut(&key) {
                Some(closing) => closing.add(call),
                None => state.late.entry(key).or_default().add(call),
            }
        }
    }
    let watermark = at - config.max_out_of_order_secs * MICROS_PER_SECOND;
    if watermark > state.watermark {
        advance(config, state, watermark);
    }
    output
}

/// Moves the watermark forward: windows that now close move to the parts of this
/// transaction. Finds the closing windows by size and start; the open keys are scanned only
/// when one closes (once per window size and start, not per call).
pub fn advance(config: &WindowConfig, state: &mut WindowState, watermark: Micros) {
    state.watermark = watermark;
    state.watermark_changed = true;
    let lateness = config.allowed_lateness_secs * MICROS_PER_SECOND;
    for &size in &config.sizes_secs {
        let length = size * MICROS_PER_SECOND;
        // Closed: start + length + lateness <= watermark.
        let closed = state
            .windows
            .close_through(size, watermark - length - lateness);
        state.close(closed);
    }
}

/// Closes every open window of a quiet partition: each becomes a part of this transaction
/// (revision 0). The watermark stays where it is, so a later call for such a window opens
/// it again rather than counting as late.
pub fn close_all(state: &mut WindowState) {
    let closed = state.windows.close_all();
    state.close(closed);
}

/// Whether the partition has open windows.
pub fn has_open(state: &WindowState) -> bool {
    !state.windows.is_empty()
}

/// The parts of this transaction, named by its input partition and first offset: windows
/// that closed (revision 0) and late parts (revision 1).
pub fn take_parts(
    state: &mut WindowState,
    source_partition: i32,
    source_offset: i64,
    now: Micros,
) -> Vec<SpendWindow> {
    let closing = std::mem::take(&mut state.closing);
    let late = std::mem::take(&mut state.late);
    state.windows.shrink(&mut state.changed);
    let part = |(key, totals): (WindowKey, WindowTotals), revision: i32| SpendWindow {
        source_partition,
        source_offset,
        ..to_record(&key, &totals, revision, now)
    };
    closing
        .into_iter()
        .map(|part_of| part(part_of, 0))
        .chain(late.into_iter().map(|part_of| part(part_of, 1)))
        .collect()
}

fn dimensions(call: &EnrichedLlmCall) -> [(SpendDimension, Cow<'_, str>); 3] {
    [
        // One model, one window, however the caller spelled it.
        (
            SpendDimension::Model,
            match call.canonical_model.is_empty() {
                true => Cow::Owned(tally_accounting::provider::canonical_model(
                    &call.call.model,
                )),
                false => Cow::Borrowed(&call.canonical_model),
            },
        ),
        (
            SpendDimension::User,
            Cow::Borrowed(call.call.user.as_deref().unwrap_or_default()),
        ),
        (
            SpendDimension::Workflow,
            Cow::Borrowed(call.call.workflow.as_deref().unwrap_or_default()),
        ),
    ]
}

fn to_record(key: &WindowKey, totals: &WindowTotals, revision: i32, now: Micros) -> SpendWindow {
    SpendWindow {
        window_start: key.window_start,
        window_seconds: key.window_seconds,
        revision,
        tenant: key.tenant.to_string(),
        team: key.team.to_string(),
        dimension: key.dimension.parse().expect("written from SpendDimension"),
        dimension_value: key.dimension_value.to_string(),
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
        source_partition: 0,
        source_offset: 0,
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
        let mut value: EnrichedLlmCall = serde_json::from_str(include_str!(
            "../../../../tests/golden/EnrichedLlmCall.json"
        ))
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
            allowed_lateness_secs: 0,
            max_out_of_order_secs: 0,
            idle_close_secs: 0,
        }
    }

    /// (start s, revision, calls, cost) of the model parts a transaction emits.
    fn model_parts(state: &mut WindowState) -> Vec<(i64, i32, i64, i128)> {
        take_parts(state, 3, 42, 0)
            .iter()
            .filter(|w| w.dimension == SpendDimension::Model)
            .map(|w| {
                assert_eq!((w.source_partition, w.source_offset), (3, 42));
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
    fn a_window_closes_once_the_watermark_passes_its_end_and_leaves_the_state() {
        let config = minute_only();
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 10, "m", Some(5)));
        apply(&config, &mut state, &enriched("b", 59, "m", None));
        assert!(model_parts(&mut state).is_empty(), "still open");
        apply(&config, &mut state, &enriched("c", 60, "m", Some(7)));
        let parts = take_parts(&mut state, 0, 0, 0);
        assert_eq!(parts.len(), 3, "model, user and workflow windows");
        let model = parts
            .iter()
            .find(|w| w.dimension == SpendDimension::Model)
            .unwrap();
        assert_eq!(
            (
                model.window_start,
                model.revision,
                model.calls,
                model.unpriced_calls,
                model.cost_nanos
            ),
            (0, 0, 2, 1, 5)
        );
        assert!(
            state
                .windows
                .keys()
                .all(|k| k.window_start == 60 * MICROS_PER_SECOND),
            "only [60, 120) is open"
        );
    }

    #[test]
    fn calls_after_the_close_go_into_late_parts_whatever_how_late() {
        let config = minute_only();
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 10, "m", Some(5)));
        apply(&config, &mut state, &enriched("b", 70, "m", Some(1))); // closes [0, 60)
                                                                      // A late call in the same transaction joins the closing part.
        let out = apply(&config, &mut state, &enriched("late", 30, "m", Some(100)));
        assert!(out.late);
        assert_eq!(model_parts(&mut state), [(0, 0, 2, 105)]);
        // Days later: a part of its own for the late calls of that transaction.
        apply(&config, &mut state, &enriched("far", 90_000, "m", Some(1)));
        take_parts(&mut state, 0, 0, 0);
        apply(
            &config,
            &mut state,
            &enriched("days-late", 20, "m", Some(3)),
        );
        apply(
            &config,
            &mut state,
            &enriched("days-late-2", 25, "m", Some(4)),
        );
        assert_eq!(model_parts(&mut state), [(0, 1, 2, 7)]);
        assert!(
            state.windows.keys().all(|k| k.window_start != 0),
            "it never reopens"
        );
    }

    proptest::proptest! {
        /// Whatever the order of arrival, however transactions are cut and whenever the
        /// partition goes quiet: once a far-later call closes everything, the parts of each
        /// size add up to every call exactly once.
        #[test]
        fn the_parts_add_up_to_every_call_once(
            times in proptest::collection::vec(0i64..1_000, 1..80),
            cuts in proptest::collection::vec(1usize..10, 1..20),
            quiet in proptest::collection::vec(proptest::bool::ANY, 1..20),
        ) {
            let config = WindowConfig { sizes_secs: vec![60, 300], allowed_lateness_secs: 30, max_out_of_order_secs: 10, idle_close_secs: 0 };
            let mut state = WindowState::default();
            let mut parts: Vec<SpendWindow> = Vec::new();
            let mut calls: Vec<EnrichedLlmCall> = times.iter().enumerate().map(|(i, t)| enriched(&i.to_string(), *t, "m", Some(1))).collect();
            calls.push(enriched("closer", 100_000, "m", Some(1)));
            let mut cut = cuts.iter().cycle();
            let mut quiet = quiet.iter().cycle();
            let mut offset = 0i64;
            let mut idle_transactions = 0i64;
            for chunk in calls.chunks(*cut.next().unwrap()) {
                for call in chunk {
                    apply(&config, &mut state, call);
                }
                parts.extend(take_parts(&mut state, 0, offset, 0));
                offset += chunk.len() as i64;
                // The partition goes quiet between some transactions: all its windows close,
                // in a transaction of their own (a negative offset); later calls reopen them.
                if *quiet.next().unwrap() && chunk.last().unwrap().call.event_id != "closer" {
                    idle_transactions += 1;
                    close_all(&mut state);
                    parts.extend(take_parts(&mut state, 0, -idle_transactions, 0));
                }
            }
            let mut ids = std::collections::BTreeSet::new();
            for part in &parts {
                let identity = (part.window_seconds, part.window_start, part.dimension.to_string(), part.dimension_value.clone(), part.source_offset);
                proptest::prop_assert!(ids.insert(identity), "one part per window and transaction");
            }
            for &size in &config.sizes_secs {
                let windowed: i64 = parts.iter().filter(|w| w.window_seconds == size && w.dimension == SpendDimension::Model).map(|w| w.calls).sum();
                // The closer's own windows are still open; every other call is in a part.
                proptest::prop_assert_eq!(windowed, times.len() as i64, "size {}", size);
            }
        }
    }

    #[test]
    fn names_of_closed_windows_are_let_go() {
        let config = minute_only();
        let mut state = WindowState::default();
        // 20,000 users, one call each, a minute apart: each window closes soon after.
        for n in 0..20_000i64 {
            let mut call = enriched(&format!("e{n}"), n * 60, "gpt-4o", Some(1));
            call.call.user = Some(format!("user-{n}"));
            apply(&config, &mut state, &call);
            take_parts(&mut state, 0, n, 0);
            state.clear_changes(); // as the changelog's writer does per transaction
                                   // At most twice the live names (or 1,024) and what one call adds.
            assert!(
                state.windows.names_held() <= 2 * 512 + 5,
                "{} names held",
                state.windows.names_held()
            );
        }
        let open: std::collections::BTreeSet<String> = state
            .windows
            .keys()
            .map(|k| k.dimension_value.to_string())
            .collect();
        assert_eq!(
            open,
            std::collections::BTreeSet::from(
                ["gpt-4o", "refund-triage", "user-19999"].map(String::from)
            ),
            "the last call's windows are open"
        );
    }

    #[test]
    fn state_survives_a_json_round_trip() {
        let config = minute_only();
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 10, "m", Some(5)));
        // What changed is for the changelog writer, not part of the state.
        state.clear_changes();
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<WindowState>(&json).unwrap(), state);
    }

    #[test]
    fn out_of_order_events_within_the_delay_are_not_late() {
        let config = WindowConfig {
            sizes_secs: vec![60],
            allowed_lateness_secs: 0,
            max_out_of_order_secs: 10,
            idle_close_secs: 0,
        };
        let mut state = WindowState::default();
        apply(&config, &mut state, &enriched("a", 65, "m", Some(1))); // watermark 55
        let out = apply(&config, &mut state, &enriched("b", 50, "m", Some(2)));
        assert!(!out.late);
        assert!(model_parts(&mut state).is_empty());
        apply(&config, &mut state, &enriched("c", 75, "m", Some(4))); // watermark 65
        assert_eq!(model_parts(&mut state), [(0, 0, 1, 2)]);
    }
}
