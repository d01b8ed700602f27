//! `idle_burn`: a session spending without a pause longer than `max_gap_secs` for more than
//! `max_autonomous_secs` with no human turn (a call tagged `interactive=true` or
//! `origin=user` ends the stretch; every other call is autonomous).
use super::config::IdleBurnConfig;
use super::session::{Finding, SessionState};

const MICROS_PER_SEC: i64 = 1_000_000;

/// A finding when the session's current autonomous stretch has lasted too long.
pub fn check(config: &IdleBurnConfig, session: &SessionState) -> Option<Finding> {
    if !config.enabled {
        return None;
    }
    let since = session.autonomous_since?;
    let current = session.current();
    let lasted = current.at - since;
    if current.human_turn || lasted < config.max_autonomous_secs * MICROS_PER_SEC {
        return None;
    }
    let minutes = lasted / MICROS_PER_SEC / 60;
    let human = if session.human_seen {
        "since the last human turn"
    } else {
        "and no human turn in the session"
    };
    let explanation = format!(
        "spending for {}h {:02}m without a pause of more than {} min {human} ({} calls)",
        minutes / 60,
        minutes % 60,
        config.max_gap_secs / 60,
        session.autonomous_burn.calls
    );
    let mut finding = Finding::from_steps(
        session.history.iter().filter(|s| s.at >= since),
        explanation,
    );
    finding.first_at = since;
    finding.burn = session.autonomous_burn;
    Some(finding)
}
