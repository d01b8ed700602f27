//! The loop detectors on the labelled scenario set (`tests/scenarios.rs`): every scenario's
//! calls, priced by the shipped catalogue, interleaved in event time through one detector as
//! one partition would see them. Prints precision and recall per signal; asserts recall 1 and
//! no false positive, and the life-cycle of every signal (one open, one resolve).
use std::collections::{BTreeMap, BTreeSet};

use tally_accounting::enrich::Enricher;
use tally_contract::records::{
    AlertState, EnrichedLlmCall, LoopSignal, LoopSignalType, SignalState,
};
use tally_processor::detect::{DetectConfig, Detector, Emission};
use tally_processor::ProcessorConfig;
use tally_tests::scenarios::{scenario_set, Scenario};

const NOW: i64 = 1_800_000_000_000_000;

fn enriched_stream(set: &[Scenario]) -> Vec<EnrichedLlmCall> {
    let config = ProcessorConfig::default();
    let enricher = Enricher::new(config.catalogue().unwrap(), config.carbon.clone()).unwrap();
    let mut calls: Vec<EnrichedLlmCall> = set
        .iter()
        .flat_map(|s| s.calls.iter().cloned())
        .map(|c| enricher.enrich(c, NOW).unwrap())
        .collect();
    calls.sort_by(|a, b| {
        (a.call.occurred_at, &a.call.event_id).cmp(&(b.call.occurred_at, &b.call.event_id))
    });
    calls
}

fn run(config: &DetectConfig, calls: &[EnrichedLlmCall]) -> Vec<Emission> {
    let mut detector = Detector::default();
    let mut out = Vec::new();
    for call in calls {
        out.extend(detector.observe(config, call, NOW));
        out.extend(detector.advance(config, NOW));
    }
    let end = calls.last().unwrap().call.occurred_at + 86_400_000_000;
    out.extend(detector.advance_to(config, end, NOW));
    assert_eq!(detector.open_signals(), 0, "everything resolves in the end");
    out
}

fn owner<'a>(set: &'a [Scenario], signal: &LoopSignal) -> &'a Scenario {
    set.iter()
        .find(|s| s.owns(signal.session_id.as_deref(), signal.workflow.as_deref()))
        .unwrap_or_else(|| panic!("no scenario owns {signal:?}"))
}

#[derive(Default)]
struct Score {
    true_positives: usize,
    false_positives: Vec<String>,
    missed: Vec<String>,
}

fn score(set: &[Scenario], emissions: &[Emission]) -> BTreeMap<LoopSignalType, Score> {
    let mut fired: BTreeMap<&str, BTreeSet<LoopSignalType>> = BTreeMap::new();
    for e in emissions
        .iter()
        .filter(|e| e.signal.state == SignalState::Open)
    {
        let scenario = owner(set, &e.signal);
        fired
            .entry(&scenario.name)
            .or_default()
            .insert(e.signal.signal_type);
    }
    let mut scores: BTreeMap<LoopSignalType, Score> = LoopSignalType::ALL
        .iter()
        .map(|t| (*t, Score::default()))
        .collect();
    for scenario in set {
        let fired = fired
            .get(scenario.name.as_str())
            .cloned()
            .unwrap_or_default();
        for signal in LoopSignalType::ALL {
            let score = scores.get_mut(signal).unwrap();
            match (fired.contains(signal), scenario.expected.contains(signal)) {
                (true, true) => score.true_positives += 1,
                (true, false) => score.false_positives.push(scenario.name.clone()),
                (false, true) => score.missed.push(scenario.name.clone()),
                (false, false) => {}
            }
        }
    }
    scores
}

fn print_scores(seed: u64, set: &[Scenario], scores: &BTreeMap<LoopSignalType, Score>) {
    let healthy = set.iter().filter(|s| s.expected.is_empty()).count();
    println!(
        "scenario set seed {seed}: {} scenarios ({healthy} healthy), {} calls",
        set.len(),
        set.iter().map(|s| s.calls.len()).sum::<usize>()
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "signal", "expected", "fired ok", "false +", "precision", "recall"
    );
    for (signal, s) in scores {
        let expected = s.true_positives + s.missed.len();
        let fired = s.true_positives + s.false_positives.len();
        let ratio = |n: usize, d: usize| {
            if d == 0 {
                "-".to_string()
            } else {
                format!("{:.3}", n as f64 / d as f64)
            }
        };
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9}",
            signal.as_str(),
            expected,
            s.true_positives,
            s.false_positives.len(),
            ratio(s.true_positives, fired),
            ratio(s.true_positives, expected)
        );
    }
}

fn check_seed(seed: u64, print: bool) {
    let set = scenario_set(seed);
    let calls = enriched_stream(&set);
    let config = DetectConfig::default();
    let emissions = run(&config, &calls);
    let scores = score(&set, &emissions);
    if print {
        print_scores(seed, &set, &scores);
    }
    for (signal, s) in &scores {
        assert!(
            s.missed.is_empty(),
            "{signal}: missed in {:?} (recall must be 1)",
            s.missed
        );
        assert!(
            s.false_positives.is_empty(),
            "{signal}: false positives in {:?}",
            s.false_positives
        );
        assert!(s.true_positives > 0, "{signal}: the set must exercise it");
    }
    check_lifecycle(&set, &emissions);
}

/// Every signal opens once, resolves once, carries its loop's figures, and alerts on open,
/// escalation and resolve only.
fn check_lifecycle(set: &[Scenario], emissions: &[Emission]) {
    let mut by_id: BTreeMap<&str, Vec<&Emission>> = BTreeMap::new();
    for e in emissions {
        by_id.entry(&e.signal.signal_id).or_default().push(e);
    }
    for (id, records) in by_id {
        let states: Vec<SignalState> = records.iter().map(|e| e.signal.state).collect();
        assert_eq!(states.first(), Some(&SignalState::Open), "{id}: {states:?}");
        assert_eq!(
            states.last(),
            Some(&SignalState::Resolved),
            "{id}: {states:?}"
        );
        assert_eq!(
            states.iter().filter(|s| **s == SignalState::Open).count(),
            1,
            "{id} opens once: {states:?}"
        );
        assert_eq!(
            states
                .iter()
                .filter(|s| **s == SignalState::Resolved)
                .count(),
            1,
            "{id} resolves once: {states:?}"
        );
        let last = &records.last().unwrap().signal;
        let scenario = owner(set, last);
        let ids: BTreeSet<&str> = scenario.calls.iter().map(|c| c.event_id.as_str()).collect();
        assert!(!last.evidence_event_ids.is_empty() && last.evidence_event_ids.len() <= 20);
        for evidence in &last.evidence_event_ids {
            assert!(
                ids.contains(evidence.as_str()),
                "{id}: evidence {evidence} is not its own"
            );
        }
        assert!(last.evidence_calls >= last.evidence_event_ids.len() as i64);
        assert!(last.tokens_burned > 0 && last.cost_nanos_burned > 0 && last.co2e_ug_burned > 0);
        assert!(last.first_event_at <= last.last_event_at);
        // Figures only grow over a signal's life.
        for pair in records.windows(2) {
            assert!(pair[1].signal.evidence_calls >= pair[0].signal.evidence_calls);
            assert!(pair[1].signal.cost_nanos_burned >= pair[0].signal.cost_nanos_burned);
        }
        let alerts: Vec<AlertState> = records
            .iter()
            .filter_map(|e| e.alert.as_ref().map(|a| a.state))
            .collect();
        assert!(
            alerts.len() <= 3 && alerts.last() == Some(&AlertState::Resolved),
            "{id}: alerts {alerts:?}"
        );
    }
}

#[test]
fn scenario_set_seed_7_recall_one_no_false_positive() {
    check_seed(7, true);
}

#[test]
fn scenario_set_seed_2026_recall_one_no_false_positive() {
    check_seed(2026, true);
}

#[test]
fn the_set_is_the_same_for_the_same_seed() {
    let a = scenario_set(7);
    let b = scenario_set(7);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.calls, y.calls);
    }
    assert_ne!(scenario_set(8)[0].calls, a[0].calls);
}

/// Thirty more sets: a detector tuned to one seed's luck fails here.
#[test]
fn thirty_more_seeds_recall_one_no_false_positive() {
    for seed in 100..130 {
        check_seed(seed, false);
    }
}
