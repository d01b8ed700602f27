//! `context_growth`: over the latest `window_steps` steps, input tokens per call rise fast
//! (the least-squares slope, as a share of the window's mean, is at least
//! `min_growth_per_step`: a context that grows by a share of itself every step makes the
//! tokens spent grow quadratically with steps) while at most `max_cache_read_share` of the
//! input is read from cache. Once open, the signal continues while growth stays above a
//! quarter of the threshold, so a slowing loop is not resolved while it still grows.
use super::config::ContextGrowthConfig;
use super::session::{Finding, SessionState};
use crate::budgets::grouped;

/// A finding when input tokens grow fast and uncached; `open` says the signal is already open.
pub fn check(config: &ContextGrowthConfig, session: &SessionState, open: bool) -> Option<Finding> {
    if !config.enabled || session.history.len() < config.window_steps {
        return None;
    }
    let steps: Vec<_> = session.latest(config.window_steps).collect();
    let (first, last) = (steps[0], steps[steps.len() - 1]);
    if last.input_tokens < config.min_input_tokens {
        return None;
    }
    let input: i64 = steps.iter().map(|s| s.input_tokens).sum();
    let cached: i64 = steps.iter().map(|s| s.cache_read_tokens).sum();
    let cache_share = if input > 0 {
        cached as f64 / input as f64
    } else {
        0.0
    };
    if cache_share > config.max_cache_read_share {
        return None;
    }
    let tokens: Vec<f64> = steps.iter().map(|s| s.input_tokens as f64).collect();
    let growth = relative_slope(&tokens);
    let threshold = if open {
        config.min_growth_per_step / 4.0
    } else {
        config.min_growth_per_step
    };
    if growth < threshold {
        return None;
    }
    let explanation = format!(
        "input tokens per call grew from {} to {} over the latest {} steps ({:.0}% of their mean \
         per step) with {:.0}% read from cache: tokens spent grow quadratically with steps",
        grouped(first.input_tokens),
        grouped(last.input_tokens),
        steps.len(),
        growth * 100.0,
        cache_share * 100.0
    );
    Some(Finding::from_steps(steps, explanation))
}

/// Least-squares slope of `values` against their index, divided by their mean.
pub fn relative_slope(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = values.iter().sum::<f64>() / n;
    if mean_y <= 0.0 {
        return 0.0;
    }
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        covariance += dx * (y - mean_y);
        variance += dx * dx;
    }
    covariance / variance / mean_y
}

#[cfg(test)]
mod tests {
    use super::relative_slope;

    #[test]
    fn slope_is_relative_to_the_mean() {
        // 10, 20, 30, 40: slope 10, mean 25.
        assert!((relative_slope(&[10.0, 20.0, 30.0, 40.0]) - 0.4).abs() < 1e-12);
        assert_eq!(relative_slope(&[5.0, 5.0, 5.0]), 0.0);
        assert!(relative_slope(&[40.0, 30.0, 20.0, 10.0]) < 0.0);
    }
}
