//! `retry_storm`: more than `max_attempts` consecutive attempts, where a call is another
//! attempt when the call before it failed or it repeats that call's prompt fingerprint (the
//! "recursion cap": escalate to a person after 5 attempts).
use super::config::RetryStormConfig;
use super::session::{Finding, SessionState};

/// A finding when the session's current chain of attempts is longer than allowed.
pub fn check(config: &RetryStormConfig, session: &SessionState) -> Option<Finding> {
    if !config.enabled || session.retry_chain <= config.max_attempts {
        return None;
    }
    let steps: Vec<_> = session.latest(session.retry_chain).collect();
    let failed = steps.iter().filter(|s| s.failed).count();
    let repeated = steps
        .windows(2)
        .filter(|w| w[1].prompt.is_some() && w[0].prompt == w[1].prompt)
        .count();
    let error = steps
        .iter()
        .rev()
        .find_map(|s| s.error_type.as_deref())
        .map(|e| format!(", latest error {e}"))
        .unwrap_or_default();
    let explanation = format!(
        "{} consecutive attempts ({failed} failed{error}; {repeated} repeated the previous prompt), \
         more than the {} allowed",
        session.retry_chain, config.max_attempts
    );
    Some(Finding::from_steps(steps, explanation))
}
