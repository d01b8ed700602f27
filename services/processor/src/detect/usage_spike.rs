//! `usage_spike`: the tokens of a team's workflow (or agent, for calls without a workflow) in
//! the current bucket of `bucket_secs` above `multiplier` × its own baseline, and its calls
//! too (a session whose context grows spends more tokens per call at the same pace; that is
//! `context_growth`'s business, not a spike), with at least `min_calls` calls (a handful of
//! calls per bucket varies threefold by chance alone). Each baseline is
//! an exponentially weighted mean of its past active buckets (empty ones, nights and
//! weekends, are left out), trusted after `min_baseline_buckets`; a spiking bucket enters it
//! capped at `multiplier` × baseline, so a lasting new level is learnt without one burst
//! doubling the baseline. A bucket is checked on every call: it fires while the bucket is
//! still filling, not when it closes. Calls of one workflow come from many sessions, so they
//! arrive slightly out of order: the previous bucket stays open for late calls until the one
//! after the current starts; later calls are left out (counting them in the current bucket
//! would make a spike of every backlog read after an outage).
use serde::{Deserialize, Serialize};
use tally_contract::records::{EnrichedLlmCall, Micros};

use super::config::UsageSpikeConfig;
use super::episode::Episode;
use super::session::{Burn, Finding};
use crate::budgets::grouped;

/// Calls of one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub start: Micros,
    pub first_at: Micros,
    pub last_at: Micros,
    pub tokens: i64,
    pub burn: Burn,
    pub evidence: Vec<String>,
}

impl Bucket {
    fn new(start: Micros, at: Micros) -> Bucket {
        Bucket {
            start,
            first_at: at,
            last_at: at,
            tokens: 0,
            burn: Burn::default(),
            evidence: Vec::new(),
        }
    }

    fn add(&mut self, call: &EnrichedLlmCall, max_evidence: usize) {
        let burn = Burn::of(call);
        self.first_at = self.first_at.min(call.call.occurred_at);
        self.last_at = self.last_at.max(call.call.occurred_at);
        self.tokens += burn.tokens;
        self.burn.add(burn);
        if self.evidence.len() < max_evidence {
            self.evidence.push(call.call.event_id.clone());
        }
    }
}

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
    /// The bucket being filled, and the one before it (still open for late calls).
    pub current: Option<Bucket>,
    pub previous: Option<Bucket>,
    /// Mean tokens and calls per active bucket.
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
            current: None,
            previous: None,
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
        let length = config.bucket_secs * 1_000_000;
        let start = at - at.rem_euclid(length);
        self.last_at = self.last_at.max(at);
        let current_start = self.current.as_ref().map_or(Micros::MIN, |b| b.start);
        if start > current_start {
            self.roll(config, start, length, at);
        }
        [self.current.as_mut(), self.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|b| b.start == start)?
            .add(call, max_evidence);
        let bucket = [self.current.as_ref(), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|b| b.start == start)?;
        if !config.enabled || !self.is_spike(config, bucket) {
            return None;
        }
        let explanation = format!(
            "{} tokens in {} calls for {} in the {}-minute bucket from {}, {:.1}× its baseline \
             of {} tokens in {:.1} calls per bucket",
            grouped(bucket.tokens),
            bucket.burn.calls,
            self.scope,
            config.bucket_secs / 60,
            tally_contract::clock::rfc3339(bucket.start),
            bucket.tokens as f64 / self.baseline,
            grouped(self.baseline.round() as i64),
            self.baseline_calls
        );
        Some(Finding {
            first_at: bucket.first_at,
            last_at: bucket.last_at,
            evidence: bucket.evidence.clone(),
            burn: bucket.burn,
            explanation,
        })
    }

    /// Starts the bucket at `start`: the previous one goes into the baseline, and the
    /// current one becomes the previous (or goes into the baseline too, after a gap).
    fn roll(&mut self, config: &UsageSpikeConfig, start: Micros, length: Micros, at: Micros) {
        if let Some(previous) = self.previous.take() {
            self.fold(config, &previous);
        }
        match self.current.take() {
            Some(current) if current.start + length == start => self.previous = Some(current),
            Some(current) => self.fold(config, &current),
            None => {}
        }
        self.current = Some(Bucket::new(start, at));
    }

    fn is_spike(&self, config: &UsageSpikeConfig, bucket: &Bucket) -> bool {
        let calls = bucket.burn.calls;
        self.baseline_buckets >= config.min_baseline_buckets
            && bucket.tokens >= config.min_tokens
            && calls >= config.min_calls
            && bucket.tokens as f64 > config.multiplier * self.baseline
            && calls as f64 > config.multiplier * self.baseline_calls
    }

    /// Folds a finished bucket into the baseline.
    fn fold(&mut self, config: &UsageSpikeConfig, bucket: &Bucket) {
        if bucket.burn.calls == 0 {
            return;
        }
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
        self.baseline = fold(self.baseline, bucket.tokens as f64);
        self.baseline_calls = fold(self.baseline_calls, bucket.burn.calls as f64);
        self.baseline_buckets += 1;
    }
}
