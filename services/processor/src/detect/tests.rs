//! Exact checks of each signal and of the life-cycle, on hand-made sessions.
use proptest::prelude::*;
use tally_contract::records::{
    AlertState, CallStatus, EnrichedLlmCall, LoopSignalType, Micros, Severity, SignalState,
};

use super::config::{DetectConfig, DetectOverride, RetryStormConfig};
use super::engine::Detector;
use super::episode::Emission;

const T0: Micros = 1_793_577_600_000_000;
const SEC: Micros = 1_000_000;
const NOW: Micros = 1_800_000_000_000_000;

/// A priced call of session `s-1` by agent `coder`: 1,000 input + 100 output tokens, 1 mUSD
/// (1,000,000 nano-dollars), 10 mg CO2e.
fn call(n: usize, at: Micros) -> EnrichedLlmCall {
    let mut c: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    c.call.event_id = format!("e{n}");
    c.call.occurred_at = at;
    c.call.tenant = "acme".into();
    c.call.team = "platform".into();
    c.call.session_id = Some("s-1".into());
    c.call.agent = Some("coder".into());
    c.call.workflow = Some("fix-bugs".into());
    c.call.user = Some("ada".into());
    c.call.input_tokens = 1_000;
    c.call.cache_read_tokens = 0;
    c.call.output_tokens = 100;
    c.call.status = CallStatus::Ok;
    c.call.error_type = None;
    c.call.prompt_fingerprint = Some(format!("prompt-{n}"));
    c.call.output_fingerprint = Some(format!("output-{n}"));
    c.call.tool_name = None;
    c.call.tool_args_fingerprint = None;
    c.call.tags.clear();
    c.unpriced = false;
    c.cost_total_nanos = Some(1_000_000);
    c.co2e_ug_central = 10_000;
    c
}

fn feed(
    detector: &mut Detector,
    config: &DetectConfig,
    calls: &[EnrichedLlmCall],
) -> Vec<Vec<Emission>> {
    calls
        .iter()
        .map(|c| {
            let mut out = detector.observe(config, c, NOW);
            out.extend(detector.advance(config, NOW));
            out
        })
        .collect()
}

fn opened(per_call: &[Vec<Emission>], signal: LoopSignalType) -> Vec<usize> {
    per_call
        .iter()
        .enumerate()
        .filter(|(_, out)| {
            out.iter()
                .any(|e| e.signal.signal_type == signal && e.signal.state == SignalState::Open)
        })
        .map(|(i, _)| i)
        .collect()
}

fn all_types(per_call: &[Vec<Emission>]) -> Vec<LoopSignalType> {
    let mut types: Vec<_> = per_call
        .iter()
        .flatten()
        .map(|e| e.signal.signal_type)
        .collect();
    types.sort();
    types.dedup();
    types
}

#[test]
fn retry_storm_opens_on_the_sixth_identical_attempt_with_its_figures() {
    let config = DetectConfig::default();
    let calls: Vec<_> = (0..8)
        .map(|n| {
            let mut c = call(n, T0 + n as i64 * 2 * SEC);
            c.call.prompt_fingerprint = Some("same".into());
            c
        })
        .collect();
    let out = feed(&mut Detector::default(), &config, &calls);
    assert_eq!(opened(&out, LoopSignalType::RetryStorm), vec![5]);
    assert_eq!(all_types(&out), vec![LoopSignalType::RetryStorm]);
    let open = &out[5][0];
    let s = &open.signal;
    assert_eq!(s.signal_id, "retry_storm/acme/platform/s-1/e0");
    assert_eq!(s.evidence_event_ids, ["e0", "e1", "e2", "e3", "e4", "e5"]);
    assert_eq!(s.evidence_calls, 6);
    assert_eq!(s.tokens_burned, 6 * 1_100);
    assert_eq!(s.cost_nanos_burned, 6_000_000);
    assert_eq!(s.co2e_ug_burned, 60_000);
    assert_eq!((s.first_event_at, s.last_event_at), (T0, T0 + 10 * SEC));
    assert_eq!(s.severity, Severity::Warning);
    assert_eq!(s.session_id.as_deref(), Some("s-1"));
    assert_eq!(
        s.explanation,
        "6 consecutive attempts (0 failed; 5 repeated the previous prompt), more than the 5 allowed"
    );
    let alert = open.alert.as_ref().unwrap();
    assert_eq!(alert.alert_id, s.signal_id);
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(alert.amount_nanos, Some(6_000_000));
    assert_eq!(
        alert.title,
        "retry storm: session s-1 (team platform, agent coder)"
    );
    assert_eq!(
        alert.message,
        "6 consecutive attempts (0 failed; 5 repeated the previous prompt), more than the 5 \
         allowed. Burned since 2026-11-02T00:00:00Z: 6 calls, 6,600 tokens, $0.00600, 0.1 g CO2e."
    );
    // The 7th and 8th continue it silently (updates come at most once a minute).
    assert!(out[6].is_empty() && out[7].is_empty());
}

#[test]
fn failures_chain_whatever_their_prompts_and_a_fresh_success_ends_the_chain() {
    let config = DetectConfig::default();
    let mut calls: Vec<_> = (0..5)
        .map(|n| {
            let mut c = call(n, T0 + n as i64 * SEC);
            c.call.status = CallStatus::Error;
            c.call.error_type = Some("rate_limit_error".into());
            c
        })
        .collect();
    // The 6th call follows a failure: it is the 6th attempt, whatever its prompt.
    calls.push(call(5, T0 + 5 * SEC));
    let out = feed(&mut Detector::default(), &config, &calls);
    assert_eq!(opened(&out, LoopSignalType::RetryStorm), vec![5]);
    assert!(out[5][0]
        .signal
        .explanation
        .starts_with("6 consecutive attempts (5 failed, latest error rate_limit_error;"));

    // Four failures, a fresh success, four more: never more than five in a chain.
    let mut calls = Vec::new();
    for n in 0..10 {
        let mut c = call(n, T0 + n as i64 * SEC);
        if n != 4 && n != 5 {
            c.call.status = CallStatus::Error;
        }
        calls.push(c);
    }
    let out = feed(&mut Detector::default(), &config, &calls);
    assert!(opened(&out, LoopSignalType::RetryStorm).is_empty());
}

#[test]
fn repeated_tool_call_opens_on_the_third_identical_call_within_the_window() {
    let config = DetectConfig::default();
    let with_tool = |n: usize, args: &str| {
        let mut c = call(n, T0 + n as i64 * SEC);
        c.call.tool_name = Some("search".into());
        c.call.tool_args_fingerprint = Some(args.into());
        c
    };
    let calls = vec![
        with_tool(0, "q"),
        with_tool(1, "other-1"),
        with_tool(2, "q"),
        with_tool(3, "other-2"),
        with_tool(4, "q"),
    ];
    let out = feed(&mut Detector::default(), &config, &calls);
    assert_eq!(opened(&out, LoopSignalType::RepeatedToolCall), vec![4]);
    let s = &out[4][0].signal;
    assert_eq!(s.evidence_event_ids, ["e0", "e2", "e4"]);
    assert_eq!(s.evidence_calls, 3);
    assert_eq!(
        s.explanation,
        "tool `search` called 3 times with identical arguments within the latest 20 steps"
    );

    // The third identical call 20 steps after the first is outside the window.
    let mut calls = vec![with_tool(0, "q"), with_tool(1, "q")];
    calls.extend((2..21).map(|n| with_tool(n, &format!("a{n}"))));
    calls.push(with_tool(21, "q"));
    let out = feed(&mut Detector::default(), &config, &calls);
    assert!(opened(&out, LoopSignalType::RepeatedToolCall).is_empty());
}

#[test]
fn cycle_opens_when_a_two_step_pattern_has_repeated_three_times() {
    let config = DetectConfig::default();
    let step = |n: usize, agent: &str, tool: Option<&str>| {
        let mut c = call(n, T0 + n as i64 * SEC);
        c.call.agent = Some(agent.into());
        c.call.tool_name = tool.map(Into::into);
        c
    };
    // A→B→A→B→A→B with tools that take no arguments: a cycle, and nothing else.
    let calls: Vec<_> = (0..6)
        .map(|n| {
            if n % 2 == 0 {
                step(n, "planner", Some("handoff"))
            } else {
                step(n, "executor", Some("handoff"))
            }
        })
        .collect();
    let out = feed(&mut Detector::default(), &config, &calls);
    assert_eq!(opened(&out, LoopSignalType::Cycle), vec![5]);
    assert_eq!(all_types(&out), vec![LoopSignalType::Cycle]);
    assert_eq!(
        out[5][0].signal.explanation,
        "the steps planner:handoff → executor:handoff repeated 3 times back to back (a cycle of 2 steps)"
    );
    // Agents alternating without tools are not a cycle (their prompts differ every time).
    let calls: Vec<_> = (0..8)
        .map(|n| step(n, if n % 2 == 0 { "a" } else { "b" }, None))
        .collect();
    let out = feed(&mut Detector::default(), &config, &calls);
    assert!(all_types(&out).is_empty());
}

#[test]
fn context_growth_needs_fast_uncached_growth_of_large_contexts() {
    let config = DetectConfig::default();
    let growing = |share_cached: f64, growth: f64| -> Vec<EnrichedLlmCall> {
        (0..10)
            .map(|n| {
                let mut c = call(n, T0 + n as i64 * 10 * SEC);
                let input = (30_000.0 * growth.powi(n as i32)) as i64;
                c.call.input_tokens = input;
                c.call.cache_read_tokens = (input as f64 * share_cached) as i64;
                c
            })
            .collect()
    };
    // 15% more input each step, nothing cached: opens once the 8-step window is full.
    let out = feed(&mut Detector::default(), &config, &growing(0.0, 1.15));
    assert_eq!(opened(&out, LoopSignalType::ContextGrowth), vec![7]);
    assert_eq!(
        out[7][0].signal.explanation,
        "input tokens per call grew from 30,000 to 79,800 over the latest 8 steps (14% of their \
         mean per step) with 0% read from cache: tokens spent grow quadratically with steps"
    );
    // The same growth read mostly from cache, or modest growth: nothing.
    assert!(all_types(&feed(
        &mut Detector::default(),
        &config,
        &growing(0.8, 1.15)
    ))
    .is_empty());
    assert!(all_types(&feed(
        &mut Detector::default(),
        &config,
        &growing(0.0, 1.03)
    ))
    .is_empty());
}

#[test]
fn idle_burn_opens_after_two_hours_without_a_human_turn() {
    let config = DetectConfig::default();
    let every_ten_minutes = |human_at: Option<usize>| -> Vec<EnrichedLlmCall> {
        (0..=14)
            .map(|n| {
                let mut c = call(n, T0 + n as i64 * 600 * SEC);
                let human = Some(n) == human_at;
                c.call.tags.insert("interactive".into(), human.to_string());
                c
            })
            .collect()
    };
    let out = feed(&mut Detector::default(), &config, &every_ten_minutes(None));
    // Call 12 is exactly two hours after call 0.
    assert_eq!(opened(&out, LoopSignalType::IdleBurn), vec![12]);
    let s = &out[12][0].signal;
    assert_eq!(s.evidence_calls, 13);
    assert_eq!(s.first_event_at, T0);
    assert_eq!(
        s.explanation,
        "spending for 2h 00m without a pause of more than 15 min and no human turn in the \
         session (13 calls)"
    );
    // A person at call 3 restarts the clock: two hours from call 4 is call 16, beyond the end.
    let out = feed(
        &mut Detector::default(),
        &config,
        &every_ten_minutes(Some(3)),
    );
    assert!(opened(&out, LoopSignalType::IdleBurn).is_empty());
}

#[test]
fn idle_burn_opens_on_the_fifth_identical_autonomous_output() {
    let config = DetectConfig::default();
    let calls: Vec<_> = (0..7)
        .map(|n| {
            let mut c = call(n, T0 + n as i64 * 30 * SEC);
            if n >= 2 {
                c.call.output_fingerprint = Some("all is well".into());
            }
            c
        })
        .collect();
    let out = feed(&mut Detector::default(), &config, &calls);
    assert_eq!(opened(&out, LoopSignalType::IdleBurn), vec![6]);
    assert_eq!(all_types(&out), vec![LoopSignalType::IdleBurn]);
    let s = &out[6][0].signal;
    assert_eq!(s.evidence_event_ids, ["e2", "e3", "e4", "e5", "e6"]);
    assert_eq!(
        s.explanation,
        "the same output 5 times in a row with no human turn (output fingerprint all is well)"
    );
    // A person in between restarts the count.
    let mut calls = calls;
    calls[4]
        .call
        .tags
        .insert("interactive".into(), "true".into());
    let out = feed(&mut Detector::default(), &config, &calls);
    assert!(all_types(&out).is_empty());
}

#[test]
fn usage_spike_fires_on_a_burst_above_three_times_the_workflows_own_baseline() {
    let config = DetectConfig::default();
    let mut calls = Vec::new();
    let mut n = 0;
    // Thirteen 5-minute buckets of 10 calls of 10,000 tokens, each call its own session.
    // When the 14th starts, twelve are in the baseline (the 13th stays open for late calls).
    for bucket in 0..13 {
        for i in 0..10 {
            let mut c = call(n, T0 + bucket * 300 * SEC + i * 20 * SEC);
            c.call.session_id = Some(format!("s{n}"));
            c.call.input_tokens = 9_900;
            calls.push(c);
            n += 1;
        }
    }
    let calm = feed(&mut Detector::default(), &config, &calls);
    assert!(all_types(&calm).is_empty());
    // Then 40 calls in one bucket: 4x the calls and tokens.
    for i in 0..40 {
        let mut c = call(n, T0 + 13 * 300 * SEC + i * 5 * SEC);
        c.call.session_id = Some(format!("s{n}"));
        c.call.input_tokens = 9_900;
        calls.push(c);
        n += 1;
    }
    let out = feed(&mut Detector::default(), &config, &calls);
    // 31 calls (310,000 tokens) is the first count above 3 x 10 calls.
    assert_eq!(opened(&out, LoopSignalType::UsageSpike), vec![130 + 30]);
    let s = &out[160][0].signal;
    assert_eq!(s.session_id, None);
    assert_eq!(s.workflow.as_deref(), Some("fix-bugs"));
    assert_eq!(
        s.signal_id,
        "usage_spike/acme/platform/workflow fix-bugs/e130"
    );
    assert_eq!(s.evidence_calls, 31);
    assert_eq!(s.tokens_burned, 310_000);
}

#[test]
fn a_signal_updates_at_most_once_a_minute_escalates_once_and_resolves_when_quiet() {
    let config = DetectConfig::default();
    let mut detector = Detector::default();
    let mut emissions = Vec::new();
    // Identical attempts every 10 s, each costing $0.25: critical once the loop cost $5.
    for n in 0..30 {
        let mut c = call(n, T0 + n as i64 * 10 * SEC);
        c.call.prompt_fingerprint = Some("same".into());
        c.cost_total_nanos = Some(250_000_000);
        emissions.extend(detector.observe(&config, &c, NOW));
    }
    let states: Vec<(SignalState, Severity, bool)> = emissions
        .iter()
        .map(|e| (e.signal.state, e.signal.severity, e.alert.is_some()))
        .collect();
    use Severity::{Critical, Warning};
    use SignalState::*;
    assert_eq!(
        states,
        vec![
            (Open, Warning, true),     // call 5: 6 attempts, $1.50
            (Update, Warning, false),  // call 11: a minute later
            (Update, Warning, false),  // call 17
            (Update, Critical, true),  // call 19: 20 calls, $5.00
            (Update, Critical, false), // call 25
        ]
    );
    assert_eq!(emissions[3].signal.cost_nanos_burned, 5_000_000_000);
    assert!(detector
        .advance_to(&config, T0 + 29 * 10 * SEC + 599 * SEC, NOW)
        .is_empty());
    let resolved = detector.advance_to(&config, T0 + 29 * 10 * SEC + 600 * SEC, NOW);
    assert_eq!(resolved.len(), 1);
    let r = &resolved[0];
    assert_eq!(r.signal.state, Resolved);
    assert_eq!(r.signal.evidence_calls, 30);
    assert_eq!(r.signal.cost_nanos_burned, 7_500_000_000);
    assert_eq!(r.alert.as_ref().unwrap().state, AlertState::Resolved);
    assert_eq!(
        r.alert.as_ref().unwrap().title,
        "Resolved: retry storm: session s-1 (team platform, agent coder)"
    );
    assert_eq!(detector.open_signals(), 0);
    assert!(r
        .alert
        .as_ref()
        .unwrap()
        .message
        .ends_with(": 30 calls, 33,000 tokens, $7.50, 0.3 g CO2e."));
}

/// A detector that saw one session send the same prompt seven times (a retry storm).
fn retrying_seven_times(config: &DetectConfig) -> Detector {
    let mut detector = Detector::default();
    for n in 0..7 {
        let mut c = call(n, T0 + n as i64 * SEC);
        c.call.prompt_fingerprint = Some("same".into());
        detector.observe(config, &c, NOW);
    }
    detector
}

#[test]
fn the_changelog_restores_the_same_state_and_forgets_idle_sessions() {
    let config = DetectConfig::default();
    let mut detector = retrying_seven_times(&config);
    let changes = detector.take_changes().unwrap();
    let keys: Vec<&str> = changes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "session/acme/platform/s-1",
            "spike/acme/platform/workflow fix-bugs",
            "watermark"
        ]
    );
    let mut restored = Detector::default();
    for (key, value) in &changes {
        restored.restore(key, value.as_deref()).unwrap();
    }
    assert_eq!(restored, detector);
    assert!(
        detector.take_changes().unwrap().is_empty(),
        "nothing changed since"
    );
    // Quiet for the session gap: the signal resolves and the session is forgotten.
    let resolved = detector.advance_to(&config, T0 + 6 * SEC + 1_800 * SEC + 1, NOW);
    assert_eq!(resolved.len(), 1);
    let changes = detector.take_changes().unwrap();
    assert!(changes.contains(&("session/acme/platform/s-1".to_string(), None)));
    assert!(detector.sessions.is_empty());
}

#[test]
fn a_changelog_written_as_json_by_an_earlier_tally_restores_the_same_state() {
    let config = DetectConfig::default();
    let mut detector = retrying_seven_times(&config);
    let binary = detector.take_changes().unwrap();
    // What an earlier tally wrote: the same pieces as JSON.
    let json = |key: &str| -> Vec<u8> {
        if key == "watermark" {
            serde_json::to_vec(&serde_json::json!({ "watermark": detector.watermark })).unwrap()
        } else if let Some(k) = key.strip_prefix("session/") {
            serde_json::to_vec(&detector.sessions[k]).unwrap()
        } else {
            serde_json::to_vec(&detector.spikes[key.strip_prefix("spike/").unwrap()]).unwrap()
        }
    };
    let mut restored = Detector::default();
    for (key, value) in &binary {
        let written = json(key);
        assert_eq!(written[0], b'{', "{key} was a JSON object");
        assert!(
            value.as_ref().unwrap().len() < written.len(),
            "{key}: binary {} bytes, JSON {}",
            value.as_ref().unwrap().len(),
            written.len()
        );
        restored.restore(key, Some(&written)).unwrap();
    }
    assert_eq!(restored, detector);
    let err = Detector::default()
        .restore("session/acme/platform/s-1", Some(b"{\"tenant\":"))
        .unwrap_err();
    assert!(err.starts_with("JSON: "), "{err}");
}

#[test]
fn overrides_apply_to_their_team_and_workflow_most_specific_first() {
    let mut config = DetectConfig::default();
    let with_attempts = |team: Option<&str>, workflow: Option<&str>, n: usize| DetectOverride {
        team: team.map(Into::into),
        workflow: workflow.map(Into::into),
        retry_storm: Some(RetryStormConfig {
            enabled: true,
            max_attempts: n,
        }),
        repeated_tool_call: None,
        cycle: None,
        context_growth: None,
        idle_burn: None,
        usage_spike: None,
    };
    config.overrides = vec![
        with_attempts(Some("platform"), None, 8),
        with_attempts(None, Some("nightly"), 12),
        with_attempts(Some("platform"), Some("nightly"), 20),
    ];
    let attempts = |team: &str, workflow: Option<&str>| {
        config.settings_for(team, workflow).retry_storm.max_attempts
    };
    assert_eq!(attempts("growth", None), 5);
    assert_eq!(attempts("platform", None), 8);
    assert_eq!(attempts("growth", Some("nightly")), 12);
    assert_eq!(attempts("platform", Some("nightly")), 20);
    assert_eq!(config.validate(), Ok(()));
    config.overrides.push(with_attempts(None, None, 3));
    assert_eq!(
        config.validate(),
        Err("detect.overrides[3]: name a team, a workflow or both".into())
    );
    config.overrides.pop();
    config.signals.cycle.max_period = 1;
    assert_eq!(
        config.validate(),
        Err("detect.cycle needs max_period >= 2 and min_repeats >= 2".into())
    );
}

proptest! {
    /// A session whose calls all differ in prompt and tool arguments never fires
    /// repeated_tool_call or retry_storm, whatever its tools, tokens and pace.
    #[test]
    fn distinct_calls_never_fire_repeats_or_retries(
        steps in prop::collection::vec((0usize..4, 100i64..200_000, 1i64..600), 1..120)
    ) {
        let config = DetectConfig::default();
        let mut detector = Detector::default();
        let mut at = T0;
        for (n, (tool, input, gap)) in steps.into_iter().enumerate() {
            at += gap * SEC;
            let mut c = call(n, at);
            c.call.input_tokens = input;
            c.call.tool_name = Some(["search", "read", "edit", "run"][tool].into());
            c.call.tool_args_fingerprint = Some(format!("args-{n}"));
            let mut out = detector.observe(&config, &c, NOW);
            out.extend(detector.advance(&config, NOW));
            for e in out {
                prop_assert!(
                    !matches!(e.signal.signal_type, LoopSignalType::RepeatedToolCall | LoopSignalType::RetryStorm),
                    "{:?}", e.signal
                );
            }
        }
    }
}
