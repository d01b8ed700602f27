//! Sessions: which calls belong together, and the latest steps of each that the checks read.
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tally_contract::records::{CallStatus, EnrichedLlmCall, Micros};

use super::config::HISTORY_STEPS;
use super::episode::Episode;

/// What a loop has burned: calls, tokens, money and CO2e.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burn {
    pub calls: i64,
    pub tokens: i64,
    pub cost_nanos: i64,
    pub unpriced_calls: i64,
    pub co2e_ug: i64,
}

impl Burn {
    /// The burn of one call: its input plus output tokens, its cost (none when unpriced:
    /// the call is counted in `unpriced_calls` instead, never as $0) and its central CO2e.
    pub fn of(call: &EnrichedLlmCall) -> Burn {
        Burn {
            calls: 1,
            tokens: call
                .call
                .input_tokens
                .saturating_add(call.call.output_tokens),
            cost_nanos: call.cost_total_nanos.unwrap_or(0),
            unpriced_calls: i64::from(call.unpriced || call.cost_total_nanos.is_none()),
            co2e_ug: call.co2e_ug_central,
        }
    }

    /// Adds another burn to this one. One loop's figures are exact up to `i64::MAX` (9.2
    /// billion dollars, 9.2 kt CO2e); past it they stay at the maximum rather than wrap.
    pub fn add(&mut self, other: Burn) {
        self.calls = self.calls.saturating_add(other.calls);
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
        self.unpriced_calls = self.unpriced_calls.saturating_add(other.unpriced_calls);
        self.co2e_ug = self.co2e_ug.saturating_add(other.co2e_ug);
    }
}

/// One call of a session, as much of it as the checks need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub event_id: String,
    pub at: Micros,
    pub agent: Option<String>,
    pub tool: Option<String>,
    pub tool_args: Option<String>,
    pub prompt: Option<String>,
    /// Fingerprint of the completion (absent in state written before it existed).
    #[serde(default)]
    pub output: Option<String>,
    pub failed: bool,
    pub error_type: Option<String>,
    pub input_tokens: i64,
    pub cache_read_tokens: i64,
    pub human_turn: bool,
    pub burn: Burn,
}

impl Step {
    /// The step of an enriched call.
    pub fn of(call: &EnrichedLlmCall) -> Step {
        let c = &call.call;
        Step {
            event_id: c.event_id.clone(),
            at: c.occurred_at,
            agent: c.agent.clone(),
            tool: c.tool_name.clone(),
            tool_args: c.tool_args_fingerprint.clone(),
            prompt: c.prompt_fingerprint.clone(),
            output: c.output_fingerprint.clone(),
            failed: c.status == CallStatus::Error,
            error_type: c.error_type.clone(),
            input_tokens: c.input_tokens,
            cache_read_tokens: c.cache_read_tokens,
            human_turn: is_human_turn(call),
            burn: Burn::of(call),
        }
    }
}

/// A call is a human turn when its tags say so (`interactive=true` or `origin=user`).
fn is_human_turn(call: &EnrichedLlmCall) -> bool {
    let tags = &call.call.tags;
    tags.get("interactive").is_some_and(|v| v == "true")
        || tags.get("origin").is_some_and(|v| v == "user")
}

/// Where a session's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey {
    /// Key of the session's state: `<tenant>/<team>/<id>`.
    pub state_key: String,
    /// What signals show as `session_id`.
    pub session_id: String,
    /// Whether the session is user × agent, which ends after an idle gap.
    pub by_user_and_agent: bool,
}

/// The session of a call: its `session_id`, else its `trace_id`, else its user × agent; none
/// when it carries none of these (only team-level signals apply to it then).
pub fn session_key(call: &EnrichedLlmCall) -> Option<SessionKey> {
    let c = &call.call;
    let non_empty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let (session_id, by_user_and_agent) = if let Some(id) = non_empty(&c.session_id) {
        (id, false)
    } else if let Some(trace) = non_empty(&c.trace_id) {
        (format!("trace:{trace}"), false)
    } else if c.user.is_some() || c.agent.is_some() {
        let user = c.user.as_deref().unwrap_or("-");
        let agent = c.agent.as_deref().unwrap_or("-");
        (format!("user:{user}/agent:{agent}"), true)
    } else {
        return None;
    };
    Some(SessionKey {
        state_key: format!("{}/{}/{session_id}", c.tenant, c.team),
        session_id,
        by_user_and_agent,
    })
}

/// The state of one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    pub tenant: String,
    pub team: String,
    pub session_id: String,
    pub agent: Option<String>,
    pub workflow: Option<String>,
    pub user: Option<String>,
    /// Event time of the latest call.
    pub last_at: Micros,
    /// The latest steps, oldest first (at most [`HISTORY_STEPS`]).
    pub history: VecDeque<Step>,
    /// Length of the current chain of retry-like calls (see `retry_storm`).
    pub retry_chain: usize,
    /// Whether any call of the session was a human turn.
    pub human_seen: bool,
    /// Start of the current stretch of autonomous spending, and what it burned.
    pub autonomous_since: Option<Micros>,
    pub autonomous_burn: Burn,
    /// Open signals of this session, one per signal type at most.
    pub episodes: Vec<Episode>,
}

impl SessionState {
    /// A new, empty session for this call.
    pub fn new(key: &SessionKey, call: &EnrichedLlmCall) -> SessionState {
        let c = &call.call;
        SessionState {
            tenant: c.tenant.clone(),
            team: c.team.clone(),
            session_id: key.session_id.clone(),
            agent: c.agent.clone(),
            workflow: c.workflow.clone(),
            user: c.user.clone(),
            last_at: c.occurred_at,
            history: VecDeque::new(),
            retry_chain: 0,
            human_seen: false,
            autonomous_since: None,
            autonomous_burn: Burn::default(),
            episodes: Vec::new(),
        }
    }

    /// Appends a step and updates what the checks keep between steps.
    pub fn push(&mut self, step: Step, max_gap: Micros) {
        let previous = self.history.back();
        let continues_retry = previous.is_some_and(|p| {
            p.failed || (step.prompt.is_some() && p.prompt.as_deref() == step.prompt.as_deref())
        });
        self.retry_chain = if continues_retry {
            self.retry_chain + 1
        } else {
            1
        };
        let paused = previous.is_some_and(|p| step.at - p.at > max_gap);
        if step.human_turn {
            self.human_seen = true;
            self.autonomous_since = None;
            self.autonomous_burn = Burn::default();
        } else {
            if paused || self.autonomous_since.is_none() {
                self.autonomous_since = Some(step.at);
                self.autonomous_burn = Burn::default();
            }
            self.autonomous_burn.add(step.burn);
        }
        // Agents and workflows of multi-agent sessions: the latest one names the session.
        if step.agent.is_some() {
            self.agent.clone_from(&step.agent);
        }
        self.last_at = self.last_at.max(step.at);
        self.history.push_back(step);
        while self.history.len() > HISTORY_STEPS {
            self.history.pop_front();
        }
    }

    /// The latest `n` steps, oldest first.
    pub fn latest(&self, n: usize) -> impl Iterator<Item = &Step> {
        self.history
            .iter()
            .skip(self.history.len().saturating_sub(n))
    }

    /// The step just pushed.
    pub fn current(&self) -> &Step {
        self.history.back().expect("a step was pushed")
    }
}

/// What a check found about the latest call of a session: a loop, with the calls that show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Event time of the loop's first call.
    pub first_at: Micros,
    /// Event time of its latest call.
    pub last_at: Micros,
    /// event_ids of the calls that show it, oldest first.
    pub evidence: Vec<String>,
    /// What the loop has burned so far.
    pub burn: Burn,
    /// One line for a person.
    pub explanation: String,
}

impl Finding {
    /// A finding whose evidence and burn are these steps.
    pub fn from_steps<'a>(
        steps: impl IntoIterator<Item = &'a Step>,
        explanation: String,
    ) -> Finding {
        let mut finding = Finding {
            first_at: Micros::MAX,
            last_at: Micros::MIN,
            evidence: Vec::new(),
            burn: Burn::default(),
            explanation,
        };
        for step in steps {
            finding.first_at = finding.first_at.min(step.at);
            finding.last_at = finding.last_at.max(step.at);
            finding.evidence.push(step.event_id.clone());
            finding.burn.add(step.burn);
        }
        finding
    }
}
