//! The e2e benchmark's pure arithmetic (percentiles, spreads, the verdict on a held rate, the
//! search over rates: `benches/e2e/stats.rs`), tested where `cargo test` runs; the benchmark
//! itself needs the servers and a quarter of an hour.
#[allow(dead_code)]
#[path = "../benches/e2e/stats.rs"]
mod stats;

use std::time::Duration;

use stats::*;

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), Some(50.0));
    assert_eq!(percentile(&v, 0.99), Some(99.0));
    assert_eq!(percentile(&v, 1.0), Some(100.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    assert_eq!(percentile(&[], 0.5), None);
    let three = [1.0, 2.0, 3.0];
    assert_eq!(percentile(&three, 0.5), Some(2.0));
    assert_eq!(percentile(&three, 0.99), Some(3.0));
}

#[test]
fn latency_sorts_its_samples() {
    let ms = |v: u64| Duration::from_millis(v);
    let l = Latency::of(&[ms(300), ms(100), ms(200)]).unwrap();
    assert_eq!(
        (l.samples, l.p50_ms, l.p99_ms, l.max_ms),
        (3, 200.0, 300.0, 300.0)
    );
    assert_eq!(Latency::of(&[]), None);
}

#[test]
fn spread_is_min_median_max() {
    let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
    assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
    let even = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
    assert_eq!(even.median, 2.5);
    assert_eq!(Spread::of(&[f64::NAN]), None);
    assert_eq!(Spread::of(&[]), None);
}

#[test]
fn slope_fits_a_line() {
    let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
    assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(slope(&[(1.0, 2.0)]), None);
    assert_eq!(slope(&[(1.0, 2.0), (1.0, 5.0)]), None);
}

/// A phase of `secs` seconds at `rate` calls/s, where the pipeline makes `capacity`
/// rows/s visible after a delay of one second, sampled every 250 ms; then the drain.
fn phase(rate: f64, capacity: f64, secs: f64) -> (Vec<Sample>, Option<f64>) {
    let mut samples = Vec::new();
    let mut visible = 0.0_f64;
    let mut drained = None;
    let mut t = 0.0;
    while t < secs + 60.0 {
        let accepted = rate * t.min(secs);
        if t >= 1.0 {
            visible = (visible + capacity * 0.25).min(accepted);
        }
        samples.push(Sample {
            t,
            accepted: accepted as u64,
            visible: visible as u64,
        });
        if t > secs && visible >= accepted && drained.is_none() {
            drained = Some(t);
        }
        t += 0.25;
    }
    (samples, drained)
}

#[test]
fn a_rate_below_capacity_is_sustained() {
    let (samples, drained) = phase(8_000.0, 10_000.0, 30.0);
    let hold = judge(&samples, (0.0, 30.0), drained, &Criteria::default());
    assert!(hold.sustained, "{hold:?}");
    assert!((hold.offered - 8_000.0).abs() < 10.0, "{hold:?}");
    assert!((hold.visible - 8_000.0).abs() < 100.0, "{hold:?}");
    assert!(hold.drain_secs.unwrap() < 2.0, "{hold:?}");
}

#[test]
fn a_rate_above_capacity_is_not() {
    let (samples, drained) = phase(12_000.0, 10_000.0, 30.0);
    let hold = judge(&samples, (0.0, 30.0), drained, &Criteria::default());
    assert!(!hold.sustained);
    assert!((hold.lag_growth - 2_000.0).abs() < 100.0, "{hold:?}");
    assert!((hold.visible - 10_000.0).abs() < 100.0, "{hold:?}");
    assert!(hold.reason.unwrap().contains("lag grew"));
}

/// As [`phase`], but rows become visible in steps: every `period` seconds, all that was
/// processed by then (a saw-toothed lag, as batches and transactions make it).
fn stepped(rate: f64, capacity: f64, period: f64, secs: f64) -> (Vec<Sample>, Option<f64>) {
    let (smooth, _) = phase(rate, capacity, secs);
    let mut samples = Vec::new();
    let mut shown = 0;
    let mut drained = None;
    for s in smooth {
        if (s.t / period).fract() < 0.01 {
            shown = s.visible;
        }
        samples.push(Sample {
            visible: shown,
            ..s
        });
        if s.t > secs && shown >= s.accepted && drained.is_none() {
            drained = Some(s.t);
        }
    }
    (samples, drained)
}

#[test]
fn a_saw_toothed_lag_is_judged_by_its_trend() {
    let (samples, drained) = stepped(9_000.0, 10_000.0, 6.0, 40.0);
    let hold = judge(&samples, (0.0, 40.0), drained, &Criteria::default());
    assert!(hold.sustained, "{hold:?}");
    let (samples, drained) = stepped(12_000.0, 10_000.0, 6.0, 40.0);
    let hold = judge(&samples, (0.0, 40.0), drained, &Criteria::default());
    assert!(!hold.sustained, "{hold:?}");
    assert!(hold.reason.unwrap().contains("lag grew"));
}

#[test]
fn a_slow_drain_is_not_sustained() {
    // The lag was flat, but the last of it took 20 s to show.
    let (samples, _) = phase(8_000.0, 10_000.0, 30.0);
    let hold = judge(&samples, (0.0, 30.0), Some(50.0), &Criteria::default());
    assert!(!hold.sustained);
    assert!(hold.reason.unwrap().contains("to drain"));
    let never = judge(&samples, (0.0, 30.0), None, &Criteria::default());
    assert_eq!(never.reason.as_deref(), Some("the backlog did not drain"));
}

/// The factors a search tries when every factor up to `capacity` holds.
fn search(mut search: Search, capacity: f64) -> Vec<f64> {
    let mut tried = Vec::new();
    while let Some(f) = search.next_factor() {
        tried.push((f * 1000.0).round() / 1000.0);
        search.record(f <= capacity);
    }
    tried
}

#[test]
fn the_search_brackets_then_bisects() {
    // Capacity between 1.25 and 1.5625: up by 1.25 until a rate fails, then bisect.
    assert_eq!(
        search(Search::new(1.0, 1.25, 0.05, 6), 1.3),
        [1.0, 1.25, 1.563, 1.398, 1.322, 1.285]
    );
    // Capacity below the start: down until a rate holds, then bisect.
    assert_eq!(
        search(Search::new(1.0, 1.25, 0.05, 6), 0.7),
        [1.0, 0.8, 0.64, 0.716, 0.677, 0.696]
    );
    // Resolution reached: a 20 % bracket ends the search before max_holds.
    assert_eq!(
        search(Search::new(1.0, 1.25, 0.2, 10), 1.1),
        [1.0, 1.25, 1.118]
    );
}

#[test]
fn the_search_stops_at_max_holds_and_at_the_bounds() {
    assert_eq!(search(Search::new(1.0, 1.25, 0.05, 2), 5.0), [1.0, 1.25]);
    assert_eq!(
        search(Search::new(1.0, 1.25, 0.05, 0), 5.0),
        Vec::<f64>::new()
    );
    // Everything holds: up to 16 at most.
    assert_eq!(
        search(Search::new(4.0, 2.0, 0.05, 10), 100.0),
        [4.0, 8.0, 16.0]
    );
    // Nothing holds: down to 1/16 at most.
    assert_eq!(
        search(Search::new(0.25, 2.0, 0.05, 10), 0.0),
        [0.25, 0.125, 0.063]
    );
}
