//! `cycle`: the latest steps are a pattern of 2 to `max_period` (agent, tool, tool arguments)
//! states repeated at least `min_repeats` times back to back (A→B→A→B→A→B). A pattern must
//! hold two different states and at least one tool call: one state repeated is a retry or a
//! repeated tool call, and agents handing over without tools are not told apart by their
//! (ever-changing) prompts.
use super::config::CycleConfig;
use super::session::{Finding, SessionState, Step};

type State<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

fn state(step: &Step) -> State<'_> {
    (
        step.agent.as_deref(),
        step.tool.as_deref(),
        step.tool_args.as_deref(),
    )
}

fn describe(state: &State<'_>) -> String {
    let agent = state.0.unwrap_or("?");
    match state.1 {
        Some(tool) => format!("{agent}:{tool}"),
        None => agent.to_string(),
    }
}

/// A finding when the session's latest steps are a repeated pattern.
pub fn check(config: &CycleConfig, session: &SessionState) -> Option<Finding> {
    if !config.enabled {
        return None;
    }
    let states: Vec<State<'_>> = session.history.iter().map(state).collect();
    for period in 2..=config.max_period {
        let span = period * config.min_repeats;
        if states.len() < span {
            break;
        }
        let tail = &states[states.len() - span..];
        let periodic = (period..span).all(|i| tail[i] == tail[i - period]);
        let pattern = &tail[span - period..];
        let varied = pattern.iter().any(|s| *s != pattern[0]);
        let uses_tools = pattern.iter().any(|s| s.1.is_some());
        if !(periodic && varied && uses_tools) {
            continue;
        }
        // How far back the pattern goes, for the evidence and the burn.
        let mut length = span;
        while length < states.len()
            && states[states.len() - 1 - length] == states[states.len() - 1 - length + period]
        {
            length += 1;
        }
        let described: Vec<String> = pattern.iter().map(describe).collect();
        let explanation = format!(
            "the steps {} repeated {} times back to back (a cycle of {period} steps)",
            described.join(" → "),
            length / period
        );
        return Some(Finding::from_steps(session.latest(length), explanation));
    }
    None
}
