//! The detectors' state of one input partition: its sessions, its workflows' rates, and its
//! watermark (the latest event time seen), which resolves quiet signals and forgets idle
//! sessions. Changes are tracked by key, so the stage writes only what changed to its
//! changelog.
use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tally_contract::records::{EnrichedLlmCall, LoopSignalType, Micros, SignalState};

use super::config::{DetectConfig, SignalSettings};
pub use super::episode::Emission;
use super::episode::{self, Episode, Lifecycle, Subject};
use super::session::{self, SessionKey, SessionState, Step};
use super::usage_spike::{self, SpikeState};
use super::{context_growth, cycle, idle_burn, repeated_tool_call, retry_storm};
use crate::state_codec;

const MICROS_PER_SEC: i64 = 1_000_000;

/// Changelog key prefix of a session's state...
const SESSION_PREFIX: &str = "session/";
/// ...of a workflow's rate...
const SPIKE_PREFIX: &str = "spike/";
/// ...and of the partition's watermark.
const WATERMARK_KEY: &str = "watermark";

/// The detectors' state of one input partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detector {
    pub watermark: Micros,
    pub sessions: HashMap<String, SessionState>,
    pub spikes: HashMap<String, SpikeState>,
    changed: BTreeSet<String>,
}

/// One changelog record: the key and the state's bytes (see `state_codec`), or `None`
/// when the state is gone.
pub type Change = (String, Option<Vec<u8>>);

#[derive(Serialize, Deserialize)]
struct Watermark {
    watermark: Micros,
}

impl Detector {
    /// Runs every check on a call; what opened, updated or escalated.
    pub fn observe(
        &mut self,
        config: &DetectConfig,
        call: &EnrichedLlmCall,
        now: Micros,
    ) -> Vec<Emission> {
        let mut out = Vec::new();
        let at = call.call.occurred_at;
        if at > self.watermark {
            self.watermark = at;
            self.changed.insert(WATERMARK_KEY.into());
        }
        let settings = config.settings_for(&call.call.team, call.call.workflow.as_deref());
        let lifecycle = lifecycle(config);
        let step = Step::of(call);
        if let Some(key) = session::session_key(call) {
            self.observe_session(
                config, &settings, &lifecycle, &key, call, &step, now, &mut out,
            );
        }
        self.observe_rate(&settings, &lifecycle, call, &step, now, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_session(
        &mut self,
        config: &DetectConfig,
        settings: &SignalSettings,
        lifecycle: &Lifecycle,
        key: &SessionKey,
        call: &EnrichedLlmCall,
        step: &Step,
        now: Micros,
        out: &mut Vec<Emission>,
    ) {
        let gap = config.session_gap_secs * MICROS_PER_SEC;
        if let Some(old) = self.sessions.get_mut(&key.state_key) {
            if key.by_user_and_agent && step.at - old.last_at > gap {
                // A user × agent session ended with the gap: what it left open resolves now.
                out.extend(resolve_all(old, now));
                self.sessions.remove(&key.state_key);
            }
        }
        self.changed
            .insert(format!("{SESSION_PREFIX}{}", key.state_key));
        let session = self
            .sessions
            .entry(key.state_key.clone())
            .or_insert_with(|| SessionState::new(key, call));
        session.push(
            step.clone(),
            settings.idle_burn.max_gap_secs * MICROS_PER_SEC,
        );
        let context_open = session
            .episodes
            .iter()
            .any(|e| e.signal_type == LoopSignalType::ContextGrowth);
        let findings = [
            (
                LoopSignalType::RetryStorm,
                retry_storm::check(&settings.retry_storm, session),
            ),
            (
                LoopSignalType::RepeatedToolCall,
                repeated_tool_call::check(&settings.repeated_tool_call, session),
            ),
            (
                LoopSignalType::Cycle,
                cycle::check(&settings.cycle, session),
            ),
            (
                LoopSignalType::ContextGrowth,
                context_growth::check(&settings.context_growth, session, context_open),
            ),
            (
                LoopSignalType::IdleBurn,
                idle_burn::check(&settings.idle_burn, session),
            ),
        ];
        let SessionState {
            tenant,
            team,
            session_id,
            agent,
            workflow,
            user,
            episodes,
            ..
        } = session;
        let subject = Subject {
            tenant,
            team,
            session_id: Some(session_id),
            key: session_id,
            agent: agent.as_deref(),
            workflow: workflow.as_deref(),
            user: user.as_deref(),
        };
        for (signal_type, finding) in findings {
            out.extend(episode::apply(
                lifecycle,
                episodes,
                signal_type,
                finding,
                step,
                &subject,
                now,
            ));
        }
    }

    fn observe_rate(
        &mut self,
        settings: &SignalSettings,
        lifecycle: &Lifecycle,
        call: &EnrichedLlmCall,
        step: &Step,
        now: Micros,
        out: &mut Vec<Emission>,
    ) {
        let (key, scope) = usage_spike::key(call);
        self.changed.insert(format!("{SPIKE_PREFIX}{key}"));
        let state = self
            .spikes
            .entry(key)
            .or_insert_with(|| SpikeState::new(call, scope));
        let finding = state.observe(&settings.usage_spike, call, lifecycle.max_evidence);
        let mut episodes: Vec<Episode> = state.episode.take().into_iter().collect();
        let subject = spike_subject(state);
        out.extend(episode::apply(
            lifecycle,
            &mut episodes,
            LoopSignalType::UsageSpike,
            finding,
            step,
            &subject,
            now,
        ));
        state.episode = episodes.pop();
    }

    /// Resolves the signals no call continued for the quiet period before the watermark, and
    /// forgets sessions and workflows idle for longer than they can matter.
    pub fn advance(&mut self, config: &DetectConfig, now: Micros) -> Vec<Emission> {
        let quiet = config.quiet_period_secs * MICROS_PER_SEC;
        let watermark = self.watermark;
        let mut out = Vec::new();
        for (key, session) in &mut self.sessions {
            let before = out.len();
            out.extend(resolve_quiet(session, watermark - quiet, now));
            if out.len() > before {
                self.changed.insert(format!("{SESSION_PREFIX}{key}"));
            }
        }
        for (key, state) in &mut self.spikes {
            let quiet_since = state
                .episode
                .as_ref()
                .is_some_and(|e| e.last_at <= watermark - quiet);
            if quiet_since {
                let mut episode = state.episode.take().expect("checked above");
                let subject = spike_subject(state);
                out.push(episode.emit(SignalState::Resolved, &subject, now));
                self.changed.insert(format!("{SPIKE_PREFIX}{key}"));
            }
        }
        self.forget_idle(config);
        out
    }

    fn forget_idle(&mut self, config: &DetectConfig) {
        let keep_for = config.session_gap_secs.max(config.quiet_period_secs) * MICROS_PER_SEC;
        let horizon = self.watermark - keep_for;
        let idle: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.episodes.is_empty() && s.last_at < horizon)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            self.sessions.remove(&key);
            self.changed.insert(format!("{SESSION_PREFIX}{key}"));
        }
        // A workflow's baseline is kept for a week of silence (weekends, holidays).
        let spike_horizon = self.watermark - 7 * 86_400 * MICROS_PER_SEC;
        let idle: Vec<String> = self
            .spikes
            .iter()
            .filter(|(_, s)| s.episode.is_none() && s.last_at < spike_horizon)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            self.spikes.remove(&key);
            self.changed.insert(format!("{SPIKE_PREFIX}{key}"));
        }
    }

    /// Moves the watermark to `at` (when no call has), then [`Detector::advance`]s.
    pub fn advance_to(&mut self, config: &DetectConfig, at: Micros, now: Micros) -> Vec<Emission> {
        if at > self.watermark {
            self.watermark = at;
            self.changed.insert(WATERMARK_KEY.into());
        }
        self.advance(config, now)
    }

    /// The changelog records of what changed since the last call.
    pub fn take_changes(&mut self) -> Result<Vec<Change>, String> {
        let mut changes = Vec::with_capacity(self.changed.len());
        for key in std::mem::take(&mut self.changed) {
            let value = if key == WATERMARK_KEY {
                Some(state_codec::to_bytes(&Watermark {
                    watermark: self.watermark,
                })?)
            } else if let Some(k) = key.strip_prefix(SESSION_PREFIX) {
                self.sessions
                    .get(k)
                    .map(state_codec::to_bytes)
                    .transpose()?
            } else if let Some(k) = key.strip_prefix(SPIKE_PREFIX) {
                self.spikes.get(k).map(state_codec::to_bytes).transpose()?
            } else {
                None
            };
            changes.push((key, value));
        }
        Ok(changes)
    }

    /// Restores one changelog record (the latest per key wins; `None` deletes).
    pub fn restore(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        if key == WATERMARK_KEY {
            if let Some(bytes) = value {
                self.watermark = state_codec::from_bytes::<Watermark>(bytes)?.watermark;
            }
        } else if let Some(k) = key.strip_prefix(SESSION_PREFIX) {
            match value {
                Some(bytes) => {
                    self.sessions
                        .insert(k.to_string(), state_codec::from_bytes(bytes)?);
                }
                None => {
                    self.sessions.remove(k);
                }
            }
        } else if let Some(k) = key.strip_prefix(SPIKE_PREFIX) {
            match value {
                Some(bytes) => {
                    self.spikes
                        .insert(k.to_string(), state_codec::from_bytes(bytes)?);
                }
                None => {
                    self.spikes.remove(k);
                }
            }
        }
        Ok(())
    }

    /// Open signals by signal type (every type, 0 when none is open), for the business
    /// metrics.
    pub fn open_signals_by_type(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut open: std::collections::BTreeMap<&'static str, usize> = LoopSignalType::ALL
            .iter()
            .map(|t| (t.as_str(), 0))
            .collect();
        let episodes = self.sessions.values().flat_map(|s| &s.episodes);
        let spikes = self.spikes.values().filter_map(|s| s.episode.as_ref());
        for episode in episodes.chain(spikes) {
            *open.entry(episode.signal_type.as_str()).or_default() += 1;
        }
        open
    }

    /// Open signals, for progress logs.
    pub fn open_signals(&self) -> usize {
        self.sessions
            .values()
            .map(|s| s.episodes.len())
            .sum::<usize>()
            + self.spikes.values().filter(|s| s.episode.is_some()).count()
    }
}

fn lifecycle(config: &DetectConfig) -> Lifecycle {
    Lifecycle {
        max_evidence: config.max_evidence,
        update_interval: config.update_interval_secs * MICROS_PER_SEC,
        critical_cost_nanos: config.critical_cost_usd.round_scaled(9).unwrap_or(i64::MAX),
        critical_after: config.critical_after_secs * MICROS_PER_SEC,
    }
}

fn session_subject(session: &SessionState) -> Subject<'_> {
    Subject {
        tenant: &session.tenant,
        team: &session.team,
        session_id: Some(&session.session_id),
        key: &session.session_id,
        agent: session.agent.as_deref(),
        workflow: session.workflow.as_deref(),
        user: session.user.as_deref(),
    }
}

fn spike_subject(state: &SpikeState) -> Subject<'_> {
    Subject {
        tenant: &state.tenant,
        team: &state.team,
        session_id: None,
        key: &state.scope,
        agent: state.agent.as_deref(),
        workflow: state.workflow.as_deref(),
        user: None,
    }
}

/// Resolves the session's signals whose latest call is at or before `quiet_before`.
fn resolve_quiet(session: &mut SessionState, quiet_before: Micros, now: Micros) -> Vec<Emission> {
    let (quiet, open): (Vec<Episode>, Vec<Episode>) = std::mem::take(&mut session.episodes)
        .into_iter()
        .partition(|e| e.last_at <= quiet_before);
    session.episodes = open;
    let subject = session_subject(session);
    quiet
        .into_iter()
        .map(|mut e| e.emit(SignalState::Resolved, &subject, now))
        .collect()
}

fn resolve_all(session: &mut SessionState, now: Micros) -> Vec<Emission> {
    resolve_quiet(session, Micros::MAX, now)
}
