//! `idle_burn`: a session spending without a pause longer than `max_gap_secs` for more than
//! `max_autonomous_secs` with no human turn (a call tagged `interactive=true` or
//! `origin=user` ends the stretch; every other call is autonomous); or its latest
//! `max_identical_outputs` calls, all autonomous, answered with the same output fingerprint.
use super::config::IdleBurnConfig;
use super::session::{Finding, SessionState};

const MICROS_PER_SEC: i64 = 1_000_000;

/// A finding when the session's current autonomous stretch has lasted too long, or keeps
/// producing the same output.
pub fn check(config: &IdleBurnConfig, session: &SessionState) -> Option<Finding> {
    if !config.enabled {
        return None;
    }
    same_outputs(config, session).or_else(|| long_stretch(config, session))
}

/// The latest calls, all autonomous, gave the same output.
fn same_outputs(config: &IdleBurnConfig, session: &SessionState) -> Option<Finding> {
    let output = session.current().output.as_deref()?;
    let mut same = 0;
    for step in session.history.iter().rev() {
        if step.human_turn || step.output.as_deref() != Some(output) {
            break;
        }
        same += 1;
    }
    if same < config.max_identical_outputs {
        return None;
    }
    let short: String = output.chars().take(12).collect();
    let explanation = format!(
        "the same output {same} times in a row with no human turn (output fingerprint {short})"
    );
    Some(Finding::from_steps(session.latest(same), explanation))
}

fn long_stretch(config: &IdleBurnConfig, session: &SessionState) -> Option<Finding> {
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
