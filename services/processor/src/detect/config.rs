//! Settings of the loop detectors (`[detect]` in the processor's config): one block per
//! signal, and overrides per team and/or workflow.
use serde::{Deserialize, Serialize};

use tally_accounting::decimal::Decimal;

/// Settings of the `detect` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Run the detectors (the `detect` stage) in `tally process`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Calls with neither `session_id` nor `trace_id` are grouped by user × agent; such a
    /// group starts a new session after this many quiet seconds.
    #[serde(default = "default_session_gap_secs")]
    pub session_gap_secs: i64,
    /// A signal resolves after this many seconds (event time) without a call that continues it.
    #[serde(default = "default_quiet_period_secs")]
    pub quiet_period_secs: i64,
    /// An open signal is re-emitted (`state = update`) at most this often, seconds of event
    /// time; opening, escalation and resolution are emitted at once.
    #[serde(default = "default_update_interval_secs")]
    pub update_interval_secs: i64,
    /// Most event ids a signal carries as evidence (`evidence_calls` counts them all).
    #[serde(default = "default_max_evidence")]
    pub max_evidence: usize,
    /// A signal turns critical once the calls of its loop cost this much, US dollars (a
    /// string keeps it exact: "5")...
    #[serde(default = "default_critical_cost_usd")]
    pub critical_cost_usd: Decimal,
    /// ...or once it has lasted this many seconds.
    #[serde(default = "default_critical_after_secs")]
    pub critical_after_secs: i64,
    /// Thresholds that apply where no override matches.
    #[serde(flatten)]
    pub signals: SignalSettings,
    /// Thresholds for some teams and/or workflows. The most specific match wins (team and
    /// workflow, then workflow, then team); a block given in an override replaces that
    /// signal's block, and a field it leaves out takes the default, not the global value.
    #[serde(default)]
    pub overrides: Vec<DetectOverride>,
}

/// The thresholds of all six signals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSettings {
    /// More than N consecutive failed or identical attempts.
    #[serde(default)]
    pub retry_storm: RetryStormConfig,
    /// The same tool with the same arguments again and again.
    #[serde(default)]
    pub repeated_tool_call: RepeatedToolCallConfig,
    /// A repeating sequence of (agent, tool) states: A→B→A→B…
    #[serde(default)]
    pub cycle: CycleConfig,
    /// Input tokens per call growing fast while little is read from cache.
    #[serde(default)]
    pub context_growth: ContextGrowthConfig,
    /// Spending for hours with no human turn.
    #[serde(default)]
    pub idle_burn: IdleBurnConfig,
    /// A workflow's token rate far above its own trailing baseline.
    #[serde(default)]
    pub usage_spike: UsageSpikeConfig,
}

/// Thresholds for one team and/or workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectOverride {
    /// Team it applies to (any team when left out).
    #[serde(default)]
    pub team: Option<String>,
    /// Workflow it applies to (any workflow when left out).
    #[serde(default)]
    pub workflow: Option<String>,
    /// Signal blocks that replace the global ones for these calls.
    #[serde(default)]
    pub retry_storm: Option<RetryStormConfig>,
    /// See [`SignalSettings::repeated_tool_call`].
    #[serde(default)]
    pub repeated_tool_call: Option<RepeatedToolCallConfig>,
    /// See [`SignalSettings::cycle`].
    #[serde(default)]
    pub cycle: Option<CycleConfig>,
    /// See [`SignalSettings::context_growth`].
    #[serde(default)]
    pub context_growth: Option<ContextGrowthConfig>,
    /// See [`SignalSettings::idle_burn`].
    #[serde(default)]
    pub idle_burn: Option<IdleBurnConfig>,
    /// See [`SignalSettings::usage_spike`].
    #[serde(default)]
    pub usage_spike: Option<UsageSpikeConfig>,
}

/// `retry_storm`: a chain of consecutive calls in which each call either follows a failed
/// call or repeats the previous call's prompt fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryStormConfig {
    /// Whether this signal runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Attempts allowed; the signal opens on the attempt after them (default 5: the 6th).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
}

/// `repeated_tool_call`: the same `tool_name` with the same `tool_args_fingerprint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatedToolCallConfig {
    /// Whether this signal runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Identical tool calls that open the signal...
    #[serde(default = "default_min_repeats")]
    pub min_repeats: usize,
    /// ...within this many latest steps of the session.
    #[serde(default = "default_window_steps")]
    pub window_steps: usize,
}

/// `cycle`: the latest steps are one pattern of (agent, tool, tool arguments) states repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleConfig {
    /// Whether this signal runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Longest pattern looked for (patterns have 2 to this many steps).
    #[serde(default = "default_max_period")]
    pub max_period: usize,
    /// Times the pattern must repeat back to back.
    #[serde(default = "default_min_repeats")]
    pub min_repeats: usize,
}

/// `context_growth`: over the latest steps, input tokens per call rise fast (the fitted
/// growth per step, as a share of the steps' mean input, is high: spent tokens grow
/// quadratically with steps) while little of the input is read from cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextGrowthConfig {
    /// Whether this signal runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Steps the growth is fitted over.
    #[serde(default = "default_growth_window_steps")]
    pub window_steps: usize,
    /// Growth per step, as a share of the window's mean input tokens, that opens the signal.
    #[serde(default = "default_min_growth_per_step")]
    pub min_growth_per_step: f64,
    /// Share of the window's input tokens read from cache above which growth is not flagged
    /// (a cached prefix is cheap to re-read).
    #[serde(default = "default_max_cache_read_share")]
    pub max_cache_read_share: f64,
    /// Input tokens of the latest call below which growth is not flagged.
    #[serde(default = "default_min_input_tokens")]
    pub min_input_tokens: i64,
}

/// `idle_burn`: a session spending without a break for hours with no human turn, or
/// producing the same output again and again with no human turn. A call is a human turn when
/// tagged `interactive=true` or `origin=user`; every other call counts as autonomous.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleBurnConfig {
    /// Whether this signal runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds of autonomous spending that open the signal (default 2 h).
    #[serde(default = "default_max_autonomous_secs")]
    pub max_autonomous_secs: i64,
    /// A pause longer than this many seconds ends the stretch of spending.
    #[serde(default = "default_max_gap_secs")]
    pub max_gap_secs: i64,
    /// Autonomous calls in a row with the same `output_fingerprint` that open the signal too.
    #[serde(default = "default_max_identical_outputs")]
    pub max_identical_outputs: usize,
}

/// `usage_spike`: tokens and calls of a team's workflow (or agent, when calls carry no
/// workflow) in the current bucket above `multiplier` × its own trailing baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSpikeConfig {
    /// Whether this signal runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Length of a bucket, seconds.
    #[serde(default = "default_bucket_secs")]
    pub bucket_secs: i64,
    /// How far above the baseline a bucket must be.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// The baseline is an exponentially weighted mean over about this many active buckets.
    #[serde(default = "default_baseline_buckets")]
    pub baseline_buckets: u32,
    /// Active buckets seen before the baseline is trusted.
    #[serde(default = "default_min_baseline_buckets")]
    pub min_baseline_buckets: u32,
    /// Tokens a bucket must hold before it can be a spike...
    #[serde(default = "default_min_spike_tokens")]
    pub min_tokens: i64,
    /// ...and calls.
    #[serde(default = "default_min_spike_calls")]
    pub min_calls: i64,
}

/// Steps of history kept per session; windows longer than this are refused.
pub const HISTORY_STEPS: usize = 64;

fn yes() -> bool {
    true
}
fn default_session_gap_secs() -> i64 {
    1_800
}
fn default_quiet_period_secs() -> i64 {
    600
}
fn default_update_interval_secs() -> i64 {
    60
}
fn default_max_evidence() -> usize {
    20
}
fn default_critical_cost_usd() -> Decimal {
    Decimal::from_int(5)
}
fn default_critical_after_secs() -> i64 {
    1_800
}
fn default_max_attempts() -> usize {
    5
}
fn default_min_repeats() -> usize {
    3
}
fn default_window_steps() -> usize {
    20
}
fn default_max_period() -> usize {
    4
}
fn default_growth_window_steps() -> usize {
    8
}
fn default_min_growth_per_step() -> f64 {
    0.06
}
fn default_max_cache_read_share() -> f64 {
    0.5
}
fn default_min_input_tokens() -> i64 {
    32_000
}
fn default_max_autonomous_secs() -> i64 {
    7_200
}
fn default_max_gap_secs() -> i64 {
    900
}
fn default_max_identical_outputs() -> usize {
    5
}
fn default_bucket_secs() -> i64 {
    300
}
fn default_multiplier() -> f64 {
    3.0
}
fn default_baseline_buckets() -> u32 {
    24
}
fn default_min_baseline_buckets() -> u32 {
    12
}
fn default_min_spike_tokens() -> i64 {
    50_000
}
fn default_min_spike_calls() -> i64 {
    20
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_gap_secs: default_session_gap_secs(),
            quiet_period_secs: default_quiet_period_secs(),
            update_interval_secs: default_update_interval_secs(),
            max_evidence: default_max_evidence(),
            critical_cost_usd: default_critical_cost_usd(),
            critical_after_secs: default_critical_after_secs(),
            signals: SignalSettings::default(),
            overrides: Vec::new(),
        }
    }
}

impl Default for RetryStormConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: default_max_attempts(),
        }
    }
}

impl Default for RepeatedToolCallConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_repeats: default_min_repeats(),
            window_steps: default_window_steps(),
        }
    }
}

impl Default for CycleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_period: default_max_period(),
            min_repeats: default_min_repeats(),
        }
    }
}

impl Default for ContextGrowthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_steps: default_growth_window_steps(),
            min_growth_per_step: default_min_growth_per_step(),
            max_cache_read_share: default_max_cache_read_share(),
            min_input_tokens: default_min_input_tokens(),
        }
    }
}

impl Default for IdleBurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_autonomous_secs: default_max_autonomous_secs(),
            max_gap_secs: default_max_gap_secs(),
            max_identical_outputs: default_max_identical_outputs(),
        }
    }
}

impl Default for UsageSpikeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bucket_secs: default_bucket_secs(),
            multiplier: default_multiplier(),
            baseline_buckets: default_baseline_buckets(),
            min_baseline_buckets: default_min_baseline_buckets(),
            min_tokens: default_min_spike_tokens(),
            min_calls: default_min_spike_calls(),
        }
    }
}

impl DetectConfig {
    /// The thresholds for calls of this team and workflow: the most specific override, or
    /// the global settings.
    pub fn settings_for(&self, team: &str, workflow: Option<&str>) -> SignalSettings {
        let specificity = |o: &DetectOverride| -> Option<u8> {
            let team_ok = o.team.as_deref().is_none_or(|t| t == team);
            let workflow_ok = o.workflow.as_deref().is_none_or(|w| Some(w) == workflow);
            (team_ok && workflow_ok)
                .then_some(2 * u8::from(o.workflow.is_some()) + u8::from(o.team.is_some()))
        };
        let Some(best) = self
            .overrides
            .iter()
            .filter_map(|o| specificity(o).map(|s| (s, o)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, o)| o)
        else {
            return self.signals.clone();
        };
        let global = &self.signals;
        SignalSettings {
            retry_storm: best
                .retry_storm
                .clone()
                .unwrap_or(global.retry_storm.clone()),
            repeated_tool_call: best
                .repeated_tool_call
                .clone()
                .unwrap_or(global.repeated_tool_call.clone()),
            cycle: best.cycle.clone().unwrap_or(global.cycle.clone()),
            context_growth: best
                .context_growth
                .clone()
                .unwrap_or(global.context_growth.clone()),
            idle_burn: best.idle_burn.clone().unwrap_or(global.idle_burn.clone()),
            usage_spike: best
                .usage_spike
                .clone()
                .unwrap_or(global.usage_spike.clone()),
        }
    }

    /// Checks what the types cannot; every problem names its key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("detect.session_gap_secs", self.session_gap_secs),
            ("detect.quiet_period_secs", self.quiet_period_secs),
            ("detect.update_interval_secs", self.update_interval_secs),
            ("detect.critical_after_secs", self.critical_after_secs),
        ];
        for (key, value) in positive {
            if value <= 0 {
                return Err(format!("{key} must be at least 1, not {value}"));
            }
        }
        if self.max_evidence == 0 {
            return Err("detect.max_evidence must be at least 1".into());
        }
        if self.critical_cost_usd.is_negative() {
            return Err("detect.critical_cost_usd must not be negative".into());
        }
        self.signals.validate("detect")?;
        for (i, o) in self.overrides.iter().enumerate() {
            let at = format!("detect.overrides[{i}]");
            if o.team.is_none() && o.workflow.is_none() {
                return Err(format!("{at}: name a team, a workflow or both"));
            }
            let settings = SignalSettings {
                retry_storm: o.retry_storm.clone().unwrap_or_default(),
                repeated_tool_call: o.repeated_tool_call.clone().unwrap_or_default(),
                cycle: o.cycle.clone().unwrap_or_default(),
                context_growth: o.context_growth.clone().unwrap_or_default(),
                idle_burn: o.idle_burn.clone().unwrap_or_default(),
                usage_spike: o.usage_spike.clone().unwrap_or_default(),
            };
            settings.validate(&at)?;
        }
        Ok(())
    }
}

impl SignalSettings {
    fn validate(&self, at: &str) -> Result<(), String> {
        let fail = |key: &str, why: &str| Err(format!("{at}.{key} {why}"));
        if self.retry_storm.max_attempts == 0 {
            return fail("retry_storm.max_attempts", "must be at least 1");
        }
        if self.retry_storm.max_attempts >= HISTORY_STEPS {
            return fail("retry_storm.max_attempts", "must be below 64");
        }
        let repeated = &self.repeated_tool_call;
        if repeated.min_repeats < 2 || repeated.window_steps < repeated.min_repeats {
            return fail(
                "repeated_tool_call",
                "needs min_repeats >= 2 and window_steps >= min_repeats",
            );
        }
        if repeated.window_steps > HISTORY_STEPS {
            return fail("repeated_tool_call.window_steps", "must be at most 64");
        }
        let cycle = &self.cycle;
        if cycle.max_period < 2 || cycle.min_repeats < 2 {
            return fail("cycle", "needs max_period >= 2 and min_repeats >= 2");
        }
        if cycle.max_period * cycle.min_repeats > HISTORY_STEPS {
            return fail("cycle", "max_period x min_repeats must be at most 64 steps");
        }
        let growth = &self.context_growth;
        if growth.window_steps < 3 || growth.window_steps > HISTORY_STEPS {
            return fail("context_growth.window_steps", "must be between 3 and 64");
        }
        // NaN is refused too.
        if growth.min_growth_per_step.is_nan() || growth.min_growth_per_step <= 0.0 {
            return fail("context_growth.min_growth_per_step", "must be above 0");
        }
        if !(0.0..=1.0).contains(&growth.max_cache_read_share) {
            return fail(
                "context_growth.max_cache_read_share",
                "must be between 0 and 1",
            );
        }
        if self.idle_burn.max_autonomous_secs <= 0 || self.idle_burn.max_gap_secs <= 0 {
            return fail(
                "idle_burn",
                "needs max_autonomous_secs and max_gap_secs >= 1",
            );
        }
        let spike = &self.usage_spike;
        if spike.bucket_secs <= 0 || spike.baseline_buckets == 0 || spike.min_baseline_buckets == 0
        {
            return fail(
                "usage_spike",
                "needs bucket_secs, baseline_buckets and min_baseline_buckets >= 1",
            );
        }
        if spike.multiplier.is_nan() || spike.multiplier <= 1.0 {
            return fail("usage_spike.multiplier", "must be above 1");
        }
        Ok(())
    }
}
