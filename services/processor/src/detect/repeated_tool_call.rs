//! `repeated_tool_call`: the same tool with the same arguments (`tool_name` and
//! `tool_args_fingerprint`) at least `min_repeats` times within the latest `window_steps`.
use super::config::RepeatedToolCallConfig;
use super::session::{Finding, SessionState};

/// A finding when the current call's tool call was already made often in the window.
pub fn check(config: &RepeatedToolCallConfig, session: &SessionState) -> Option<Finding> {
    if !config.enabled {
        return None;
    }
    let current = session.current();
    let (Some(tool), Some(args)) = (current.tool.as_deref(), current.tool_args.as_deref()) else {
        return None;
    };
    let same: Vec<_> = session
        .latest(config.window_steps)
        .filter(|s| s.tool.as_deref() == Some(tool) && s.tool_args.as_deref() == Some(args))
        .collect();
    if same.len() < config.min_repeats {
        return None;
    }
    let explanation = format!(
        "tool `{tool}` called {} times with identical arguments within the latest {} steps",
        same.len(),
        config.window_steps
    );
    Some(Finding::from_steps(same, explanation))
}
