//! `usage_spike`: the tokens of a team's workflow (or agent, for calls without a workflow) in
//! the current bucket of `bucket_secs` above `multiplier` × its own baseline, and its calls
//! too (a session whose context grows spends more tokens per call at the same pace; that is
//! `context_growth`'s business, not a spike), with at least `min_calls` calls (a handful of
//! calls per bucket varies threefold by chance alone). Each baseline is
//! an exponentially weighted mean of its past active buckets (empty ones, nights and
//! weekends, are left out), trusted after `min_baseline_buckets`; a spiking bucket enters it
//! capped at `multiplier` × baseline, so a lasting new level is learnt without one burst
//! doubling the baseline. The current bucket is checked on every call: it fires while the
//! bucket is still filling, not when it closes.
use serde::{Deserialize, Serialize};
use tally_contract::records::{EnrichedLlmCall, Micros};

use super::config::UsageSpikeConfig;
use super::episode::Episode;
use super::session::{grouped, Burn, Finding};

/// The rate and baseline of one team workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpikeState {
    pub tenant: String,
    pub team: String,
    pub workflow: Option<String>,
    pub agent: Option<String>,
    /// What the key names: `workflow <w>`, `agent <a>` or `all work`.
    pub scope: String,
    pub last_at: Micros,
    pub bucket_start: Micros,
    pub bucket_first_at: Micros,
    pub bucket_tokens: i64,
    pub bucket_burn: Burn,
    pub bucket_evidence: Vec<String>,
    pub baseline: f64,
    pub baseline_calls: f64,
    pub baseline_buckets: u32,
    /// The open spike signal, if any.
    pub episode: Option<Episode>,
}

/// The key of a call's workflow state, `<tenant>/<team>/<scope>`, and its scope.
pub fn key(call: &EnrichedLlmCall) -> (String, String) {
    let c = &call.call;
    let scope = match (&c.workflow, &c.agent) {
        (Some(w), _) => format!("workflow {w}"),
        (None, Some(a)) => format!("agent {a}"),
        (None, None) => "all work".to_string(),
    };
    (format!("{}/{}/{scope}", c.tenant, c.team), scope)
}

impl SpikeState {
    /// A new state for this call's workflow.
    pub fn new(call: &EnrichedLlmCall, scope: String) -> SpikeState {
        let c = &call.call;
        SpikeState {
            tenant: c.tenant.clone(),
            team: c.team.clone(),
            workflow: c.workflow.clone(),
            agent: if c.workflow.is_none() {
                c.agent.clone()
            } else {
                None
            },
            scope,
            last_at: c.occurred_at,
            bucket_start: Micros::MIN,
            bucket_first_at: c.occurred_at,
            bucket_tokens: 0,
            bucket_burn: Burn::default(),
            bucket_evidence: Vec::new(),
            baseline: 0.0,
            baseline_calls: 0.0,
            baseline_buckets: 0,
            episode: None,
        }
    }

    /// Counts a call; a finding when its bucket is a spike.
    pub fn observe(
        &mut self,
        config: &UsageSpikeConfig,
        call: &EnrichedLlmCall,
        max_evidence: usize,
    ) -> Option<Finding> {
        let at = call.call.occurred_at;
        let bucket_micros = config.bucket_secs * 1_000_000;
        let bucket = at - at.rem_euclid(bucket_micros);
        self.last_at = self.last_at.max(at);
        if bucket < self.bucket_start {
            // Late for its bucket, which is already in the baseline.
            return None;
        }
        if bucket > self.bucket_start {
            self.close_bucket(config);
            self.bucket_start = bucket;
            self.bucket_first_at = at;
        }
        let burn = Burn::of(call);
        self.bucket_tokens += burn.tokens;
        self.bucket_burn.add(burn);
        if self.bucket_evidence.len() < max_evidence {
            self.bucket_evidence.push(call.call.event_id.clone());
        }
        if !config.enabled || !self.is_spike(config) {
            return None;
        }
        let explanation = format!(
            "{} tokens in {} calls for {} in the current {}-minute bucket, {:.1}× its baseline \
             of {} tokens in {:.1} calls per bucket",
            grouped(self.bucket_tokens),
            self.bucket_burn.calls,
            self.scope,
            config.bucket_secs / 60,
            self.bucket_tokens as f64 / self.baseline,
            grouped(self.baseline.round() as i64),
            self.baseline_calls
        );
        Some(Finding {
            first_at: self.bucket_first_at,
            last_at: self.last_at,
            evidence: self.bucket_evidence.clone(),
            burn: self.bucket_burn,
            explanation,
        })
    }

    fn is_spike(&self, config: &UsageSpikeConfig) -> bool {
        let calls = self.bucket_burn.calls;
        self.baseline_buckets >= config.min_baseline_buckets
            && self.bucket_tokens >= config.min_tokens
            && calls >= config.min_calls
            && self.bucket_tokens as f64 > config.multiplier * self.baseline
            && calls as f64 > config.multiplier * self.baseline_calls
    }

    /// Folds the finished bucket, if it had calls, into the baseline.
    fn close_bucket(&mut self, config: &UsageSpikeConfig) {
        if self.bucket_tokens > 0 {
            let trusted = self.baseline_buckets >= config.min_baseline_buckets;
            let first = self.baseline_buckets == 0;
            let alpha = 2.0 / (f64::from(config.baseline_buckets) + 1.0);
            let fold = |baseline: f64, value: f64| {
                let value = if trusted {
                    value.min(config.multiplier * baseline)
                } else {
                    value
                };
                if first {
                    value
                } else {
                    baseline + alpha * (value - baseline)
                }
            };
            self.baseline = fold(self.baseline, self.bucket_tokens as f64);
            self.baseline_calls = fold(self.baseline_calls, self.bucket_burn.calls as f64);
            self.baseline_buckets += 1;
        }
        self.bucket_tokens = 0;
        self.bucket_burn = Burn::default();
        self.bucket_evidence.clear();
    }
}
