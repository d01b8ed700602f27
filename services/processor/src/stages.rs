//! The processor's stages, each run exactly once by [`crate::pipeline`]:
//!
//! 1. `enrich`: `tally.llm_calls.v1` → `tally.llm_calls_enriched.v1` (keyed `tenant/team`, so
//!    a team's calls, and each of its sessions in order, are on one partition). It drops a call
//!    whose event id it has seen ([`crate::dedup`]); the ids go to the compacted changelog
//!    `tally.dedup_state.v1`, one record per transaction, deleted once they left the window.
//! 2. `aggregate`: `tally.llm_calls_enriched.v1` → `tally.spend_windows.v1` and
//!    `tally.alerts.v1`. Its state (open windows, watermark, budgets) is per input partition and
//!    is written, in the same transaction as the outputs, to the compacted changelog topic
//!    `tally.processor_state.v1`, a record per piece that changed ([`crate::aggregate_state`]);
//!    on every assignment it is read back from there before any record is processed.
//! 3. `detect`: `tally.llm_calls_enriched.v1` → `tally.loop_signals.v1` and `tally.alerts.v1`
//!    ([`crate::detect`]). Its state (sessions, workflow rates, watermark) goes to the
//!    compacted changelog `tally.detector_state.v1` one record per session or workflow,
//!    keyed by it, written only when it changed (a tombstone when it is forgotten).
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::detect::{Detector, Emission};
use rdkafka::message::{Message, OwnedMessage};
use serde::{Deserialize, Serialize};
use tally_contract::clock::now_micros;
use tally_contract::decode;
use tally_contract::records::{EnrichedLlmCall, LlmCall, Micros};
use tally_contract::topics::Topic;

use crate::aggregate_state;
use crate::budgets::{self, BudgetState};
use crate::changelog;
use crate::dedup::Seen;
use crate::pipeline::{Changelogs, Outputs, Stage, Stats};
use crate::windows::{self, WindowState};
use crate::{ProcessorConfig, ProcessorError};
use tally_accounting::enrich::Enricher;

use std::sync::atomic::Ordering;

/// Base name of the aggregate stage's changelog topic (the deployment prefix goes before it).
pub const STATE_TOPIC: &str = "tally.processor_state.v1";
/// Base name of the detect stage's changelog topic.
pub const DETECT_STATE_TOPIC: &str = "tally.detector_state.v1";
/// Base name of the enrich stage's changelog topic: the event ids it has seen.
pub const DEDUP_STATE_TOPIC: &str = "tally.dedup_state.v1";

/// Why a record is not processed: a dead letter (damaged, or inconsistent), or a record of a
/// newer schema version, before which the stage stops.
enum Failure {
    Letter(&'static str, String),
    Newer(ProcessorError),
}

/// A decode failure as what to do about it: a schema registry that did not answer is asked
/// again (the session starts again from the committed offsets), a record of an unknown
/// version stops the stage before it, anything else is a dead letter.
fn stop_on_newer(message: &OwnedMessage, error: tally_contract::ContractError) -> Failure {
    if error.is_transient() {
        Failure::Newer(ProcessorError::Contract(error))
    } else if error.is_unknown_version() {
        Failure::Newer(ProcessorError::NewerRecord {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            reason: error.to_string(),
        })
    } else {
        Failure::Letter("decode", error.to_string())
    }
}

/// Stage 1: drop repeats, price and carbon-rate every call.
pub struct EnrichStage {
    pub enricher: Enricher,
    /// The event ids each input partition has seen ([`crate::dedup`]).
    pub seen: HashMap<i32, Seen>,
}

impl EnrichStage {
    /// A stage with nothing seen yet.
    pub fn new(enricher: Enricher) -> EnrichStage {
        EnrichStage {
            enricher,
            seen: HashMap::new(),
        }
    }
}

impl Stage for EnrichStage {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn input(&self, config: &ProcessorConfig) -> String {
        config.kafka.topic(Topic::LlmCalls)
    }

    fn on_assignment(
        &mut self,
        partitions: &[i32],
        config: &ProcessorConfig,
        changelogs: &dyn Changelogs,
    ) -> Result<(), ProcessorError> {
        self.seen.clear();
        if partitions.is_empty() {
            return Ok(());
        }
        let topic = changelog::topic_name(config, DEDUP_STATE_TOPIC);
        changelogs.ensure(config, &topic, &self.input(config))?;
        let seen = &mut self.seen;
        changelogs.read(
            config,
            &topic,
            partitions,
            &mut |partition, offset, key, value| {
                let key = String::from_utf8_lossy(key);
                seen.entry(partition)
                    .or_default()
                    .restore(&config.dedup, &key, value)
                    .map_err(|e| ProcessorError::BadState {
                        changelog: format!(
                            "changelog {topic} partition {partition} offset {offset} (key {key})"
                        ),
                        reason: format!("not dedup state: {e}"),
                    })
            },
        )?;
        let ids: usize = self.seen.values().map(Seen::len).sum();
        tracing::info!(?partitions, ids, "dedup state restored from the changelog");
        Ok(())
    }

    fn process(
        &mut self,
        batch: &[OwnedMessage],
        out: &Outputs<'_>,
        stats: &Stats,
    ) -> Result<(), ProcessorError> {
        let dedup = &out.config().dedup;
        let mut first_offsets: HashMap<i32, i64> = HashMap::new();
        for message in batch {
            let partition = message.partition();
            first_offsets.entry(partition).or_insert(message.offset());
            let seen = self.seen.entry(partition).or_default();
            let enriched = decode::<LlmCall>(message.payload().unwrap_or_default())
                .map_err(|e| stop_on_newer(message, e))
                .and_then(|call| {
                    if !seen.first_time(dedup, &call) {
                        return Ok(None);
                    }
                    self.enricher
                        .enrich(call, out.now())
                        .map(Some)
                        .map_err(|e| Failure::Letter("invalid", e.0))
                });
            let enriched = match enriched {
                Ok(None) => {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(Some(enriched)) => Ok(enriched),
                Err(Failure::Newer(error)) => return Err(error),
                Err(Failure::Letter(kind, reason)) => Err((kind, reason)),
            };
            match enriched {
                Ok(enriched) => {
                    let key = format!("{}/{}", enriched.call.tenant, enriched.call.team);
                    out.record(Topic::LlmCallsEnriched, &key, &enriched)?;
                    stats.enriched.fetch_add(1, Ordering::Relaxed);
                    if enriched.unpriced {
                        stats.unpriced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err((kind, reason)) => {
                    out.dead_letter(message, kind, reason)?;
                    stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // The ids this transaction saw go to the changelog with its outputs.
        let topic = changelog::topic_name(out.config(), DEDUP_STATE_TOPIC);
        for (partition, first_offset) in first_offsets {
            let seen = self.seen.entry(partition).or_default();
            let forgotten = std::mem::take(&mut seen.forgotten);
            stats
                .dedup_forgotten
                .fetch_add(forgotten, Ordering::Relaxed);
            let writes = seen.changelog(dedup, first_offset);
            for (key, bytes) in &writes.put {
                out.raw(&topic, Some(partition), key.as_bytes(), Some(bytes))?;
            }
            for key in &writes.delete {
                out.raw(&topic, Some(partition), key.as_bytes(), None)?;
            }
        }
        Ok(())
    }
}

/// The aggregate stage's state of one input partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub windows: WindowState,
    pub budgets: BudgetState,
    /// Business-metric totals ([`crate::business`]).
    #[serde(default)]
    pub business: crate::business::BusinessState,
}

/// Stage 2: spend windows, budgets and usage reviews.
#[derive(Default)]
pub struct AggregateStage {
    pub state: HashMap<i32, PartitionState>,
    /// Keys of whole-partition snapshots (the earlier changelog format) to delete.
    legacy: Vec<(i32, String)>,
    /// When each partition last had a record (or was assigned): a partition quiet for
    /// `windows.idle_close_secs` closes its open windows.
    last_input: HashMap<i32, Instant>,
    /// `windows.idle_close_secs`, as the stage last saw it (0: never).
    idle_close: Option<Duration>,
    /// Partitions changed since the business metrics last showed them.
    unpublished: BTreeSet<i32>,
}

impl AggregateStage {
    fn state_topic(config: &ProcessorConfig) -> String {
        changelog::topic_name(config, STATE_TOPIC)
    }

    /// Partitions quiet for `idle_close_secs` that hold open windows.
    fn quiet_partitions(&self) -> Vec<i32> {
        let Some(idle_close) = self.idle_close else {
            return Vec::new();
        };
        let mut quiet: Vec<i32> = self
            .state
            .iter()
            .filter(|(_, state)| windows::has_open(&state.windows))
            .filter(|(partition, _)| {
                self.last_input
                    .get(partition)
                    .is_some_and(|since| since.elapsed() >= idle_close)
            })
            .map(|(partition, _)| *partition)
            .collect();
        quiet.sort_unstable();
        quiet
    }

    /// Writes what changed in a partition's state to the changelog.
    fn write_changes(&mut self, partition: i32, out: &Outputs<'_>) -> Result<(), ProcessorError> {
        let topic = Self::state_topic(out.config());
        let state = self.state.get_mut(&partition).expect("a known partition");
        for (key, value) in aggregate_state::take_changes(state) {
            out.raw(&topic, Some(partition), key.as_bytes(), value.as_deref())?;
        }
        Ok(())
    }
}

impl Stage for AggregateStage {
    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn input(&self, config: &ProcessorConfig) -> String {
        config.kafka.topic(Topic::LlmCallsEnriched)
    }

    fn on_assignment(
        &mut self,
        partitions: &[i32],
        config: &ProcessorConfig,
        changelogs: &dyn Changelogs,
    ) -> Result<(), ProcessorError> {
        self.state.clear();
        self.last_input.clear();
        self.unpublished = partitions.iter().copied().collect();
        self.idle_close = (config.windows.idle_close_secs > 0)
            .then(|| Duration::from_secs(config.windows.idle_close_secs));
        if partitions.is_empty() {
            return Ok(());
        }
        let topic = Self::state_topic(config);
        changelogs.ensure(config, &topic, &self.input(config))?;
        let (state, snapshots) = restore(config, changelogs, &topic, partitions)?;
        self.state = state;
        // A whole-partition snapshot of the earlier format: written again per piece with the
        // next transaction, and deleted then.
        for (partition, key) in snapshots {
            if let Some(state) = self.state.get_mut(&partition) {
                aggregate_state::mark_all(state);
            }
            self.legacy.push((partition, key));
        }
        for state in self.state.values_mut() {
            state.budgets.adopt(&config.budgets);
        }
        // A restored partition that stays quiet closes its windows too.
        let assigned = Instant::now();
        for partition in self.state.keys() {
            self.last_input.insert(*partition, assigned);
        }
        for (partition, state) in &self.state {
            let calls: i64 = state
                .windows
                .windows
                .iter()
                .filter(|(k, _)| k.window_seconds == 86_400 && &*k.dimension == "model")
                .map(|(_, t)| t.calls)
                .sum();
            tracing::debug!(
                partition,
                watermark = state.windows.watermark,
                calls,
                "restored partition state"
            );
        }
        tracing::info!(
            ?partitions,
            restored = self.state.len(),
            "aggregate state restored from the changelog"
        );
        Ok(())
    }

    fn process(
        &mut self,
        batch: &[OwnedMessage],
        out: &Outputs<'_>,
        stats: &Stats,
    ) -> Result<(), ProcessorError> {
        let mut touched = Vec::new();
        let mut first_offsets: Vec<(i32, i64)> = Vec::new();
        for message in batch {
            let partition = message.partition();
            if !first_offsets.iter().any(|(p, _)| *p == partition) {
                first_offsets.push((partition, message.offset()));
            }
            let call = match decode::<EnrichedLlmCall>(message.payload().unwrap_or_default()) {
                Ok(call) => call,
                Err(e) => match stop_on_newer(message, e) {
                    Failure::Newer(error) => return Err(error),
                    Failure::Letter(kind, reason) => {
                        out.dead_letter(message, kind, reason)?;
                        stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                },
            };
            let state = self.state.entry(partition).or_default();
            if !touched.contains(&partition) {
                touched.push(partition);
                self.last_input.insert(partition, Instant::now());
            }
            let key = format!("{}/{}", call.call.tenant, call.call.team);
            state
                .business
                .add(&call, out.config().business_metrics_max_series);
            let windowed = windows::apply(&out.config().windows, &mut state.windows, &call);
            if windowed.late {
                stats.late_events.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(event_id = %call.call.event_id, "after a window's close: in a late part");
            }
            let config = out.config();
            let budgeted = budgets::apply(
                &config.budgets,
                &config.roles,
                &mut state.budgets,
                &call,
                out.now(),
            );
            if budgeted.late {
                stats.late_for_budgets.fetch_add(1, Ordering::Relaxed);
            }
            for alert in budgeted.alerts {
                out.record(Topic::Alerts, &key, &alert)?;
                stats.alerts.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Each partition's parts of this transaction, named by its first offset.
        for (partition, first_offset) in &first_offsets {
            let state = self.state.entry(*partition).or_default();
            let parts =
                windows::take_parts(&mut state.windows, *partition, *first_offset, out.now());
            for part in &parts {
                let key = format!("{}/{}", part.tenant, part.team);
                out.record(Topic::SpendWindows, &key, part)?;
            }
            stats
                .windows_emitted
                .fetch_add(parts.len() as u64, Ordering::Relaxed);
        }
        // What changed, per piece, in the same transaction.
        for partition in touched {
            self.write_changes(partition, out)?;
            self.unpublished.insert(partition);
        }
        let topic = Self::state_topic(out.config());
        for (partition, key) in std::mem::take(&mut self.legacy) {
            out.raw(&topic, Some(partition), key.as_bytes(), None)?;
        }
        Ok(())
    }

    fn wants_idle(&self) -> bool {
        !self.quiet_partitions().is_empty()
    }

    fn publish(&mut self, config: &ProcessorConfig, stats: &Stats) {
        let changed = std::mem::take(&mut self.unpublished);
        let mut snapshot = stats
            .business
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        snapshot
            .aggregate
            .retain(|partition, _| self.state.contains_key(partition));
        let now = now_micros();
        for partition in changed {
            if let Some(state) = self.state.get(&partition) {
                let metrics = business_metrics(state, &config.budgets, now);
                snapshot.aggregate.insert(partition, metrics);
            }
        }
    }

    /// Closes the open windows of each quiet partition. Their parts are known by the
    /// partition and minus the wall-clock micros of this transaction (no input offset names
    /// it; negative offsets never meet those of transactions with input).
    fn on_idle(&mut self, out: &Outputs<'_>, stats: &Stats) -> Result<(), ProcessorError> {
        for partition in self.quiet_partitions() {
            let state = self.state.get_mut(&partition).expect("listed");
            windows::close_all(&mut state.windows);
            let parts = windows::take_parts(&mut state.windows, partition, -out.now(), out.now());
            for part in &parts {
                let key = format!("{}/{}", part.tenant, part.team);
                out.record(Topic::SpendWindows, &key, part)?;
            }
            stats
                .windows_emitted
                .fetch_add(parts.len() as u64, Ordering::Relaxed);
            self.write_changes(partition, out)?;
            tracing::debug!(
                partition,
                parts = parts.len(),
                "quiet partition: its open windows closed"
            );
        }
        Ok(())
    }
}

/// What one partition's state shows in the business metrics: its totals, and each
/// budget's spend in the period holding `now`.
fn business_metrics(
    state: &PartitionState,
    budgets: &[budgets::BudgetConfig],
    now: Micros,
) -> crate::business::PartitionMetrics {
    let spends = budgets
        .iter()
        .map(|budget| {
            let (start, _) = budgets::period_bounds(budget.period, now);
            crate::business::BudgetSpend {
                budget: budget.name.clone(),
                tenant: budget.tenant.clone(),
                team: budget.team.clone(),
                amount_nanos: budget.amount_usd.round_scaled_wide(9).unwrap_or(i128::MAX),
                spent_nanos: state
                    .budgets
                    .spent_by_budget
                    .get(&(budget.name.clone(), start))
                    .copied()
                    .unwrap_or(0),
            }
        })
        .collect();
    crate::business::PartitionMetrics {
        totals: state.business.totals.clone(),
        budgets: spends,
    }
}

/// Stage 3: runaway-agent detection.
#[derive(Default)]
pub struct DetectStage {
    pub state: HashMap<i32, Detector>,
    /// When each partition last had a record, and its watermark then: a partition that goes
    /// quiet moves its watermark on with the wall clock, so a loop that stopped resolves
    /// even when nothing else arrives on its partition.
    last_input: HashMap<i32, (Instant, Micros)>,
    /// Partitions changed since the business metrics last showed them.
    unpublished: BTreeSet<i32>,
}

/// How long a partition must be quiet before its watermark follows the wall clock.
const IDLE_AFTER: Duration = Duration::from_secs(1);

impl DetectStage {
    /// Partitions quiet for [`IDLE_AFTER`] with signals open: their watermark now.
    fn idle_watermarks(&self) -> Vec<(i32, Micros)> {
        self.state
            .iter()
            .filter(|(_, detector)| detector.open_signals() > 0)
            .filter_map(|(partition, _)| {
                let (since, watermark) = self.last_input.get(partition)?;
                let quiet = since.elapsed();
                (quiet >= IDLE_AFTER).then(|| (*partition, watermark + quiet.as_micros() as Micros))
            })
            .collect()
    }

    fn produce(
        out: &Outputs<'_>,
        emissions: Vec<Emission>,
        stats: &Stats,
    ) -> Result<(), ProcessorError> {
        for emission in emissions {
            let key = format!("{}/{}", emission.signal.tenant, emission.signal.team);
            out.record(Topic::LoopSignals, &key, &emission.signal)?;
            stats.loop_signals.fetch_add(1, Ordering::Relaxed);
            if let Some(alert) = &emission.alert {
                out.record(Topic::Alerts, &key, alert)?;
                stats.alerts.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl Stage for DetectStage {
    fn name(&self) -> &'static str {
        "detect"
    }

    fn input(&self, config: &ProcessorConfig) -> String {
        config.kafka.topic(Topic::LlmCallsEnriched)
    }

    fn on_assignment(
        &mut self,
        partitions: &[i32],
        config: &ProcessorConfig,
        changelogs: &dyn Changelogs,
    ) -> Result<(), ProcessorError> {
        self.state.clear();
        self.unpublished = partitions.iter().copied().collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let topic = changelog::topic_name(config, DETECT_STATE_TOPIC);
        changelogs.ensure(config, &topic, &self.input(config))?;
        let state = &mut self.state;
        changelogs.read(
            config,
            &topic,
            partitions,
            &mut |partition, offset, key, value| {
                let key = String::from_utf8_lossy(key);
                state
                    .entry(partition)
                    .or_default()
                    .restore(&key, value)
                    .map_err(|e| ProcessorError::BadState {
                        changelog: format!(
                            "changelog {topic} partition {partition} offset {offset} (key {key})"
                        ),
                        reason: format!("not detector state: {e}"),
                    })
            },
        )?;
        self.last_input = self
            .state
            .iter()
            .map(|(partition, detector)| (*partition, (Instant::now(), detector.watermark)))
            .collect();
        let sessions: usize = self.state.values().map(|d| d.sessions.len()).sum();
        let open: usize = self.state.values().map(Detector::open_signals).sum();
        tracing::info!(
            ?partitions,
            sessions,
            open_signals = open,
            "detector state restored from the changelog"
        );
        Ok(())
    }

    fn process(
        &mut self,
        batch: &[OwnedMessage],
        out: &Outputs<'_>,
        stats: &Stats,
    ) -> Result<(), ProcessorError> {
        let config = &out.config().detect;
        let mut touched = Vec::new();
        for message in batch {
            let call = match decode::<EnrichedLlmCall>(message.payload().unwrap_or_default()) {
                Ok(call) => call,
                Err(e) => match stop_on_newer(message, e) {
                    Failure::Newer(error) => return Err(error),
                    Failure::Letter(kind, reason) => {
                        out.dead_letter(message, kind, reason)?;
                        stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                },
            };
            let partition = message.partition();
            if !touched.contains(&partition) {
                touched.push(partition);
            }
            let detector = self.state.entry(partition).or_default();
            let emissions = detector.observe(config, &call, out.now());
            Self::produce(out, emissions, stats)?;
        }
        for partition in touched {
            let detector = self.state.get_mut(&partition).expect("touched above");
            let resolved = detector.advance(config, out.now());
            self.last_input
                .insert(partition, (Instant::now(), detector.watermark));
            Self::produce(out, resolved, stats)?;
            self.write_changes(partition, out)?;
        }
        Ok(())
    }

    fn wants_idle(&self) -> bool {
        !self.idle_watermarks().is_empty()
    }

    fn publish(&mut self, _config: &ProcessorConfig, stats: &Stats) {
        let changed = std::mem::take(&mut self.unpublished);
        let mut snapshot = stats
            .business
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        snapshot
            .open_signals
            .retain(|partition, _| self.state.contains_key(partition));
        for partition in changed {
            if let Some(detector) = self.state.get(&partition) {
                snapshot
                    .open_signals
                    .insert(partition, detector.open_signals_by_type());
            }
        }
    }

    fn on_idle(&mut self, out: &Outputs<'_>, stats: &Stats) -> Result<(), ProcessorError> {
        for (partition, watermark) in self.idle_watermarks() {
            let detector = self.state.get_mut(&partition).expect("listed above");
            let resolved = detector.advance_to(&out.config().detect, watermark, out.now());
            Self::produce(out, resolved, stats)?;
            self.write_changes(partition, out)?;
        }
        Ok(())
    }
}

impl DetectStage {
    /// Writes what changed in a partition's detector to the changelog.
    fn write_changes(&mut self, partition: i32, out: &Outputs<'_>) -> Result<(), ProcessorError> {
        self.unpublished.insert(partition);
        let topic = changelog::topic_name(out.config(), DETECT_STATE_TOPIC);
        let detector = self.state.get_mut(&partition).expect("a known partition");
        let changes = detector
            .take_changes()
            .map_err(|e| ProcessorError::StateEncoding(format!("detector state: {e}")))?;
        for (key, value) in changes {
            out.raw(&topic, Some(partition), key.as_bytes(), value.as_deref())?;
        }
        Ok(())
    }
}

/// Reads the latest committed snapshot of each partition from the aggregate changelog.
/// Restored partition states, and the keys of whole-partition snapshots among the records.
type Restored = (HashMap<i32, PartitionState>, Vec<(i32, String)>);

fn restore(
    config: &ProcessorConfig,
    changelogs: &dyn Changelogs,
    topic: &str,
    partitions: &[i32],
) -> Result<Restored, ProcessorError> {
    let mut state: HashMap<i32, PartitionState> = HashMap::new();
    let mut snapshots = Vec::new();
    changelogs.read(
        config,
        topic,
        partitions,
        &mut |partition, offset, key, payload| {
            let key = String::from_utf8_lossy(key);
            let whole =
                aggregate_state::restore(state.entry(partition).or_default(), &key, payload)
                    .map_err(|e| ProcessorError::BadState {
                        changelog: format!(
                            "changelog {topic} partition {partition} offset {offset}"
                        ),
                        reason: e.to_string(),
                    })?;
            if whole && payload.is_some() {
                snapshots.push((partition, key.into_owned()));
            }
            Ok(())
        },
    )?;
    Ok((state, snapshots))
}
