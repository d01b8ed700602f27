//! The e2e harness's pure arithmetic, no I/O: percentiles, min/median/max over runs, the
//! least-squares slope of a series, the verdict on a held rate (sustained or not), and the
//! search over held rates. `services/tally/tests/e2e_stats.rs` runs its tests.
use std::time::Duration;

/// The value below which a share `p` (0..=1) of the sorted values lie: nearest rank, so the
/// figure is always one that was measured. `None` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latencies in milliseconds, sorted, as p50 / p99 / max with their count.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// `None` when nothing was measured.
    pub fn of(latencies: &[Duration]) -> Option<Latency> {
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Latency {
            samples: ms.len(),
            p50_ms: percentile(&ms, 0.50)?,
            p99_ms: percentile(&ms, 0.99)?,
            max_ms: *ms.last()?,
        })
    }
}

/// The smallest, middle and largest of a figure over the runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// Over the runs that measured the figure; `None` when none did. The median of an even
    /// count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Spread {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }
}

/// Least-squares slope of `y` over `x`; `None` for fewer than two distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// One observation of the pipeline during a phase: seconds since the phase started, calls
/// ingest had accepted (its counter) and rows visible in ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub accepted: u64,
    pub visible: u64,
}

impl Sample {
    /// Calls accepted and not yet visible.
    pub fn lag(&self) -> f64 {
        self.accepted as f64 - self.visible as f64
    }
}

/// The slope of the visible rows over `[from, to]` seconds: rows/s that became visible.
pub fn visible_rate(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= from && s.t <= to)
        .map(|s| (s.t, s.visible as f64))
        .collect();
    slope(&points)
}

/// What makes a held rate sustained.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Criteria {
    /// Over the second half of the load, the lag may grow by at most this share of the
    /// offered rate per second (the sink's batches and the processor's transactions make it
    /// saw-toothed; a fitted slope below this is noise, above it a queue that builds up).
    pub max_lag_growth: f64,
    /// Once the load stops, the backlog must be visible within this long.
    pub max_drain: Duration,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            max_lag_growth: 0.02,
            max_drain: Duration::from_secs(6),
        }
    }
}

/// The verdict on one held rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hold {
    /// Calls/s ingest accepted while the load ran.
    pub offered: f64,
    /// Rows/s that became visible over the second half of the load.
    pub visible: f64,
    /// Fitted growth of the lag over the second half, calls/s.
    pub lag_growth: f64,
    /// From the end of the load until every accepted call was visible; `None` if it was not
    /// within the time waited.
    pub drain_secs: Option<f64>,
    pub sustained: bool,
    /// Why not, in words, when not.
    pub reason: Option<String>,
}

/// Judges a held rate from the samples of its phase: `load` is when the load ran (seconds
/// since the phase started), `drained_at` when every accepted call was visible, if it was.
pub fn judge(
    samples: &[Sample],
    load: (f64, f64),
    drained_at: Option<f64>,
    criteria: &Criteria,
) -> Hold {
    let (start, end) = load;
    let at = |t: f64| {
        samples
            .iter()
            .filter(|s| s.t <= t)
            .next_back()
            .or(samples.first())
            .copied()
    };
    let offered = match (at(start), at(end)) {
        (Some(a), Some(b)) if end > start => (b.accepted - a.accepted) as f64 / (end - start),
        _ => 0.0,
    };
    let half = (start + end) / 2.0;
    let lag: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= half && s.t <= end)
        .map(|s| (s.t, s.lag()))
        .collect();
    let lag_growth = slope(&lag).unwrap_or(0.0);
    let visible = visible_rate(samples, half, end).unwrap_or(0.0);
    let drain_secs = drained_at.map(|t| (t - end).max(0.0));
    let allowed = criteria.max_lag_growth * offered;
    let reason = if offered <= 0.0 {
        Some("no load was accepted".to_string())
    } else if lag_growth > allowed {
        Some(format!(
            "the lag grew by {lag_growth:.0} calls/s over the second half (allowed {allowed:.0})"
        ))
    } else {
        match drain_secs {
            None => Some("the backlog did not drain".to_string()),
            Some(d) if d > criteria.max_drain.as_secs_f64() => Some(format!(
                "the backlog took {d:.1} s to drain (allowed {:.0} s)",
                criteria.max_drain.as_secs_f64()
            )),
            Some(_) => None,
        }
    };
    Hold {
        offered,
        visible,
        lag_growth,
        drain_secs,
        sustained: reason.is_none(),
        reason,
    }
}

/// The search over held rates: factors of the probe's capacity estimate, tried from the
/// middle one up while they hold and down while they do not, until the verdict turns or
/// `max_holds` were tried.
#[derive(Debug, Clone)]
pub struct Search {
    factors: Vec<f64>,
    next: Option<usize>,
    direction: Option<bool>,
    tried: usize,
    max_holds: usize,
}

impl Search {
    /// Starts at `factors[start]`.
    pub fn new(factors: &[f64], start: usize, max_holds: usize) -> Search {
        Search {
            factors: factors.to_vec(),
            next: (start < factors.len() && max_holds > 0).then_some(start),
            direction: None,
            tried: 0,
            max_holds,
        }
    }

    /// The factor to hold next, if any.
    pub fn next_factor(&self) -> Option<f64> {
        self.next.map(|i| self.factors[i])
    }

    /// Records the verdict on the factor just held and picks the next.
    pub fn record(&mut self, sustained: bool) {
        let Some(current) = self.next else { return };
        self.tried += 1;
        let turned = self.direction.is_some_and(|up| up != sustained);
        self.direction = Some(sustained);
        self.next = if turned || self.tried >= self.max_holds {
            None
        } else if sustained {
            (current + 1 < self.factors.len()).then_some(current + 1)
        } else {
            current.checked_sub(1)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_search_goes_up_while_rates_hold_and_stops_when_one_does_not() {
        let factors = [0.55, 0.7, 0.85, 1.0, 1.15];
        let mut search = Search::new(&factors, 2, 5);
        let mut tried = Vec::new();
        // Capacity between 1.0 and 1.15.
        while let Some(f) = search.next_factor() {
            tried.push(f);
            search.record(f <= 1.0);
        }
        assert_eq!(tried, [0.85, 1.0, 1.15]);

        let mut search = Search::new(&factors, 2, 5);
        let mut tried = Vec::new();
        // Capacity between 0.55 and 0.7.
        while let Some(f) = search.next_factor() {
            tried.push(f);
            search.record(f <= 0.6);
        }
        assert_eq!(tried, [0.85, 0.7, 0.55]);
    }

    #[test]
    fn the_search_stops_at_the_ends_and_at_max_holds() {
        let factors = [0.7, 0.85, 1.0];
        let mut search = Search::new(&factors, 1, 5);
        let mut tried = Vec::new();
        while let Some(f) = search.next_factor() {
            tried.push(f);
            search.record(true);
        }
        assert_eq!(tried, [0.85, 1.0]);

        let mut search = Search::new(&[0.55, 0.7, 0.85, 1.0, 1.15], 2, 2);
        let mut tried = Vec::new();
        while let Some(f) = search.next_factor() {
            tried.push(f);
            search.record(false);
        }
        assert_eq!(tried, [0.85, 0.7]);
        assert_eq!(Search::new(&factors, 1, 0).next_factor(), None);
    }
}
