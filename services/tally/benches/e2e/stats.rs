//! The e2e harness's pure arithmetic, no I/O: percentiles, min/median/max over runs, the
//! least-squares slope of a series, the verdict on a held rate (sustained or not), and the
//! search over held rates. Its tests are in `services/tally/tests/e2e_stats.rs`.
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
    /// The share of the load, from its start, left out while the lag fills up to its level.
    pub settle: f64,
    /// Over the rest of the load, the lag may grow by at most this share of the offered rate
    /// per second. Rows become visible in steps (the processor's transactions, the sink's
    /// batches, ClickHouse's inserts on the shared cores), so the lag is saw-toothed, with
    /// teeth of several seconds on a loaded machine: the slope fitted over a window of a few
    /// teeth wanders by some percent of the rate; more is a queue that builds up.
    pub max_lag_growth: f64,
    /// Once the load stops, the backlog must be visible within this long.
    pub max_drain: Duration,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            settle: 1.0 / 3.0,
            max_lag_growth: 0.1,
            max_drain: Duration::from_secs(15),
        }
    }
}

/// The verdict on one held rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hold {
    /// Calls/s ingest accepted while the load ran.
    pub offered: f64,
    /// Rows/s that became visible over the load after it settled.
    pub visible: f64,
    /// Fitted growth of the lag over the load after it settled, calls/s.
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
            .rfind(|s| s.t <= t)
            .or(samples.first())
            .copied()
    };
    let offered = match (at(start), at(end)) {
        (Some(a), Some(b)) if end > start => (b.accepted - a.accepted) as f64 / (end - start),
        _ => 0.0,
    };
    let half = start + criteria.settle * (end - start);
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
            "the lag grew by {lag_growth:.0} calls/s (allowed {allowed:.0})"
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

/// The search over held rates, in factors of the probe's capacity estimate: it starts at
/// `start`, multiplies by `step` while the rates hold and divides by it while they do not;
/// once one rate held and a higher one did not, it bisects (geometric mean) between the two
/// until they are within `resolution` of each other (`hi / lo <= 1 + resolution`) or
/// `max_holds` rates were tried. Factors stay within `[1/16, 16]`.
#[derive(Debug, Clone)]
pub struct Search {
    step: f64,
    resolution: f64,
    max_holds: usize,
    tried: usize,
    next: Option<f64>,
    /// The highest factor that held, and the lowest that did not.
    lo: Option<f64>,
    hi: Option<f64>,
}

impl Search {
    pub fn new(start: f64, step: f64, resolution: f64, max_holds: usize) -> Search {
        assert!(start > 0.0 && step > 1.0 && resolution > 0.0);
        Search {
            step,
            resolution,
            max_holds,
            tried: 0,
            next: (max_holds > 0).then_some(start),
            lo: None,
            hi: None,
        }
    }

    /// The factor to hold next, if any.
    pub fn next_factor(&self) -> Option<f64> {
        self.next
    }

    /// Records the verdict on the factor just held and picks the next.
    pub fn record(&mut self, sustained: bool) {
        let Some(current) = self.next else { return };
        self.tried += 1;
        if sustained {
            self.lo = Some(self.lo.map_or(current, |lo| lo.max(current)));
        } else {
            self.hi = Some(self.hi.map_or(current, |hi| hi.min(current)));
        }
        let next = match (self.lo, self.hi) {
            (Some(lo), Some(hi)) => (hi / lo > 1.0 + self.resolution).then(|| (lo * hi).sqrt()),
            (Some(lo), None) => Some(lo * self.step),
            (None, Some(hi)) => Some(hi / self.step),
            (None, None) => None,
        };
        self.next = next.filter(|f| self.tried < self.max_holds && (1.0 / 16.0..=16.0).contains(f));
    }
}
