//! The life of one signal: open once, update while its loop continues, escalate once,
//! resolve after a quiet period; and the `LoopSignal` and `Alert` records it produces.
use serde::{Deserialize, Serialize};
use tally_contract::clock::rfc3339;
use tally_contract::records::{
    Alert, AlertKind, AlertState, LoopSignal, LoopSignalType, Micros, Severity, SignalState,
};

use super::session::{Burn, Finding, Step};
use crate::budgets::dollars;
use crate::budgets::grouped;
use tally_accounting::decimal::Decimal;

/// Who and what a signal is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub tenant: &'a str,
    pub team: &'a str,
    /// The session, or `None` for a team-level signal.
    pub session_id: Option<&'a str>,
    /// What the signal id names: the session id, or the workflow's scope.
    pub key: &'a str,
    pub agent: Option<&'a str>,
    pub workflow: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// One open signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub signal_id: String,
    pub signal_type: LoopSignalType,
    pub severity: Severity,
    pub first_at: Micros,
    pub last_at: Micros,
    /// Event time of the last record emitted for it.
    pub emitted_at: Micros,
    pub evidence: Vec<String>,
    pub burn: Burn,
    pub explanation: String,
}

/// Thresholds of the life-cycle.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    pub max_evidence: usize,
    pub update_interval: Micros,
    pub critical_cost_nanos: i64,
    pub critical_after: Micros,
}

impl Lifecycle {
    fn severity(&self, episode: &Episode) -> Severity {
        if episode.burn.cost_nanos >= self.critical_cost_nanos
            || episode.last_at - episode.first_at >= self.critical_after
        {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }
}

/// What the life-cycle emits for a change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub signal: LoopSignal,
    /// An alert on opening, escalation and resolution; updates are not paged.
    pub alert: Option<Alert>,
}

/// Applies what a check found for the latest call (`step`) to the open episode of its type
/// in `episodes`: opens one, extends it, or does nothing.
pub fn apply(
    lifecycle: &Lifecycle,
    episodes: &mut Vec<Episode>,
    signal_type: LoopSignalType,
    finding: Option<Finding>,
    step: &Step,
    subject: &Subject<'_>,
    now: Micros,
) -> Option<Emission> {
    let finding = finding?;
    let Some(index) = episodes.iter().position(|e| e.signal_type == signal_type) else {
        let mut episode = Episode::open(lifecycle, signal_type, finding, subject);
        let emission = episode.emit(SignalState::Open, subject, now);
        episodes.push(episode);
        return Some(emission);
    };
    let episode = &mut episodes[index];
    episode.last_at = episode.last_at.max(step.at);
    episode.burn.add(step.burn);
    if episode.evidence.len() < lifecycle.max_evidence && !episode.evidence.contains(&step.event_id)
    {
        episode.evidence.push(step.event_id.clone());
    }
    episode.explanation = finding.explanation;
    let severity = lifecycle.severity(episode);
    if severity != episode.severity {
        episode.severity = severity;
        return Some(episode.emit(SignalState::Update, subject, now));
    }
    if episode.last_at - episode.emitted_at >= lifecycle.update_interval {
        let mut emission = episode.emit(SignalState::Update, subject, now);
        emission.alert = None;
        return Some(emission);
    }
    None
}

impl Episode {
    fn open(
        lifecycle: &Lifecycle,
        signal_type: LoopSignalType,
        finding: Finding,
        subject: &Subject<'_>,
    ) -> Episode {
        let first_event = finding.evidence.first().cloned().unwrap_or_default();
        let mut episode = Episode {
            signal_id: format!(
                "{signal_type}/{}/{}/{}/{first_event}",
                subject.tenant, subject.team, subject.key
            ),
            signal_type,
            severity: Severity::Warning,
            first_at: finding.first_at,
            last_at: finding.last_at,
            emitted_at: Micros::MIN,
            evidence: finding.evidence,
            burn: finding.burn,
            explanation: finding.explanation,
        };
        episode.evidence.truncate(lifecycle.max_evidence);
        episode.severity = lifecycle.severity(&episode);
        episode
    }

    /// The records of a change of state, stamped with the current event time.
    pub fn emit(&mut self, state: SignalState, subject: &Subject<'_>, now: Micros) -> Emission {
        self.emitted_at = self.last_at;
        let signal = LoopSignal {
            signal_id: self.signal_id.clone(),
            signal_type: self.signal_type,
            state,
            severity: self.severity,
            tenant: subject.tenant.to_string(),
            team: subject.team.to_string(),
            session_id: subject.session_id.map(str::to_owned),
            agent: subject.agent.map(str::to_owned),
            workflow: subject.workflow.map(str::to_owned),
            user: subject.user.map(str::to_owned),
            first_event_at: self.first_at,
            last_event_at: self.last_at,
            evidence_event_ids: self.evidence.clone(),
            evidence_calls: self.burn.calls,
            tokens_burned: self.burn.tokens,
            cost_nanos_burned: self.burn.cost_nanos,
            unpriced_calls: self.burn.unpriced_calls,
            co2e_ug_burned: self.burn.co2e_ug,
            explanation: self.explanation.clone(),
            emitted_at: now,
        };
        let alert = self.alert(state, subject, now);
        Emission {
            signal,
            alert: Some(alert),
        }
    }

    fn alert(&self, state: SignalState, subject: &Subject<'_>, now: Micros) -> Alert {
        let kind = self.signal_type.as_str().replace('_', " ");
        let whom = match subject.session_id {
            Some(session) => format!("session {session}"),
            None => subject.key.to_string(),
        };
        let agent = subject
            .agent
            .map(|a| format!(", agent {a}"))
            .unwrap_or_default();
        let resolved = state == SignalState::Resolved;
        let title = format!(
            "{}{kind}: {whom} (team {}{agent})",
            if resolved { "Resolved: " } else { "" },
            subject.team
        );
        let message = if resolved {
            format!(
                "No call continued it after {}. In total: {}.",
                rfc3339(self.last_at),
                self.burn_text()
            )
        } else {
            format!(
                "{}. Burned since {}: {}.",
                capitalised(&self.explanation),
                rfc3339(self.first_at),
                self.burn_text()
            )
        };
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("signal_type".to_string(), self.signal_type.to_string());
        for (name, value) in [
            ("session_id", subject.session_id),
            ("agent", subject.agent),
            ("workflow", subject.workflow),
            ("user", subject.user),
        ] {
            if let Some(value) = value {
                labels.insert(name.to_string(), value.to_string());
            }
        }
        Alert {
            alert_id: self.signal_id.clone(),
            kind: AlertKind::LoopSignal,
            state: if resolved {
                AlertState::Resolved
            } else {
                AlertState::Firing
            },
            severity: self.severity,
            tenant: subject.tenant.to_string(),
            team: Some(subject.team.to_string()),
            subject: subject.session_id.unwrap_or(subject.key).to_string(),
            title,
            message,
            source_id: Some(self.signal_id.clone()),
            amount_nanos: Some(self.burn.cost_nanos.into()),
            limit_nanos: None,
            labels,
            occurred_at: self.last_at,
            emitted_at: now,
        }
    }

    fn burn_text(&self) -> String {
        let unpriced = match self.burn.unpriced_calls {
            0 => String::new(),
            n => format!(" (+{n} calls of unknown price)"),
        };
        format!(
            "{} calls, {} tokens, {}{unpriced}, {:.1} g CO2e",
            grouped(self.burn.calls),
            grouped(self.burn.tokens),
            money(self.burn.cost_nanos),
            self.burn.co2e_ug as f64 / 1e6
        )
    }
}

/// Dollars to the cent from $1 up, to the hundred-thousandth below (a loop's first calls
/// often cost fractions of a cent, which "$0.00" would hide).
fn money(nanos: i64) -> String {
    if nanos >= 1_000_000_000 {
        return dollars(i128::from(nanos));
    }
    let units = Decimal::new(i128::from(nanos), 9)
        .round_scaled(5)
        .unwrap_or_default();
    format!("${}.{:05}", units / 100_000, units % 100_000)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
