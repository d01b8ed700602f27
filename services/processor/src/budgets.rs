//! Team budgets and role benchmarks: pure logic over enriched calls, no I/O.
//!
//! - A budget is an amount per period (UTC day, ISO week starting Monday, calendar month) for
//!   a team. An `Alert` fires once per threshold per period when the period's priced spend
//!   reaches it (default 50 %, 80 %, 100 %).
//! - Burn rate: when the period's forecast — spend so far + the trailing hour's spend rate ×
//!   the time left in the period — exceeds the budget before the spend does, one alert per
//!   period.
//! - Role benchmarks: a user whose tokens over the trailing 24 hours exceed `review_multiple`
//!   (default 3) × their role's expected tokens per day gets one review alert per UTC day —
//!   a prompt to look, not a verdict.
//!
//! Time is event time. Unpriced calls add no spend (their count is in the spend windows).
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use tally_contract::records::{Alert, AlertKind, AlertState, EnrichedLlmCall, Micros, Severity};
use time::{Date, Month, OffsetDateTime, Time};

use tally_accounting::decimal::Decimal;

const HOUR: Micros = 3_600_000_000;
const DAY: Micros = 24 * HOUR;

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

/// One team budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Name used in alerts.
    pub name: String,
    /// Tenant of the team.
    pub tenant: String,
    /// Team the budget is for.
    pub team: String,
    /// Period the amount is for: day, week or month.
    pub period: Period,
    /// Amount in US dollars per period (a string keeps it exact: "50000").
    pub amount_usd: Decimal,
    /// Percentages of the amount that alert, once each per period.
    #[serde(default = "default_thresholds")]
    pub thresholds_percent: Vec<u32>,
    /// Whether to alert when the forecast exceeds the amount.
    #[serde(default = "default_true")]
    pub burn_rate_alert: bool,
}

fn default_thresholds() -> Vec<u32> {
    vec![50, 80, 100]
}
fn default_true() -> bool {
    true
}

/// Expected usage by role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Role of each user.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Expected tokens (input + output) per day, by role.
    #[serde(default)]
    pub expected_tokens_per_day: BTreeMap<String, i64>,
    /// A user above this multiple of their role's expected usage gets a review alert.
    #[serde(default = "default_review_multiple")]
    pub review_multiple: u32,
}

fn default_review_multiple() -> u32 {
    3
}

/// How long after a budget period ends its spend is kept, for calls that arrive late: a late
/// call within it counts in the period it belongs to; a later one is counted as late.
pub const PERIOD_LATENESS: Micros = 3 * DAY;

/// One partition's budget and usage state: what the changelog keeps. Budgets are known by
/// name, so adding or reordering `[[budgets]]` gives none another's spend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    /// Spend per (budget name, period start), nano-dollars.
    #[serde(default, with = "crate::state_serde")]
    pub spent_by_budget: BTreeMap<(String, Micros), i128>,
    /// Thresholds already alerted per (budget name, period start); 0 stands for burn rate.
    #[serde(default, with = "crate::state_serde")]
    pub fired_by_budget: BTreeMap<(String, Micros), BTreeSet<u32>>,
    /// The newest event time seen: periods that ended [`PERIOD_LATENESS`] before it go.
    #[serde(default)]
    pub newest: Micros,
    /// State written before budgets were known by name: by position in `[[budgets]]`.
    /// [`BudgetState::adopt`] moves it to the names.
    #[serde(default, skip_serializing, with = "crate::state_serde")]
    pub spent: BTreeMap<(usize, Micros), i128>,
    #[serde(default, skip_serializing, with = "crate::state_serde")]
    pub fired: BTreeMap<(usize, Micros), BTreeSet<u32>>,
    /// Per (tenant, team): spend per minute over the trailing hour.
    #[serde(with = "crate::state_serde")]
    pub minutes: BTreeMap<(String, String), VecDeque<(Micros, i128)>>,
    /// Per (tenant, user): tokens per hour over the trailing day.
    #[serde(with = "crate::state_serde")]
    pub hours: BTreeMap<(String, String), VecDeque<(Micros, i128)>>,
    /// Review alerts sent per (tenant, user, UTC day).
    pub reviewed: BTreeSet<(String, String, Micros)>,
    /// What changed since the changelog was last written (`crate::aggregate_state`).
    #[serde(skip)]
    pub changed: BTreeSet<BudgetKey>,
}

/// One piece of [`BudgetState`] as the changelog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BudgetKey {
    /// A budget's spend and fired thresholds in one period: (name, period start).
    Period(String, Micros),
    /// A team's trailing-hour spend buckets: (tenant, team).
    Minutes(String, String),
    /// A user's trailing-day token buckets: (tenant, user).
    Hours(String, String),
    /// A review alert sent: (tenant, user, UTC day).
    Reviewed(String, String, Micros),
    /// The newest event time seen.
    Newest,
}

impl BudgetState {
    /// After a restore: moves state kept by budget position to the budget's name (the
    /// configuration the state was written with is assumed), and drops the state of budgets
    /// no longer configured, with a log line each.
    pub fn adopt(&mut self, budgets: &[BudgetConfig]) {
        for ((index, start), spent) in std::mem::take(&mut self.spent) {
            if let Some(budget) = budgets.get(index) {
                self.spent_by_budget
                    .insert((budget.name.clone(), start), spent);
                self.changed
                    .insert(BudgetKey::Period(budget.name.clone(), start));
            }
        }
        for ((index, start), fired) in std::mem::take(&mut self.fired) {
            if let Some(budget) = budgets.get(index) {
                self.fired_by_budget
                    .insert((budget.name.clone(), start), fired);
            }
        }
        let names: BTreeSet<&str> = budgets.iter().map(|b| b.name.as_str()).collect();
        let gone: BTreeSet<String> = self
            .spent_by_budget
            .keys()
            .chain(self.fired_by_budget.keys())
            .map(|(name, _)| name.clone())
            .filter(|name| !names.contains(name.as_str()))
            .collect();
        for name in gone {
            tracing::info!(budget = %name, "budget no longer configured: its state is dropped");
            let dropped: Vec<(String, Micros)> = self
                .spent_by_budget
                .keys()
                .chain(self.fired_by_budget.keys())
                .filter(|(n, _)| *n == name)
                .cloned()
                .collect();
            for (n, start) in dropped {
                self.changed.insert(BudgetKey::Period(n, start));
            }
            self.spent_by_budget.retain(|(n, _), _| *n != name);
            self.fired_by_budget.retain(|(n, _), _| *n != name);
        }
    }

    /// Forgets what no call can change any more: budget periods that ended more than
    /// [`PERIOD_LATENESS`] ago, review marks of days before yesterday, and trailing buckets
    /// of teams and users with nothing in them.
    fn prune(&mut self, budgets: &[BudgetConfig]) {
        let horizon = self.newest - PERIOD_LATENESS;
        let period_of: BTreeMap<&str, Period> = budgets
            .iter()
            .map(|b| (b.name.as_str(), b.period))
            .collect();
        let live = |(name, start): &(String, Micros)| {
            period_of
                .get(name.as_str())
                .is_some_and(|period| period_bounds(*period, *start).1 > horizon)
        };
        let yesterday = self.newest - self.newest.rem_euclid(DAY) - DAY;
        let changed = &mut self.changed;
        self.spent_by_budget.retain(|key, _| {
            live(key) || {
                changed.insert(BudgetKey::Period(key.0.clone(), key.1));
                false
            }
        });
        self.fired_by_budget.retain(|key, _| {
            live(key) || {
                changed.insert(BudgetKey::Period(key.0.clone(), key.1));
                false
            }
        });
        self.reviewed.retain(|(tenant, user, day)| {
            *day >= yesterday || {
                changed.insert(BudgetKey::Reviewed(tenant.clone(), user.clone(), *day));
                false
            }
        });
        // Buckets older than their horizon: a team or user quiet for an hour or a day.
        let (hour_ago, day_ago) = (self.newest - HOUR, self.newest - DAY);
        self.minutes.retain(|(tenant, team), buckets| {
            buckets.back().is_some_and(|(start, _)| *start > hour_ago) || {
                changed.insert(BudgetKey::Minutes(tenant.clone(), team.clone()));
                false
            }
        });
        self.hours.retain(|(tenant, user), buckets| {
            buckets.back().is_some_and(|(start, _)| *start > day_ago) || {
                changed.insert(BudgetKey::Hours(tenant.clone(), user.clone()));
                false
            }
        });
    }
}

/// What one call did to the budgets.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Alerts it raises.
    pub alerts: Vec<Alert>,
    /// Whether it belongs to a budget period whose state is gone ([`PERIOD_LATENESS`] after
    /// its end): it adds to no budget then, and is counted as late.
    pub late: bool,
}

/// Applies one call.
pub fn apply(
    budgets: &[BudgetConfig],
    roles: &RolesConfig,
    state: &mut BudgetState,
    call: &EnrichedLlmCall,
    now: Micros,
) -> Applied {
    let mut alerts = Vec::new();
    let mut late = false;
    let at = call.call.occurred_at;
    // Once a day (of event time), forget what no call can change any more.
    if at.div_euclid(DAY) > state.newest.div_euclid(DAY) {
        state.newest = at;
        state.changed.insert(BudgetKey::Newest);
        state.prune(budgets);
    }
    // Sums are 128-bit: a month of a large team's spend passes what an i64 holds.
    let cost = i128::from(call.cost_total_nanos.unwrap_or(0));
    let team_key = (call.call.tenant.clone(), call.call.team.clone());
    state
        .changed
        .insert(BudgetKey::Minutes(team_key.0.clone(), team_key.1.clone()));
    let minutes = state.minutes.entry(team_key).or_default();
    add_bucket(minutes, at - at.rem_euclid(60_000_000), cost, at - HOUR);
    let trailing_hour: i128 = minutes.iter().map(|(_, v)| v).sum();

    if at > state.newest {
        state.newest = at;
        state.changed.insert(BudgetKey::Newest);
    }
    for budget in budgets {
        if budget.tenant != call.call.tenant || budget.team != call.call.team {
            continue;
        }
        let (start, end) = period_bounds(budget.period, at);
        if end <= state.newest - PERIOD_LATENESS {
            // Its period's state is gone: too late to count (the windows still count it).
            late = true;
            continue;
        }
        state
            .changed
            .insert(BudgetKey::Period(budget.name.clone(), start));
        let spent = state
            .spent_by_budget
            .entry((budget.name.clone(), start))
            .or_default();
        *spent += cost;
        let spent = *spent;
        let Ok(limit) = budget.amount_usd.round_scaled_wide(9) else {
            continue;
        };
        let fired = state
            .fired_by_budget
            .entry((budget.name.clone(), start))
            .or_default();
        for &percent in &budget.thresholds_percent {
            let threshold = limit * i128::from(percent) / 100;
            if spent >= threshold && fired.insert(percent) {
                alerts.push(threshold_alert(
                    budget, start, percent, spent, limit, at, now,
                ));
            }
        }
        let forecast = spent + trailing_hour * i128::from(end - at) / i128::from(HOUR);
        if budget.burn_rate_alert && spent < limit && forecast > limit && fired.insert(0) {
            alerts.push(burn_rate_alert(
                budget, start, spent, limit, forecast, at, now,
            ));
        }
    }

    if let (Some(user), Some(role)) = (
        &call.call.user,
        call.call.user.as_ref().and_then(|u| roles.users.get(u)),
    ) {
        if let Some(expected) = roles.expected_tokens_per_day.get(role) {
            let key = (call.call.tenant.clone(), user.clone());
            state
                .changed
                .insert(BudgetKey::Hours(key.0.clone(), key.1.clone()));
            let hours = state.hours.entry(key).or_default();
            add_bucket(
                hours,
                at - at.rem_euclid(HOUR),
                i128::from(call.call.input_tokens) + i128::from(call.call.output_tokens),
                at - DAY,
            );
            let used: i128 = hours.iter().map(|(_, v)| v).sum();
            let day = at - at.rem_euclid(DAY);
            let limit = i128::from(*expected) * i128::from(roles.review_multiple);
            if used > limit
                && state
                    .reviewed
                    .insert((call.call.tenant.clone(), user.clone(), day))
            {
                state.changed.insert(BudgetKey::Reviewed(
                    call.call.tenant.clone(),
                    user.clone(),
                    day,
                ));
                alerts.push(review_alert(
                    call,
                    user,
                    role,
                    used,
                    *expected,
                    roles.review_multiple,
                    day,
                    now,
                ));
            }
        }
    }
    Applied { alerts, late }
}

/// Adds to the bucket at `bucket_start` and drops buckets at or before `horizon`.
fn add_bucket(
    buckets: &mut VecDeque<(Micros, i128)>,
    bucket_start: Micros,
    amount: i128,
    horizon: Micros,
) {
    match buckets.iter_mut().find(|(start, _)| *start == bucket_start) {
        Some((_, value)) => *value += amount,
        None => {
            let at = buckets.partition_point(|(start, _)| *start < bucket_start);
            buckets.insert(at, (bucket_start, amount));
        }
    }
    while buckets.front().is_some_and(|(start, _)| *start <= horizon) {
        buckets.pop_front();
    }
}

/// [start, end) of the period containing `at`, UTC.
pub fn period_bounds(period: Period, at: Micros) -> (Micros, Micros) {
    let time = OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let date = time.date();
    let micros = |date: Date| {
        (date
            .with_time(Time::MIDNIGHT)
            .assume_utc()
            .unix_timestamp_nanos()
            / 1_000) as Micros
    };
    match period {
        Period::Day => {
            let start = micros(date);
            (start, start + DAY)
        }
        Period::Week => {
            let start = micros(date) - date.weekday().number_days_from_monday() as Micros * DAY;
            (start, start + 7 * DAY)
        }
        Period::Month => {
            let first =
                Date::from_calendar_date(date.year(), date.month(), 1).expect("day 1 exists");
            let next = match date.month() {
                Month::December => Date::from_calendar_date(date.year() + 1, Month::January, 1),
                month => Date::from_calendar_date(date.year(), month.next(), 1),
            }
            .expect("day 1 exists");
            (micros(first), micros(next))
        }
    }
}

/// `$1,234.57`: nano-dollars to the cent, for people.
pub fn dollars(nanos: i128) -> String {
    let cents = (nanos + 5_000_000) / 10_000_000;
    format!("${}.{:02}", grouped(cents / 100), cents % 100)
}

/// `1,234,567`: counts a person reads.
pub(crate) fn grouped(n: impl Into<i128>) -> String {
    let n = n.into();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

fn period_label(period: Period, start: Micros) -> String {
    let date = OffsetDateTime::from_unix_timestamp_nanos(start as i128 * 1_000).map(|t| t.date());
    let date = date.map(|d| d.to_string()).unwrap_or_default();
    match period {
        Period::Day => format!("day {date}"),
        Period::Week => format!("week of {date}"),
        Period::Month => format!("month {}", &date[..7.min(date.len())]),
    }
}

fn base_alert(
    budget: &BudgetConfig,
    id: String,
    kind: AlertKind,
    severity: Severity,
    start: Micros,
    at: Micros,
    now: Micros,
) -> Alert {
    Alert {
        alert_id: id,
        kind,
        state: AlertState::Firing,
        severity,
        tenant: budget.tenant.clone(),
        team: Some(budget.team.clone()),
        subject: budget.name.clone(),
        title: String::new(),
        message: String::new(),
        source_id: Some(format!(
            "budget/{}/{}/{}",
            budget.tenant, budget.team, budget.name
        )),
        amount_nanos: None,
        limit_nanos: None,
        labels: [
            ("budget".to_string(), budget.name.clone()),
            ("period".to_string(), period_label(budget.period, start)),
        ]
        .into(),
        occurred_at: at,
        emitted_at: now,
    }
}

fn threshold_alert(
    budget: &BudgetConfig,
    start: Micros,
    percent: u32,
    spent: i128,
    limit: i128,
    at: Micros,
    now: Micros,
) -> Alert {
    let id = format!(
        "budget_threshold/{}/{}/{}/{start}/{percent}",
        budget.tenant, budget.team, budget.name
    );
    let severity = if percent >= 100 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let mut alert = base_alert(
        budget,
        id,
        AlertKind::BudgetThreshold,
        severity,
        start,
        at,
        now,
    );
    alert.title = format!(
        "{} reached {percent}% of budget {} ({})",
        budget.team,
        budget.name,
        period_label(budget.period, start)
    );
    alert.message = format!(
        "Spent {} of {} ({}% threshold) in the {}. Unpriced calls (unknown models) are not included.",
        dollars(spent),
        dollars(limit),
        percent,
        period_label(budget.period, start)
    );
    alert.amount_nanos = Some(spent);
    alert.limit_nanos = Some(limit);
    alert
        .labels
        .insert("threshold_percent".into(), percent.to_string());
    alert
}

fn burn_rate_alert(
    budget: &BudgetConfig,
    start: Micros,
    spent: i128,
    limit: i128,
    forecast: i128,
    at: Micros,
    now: Micros,
) -> Alert {
    let id = format!(
        "budget_burn_rate/{}/{}/{}/{start}",
        budget.tenant, budget.team, budget.name
    );
    let mut alert = base_alert(
        budget,
        id,
        AlertKind::BudgetBurnRate,
        Severity::Warning,
        start,
        at,
        now,
    );
    alert.title = format!(
        "{} is on course to exceed budget {} ({})",
        budget.team,
        budget.name,
        period_label(budget.period, start)
    );
    alert.message = format!(
        "Spent {} of {} so far; at the last hour's rate the {} ends at {}.",
        dollars(spent),
        dollars(limit),
        period_label(budget.period, start),
        dollars(forecast)
    );
    alert.amount_nanos = Some(spent);
    alert.limit_nanos = Some(limit);
    alert
}

#[allow(clippy::too_many_arguments)]
fn review_alert(
    call: &EnrichedLlmCall,
    user: &str,
    role: &str,
    used: i128,
    expected: i64,
    multiple: u32,
    day: Micros,
    now: Micros,
) -> Alert {
    let ratio = used as f64 / expected.max(1) as f64;
    Alert {
        alert_id: format!("usage_review/{}/{user}/{day}", call.call.tenant),
        kind: AlertKind::UsageReview,
        state: AlertState::Firing,
        severity: Severity::Info,
        tenant: call.call.tenant.clone(),
        team: Some(call.call.team.clone()),
        subject: user.to_string(),
        title: format!("Worth a look: {user} used {ratio:.1}× the {role} benchmark in 24 h"),
        message: format!(
            "{user} used {used} tokens in the last 24 hours; a {role} is expected to use about {expected} a day \
             (review above {multiple}×). This is a prompt to look at what the tokens were for — an agent \
             left running, a new workflow, a legitimate spike — not a judgement."
        ),
        source_id: None,
        amount_nanos: None,
        limit_nanos: None,
        labels: [("role".to_string(), role.to_string()), ("user".to_string(), user.to_string())].into(),
        occurred_at: call.call.occurred_at,
        emitted_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::tests::enriched;

    const NOV_23_2026: Micros = 1_795_392_000_000_000; // 2026-11-23T00:00:00Z, a Monday

    fn budget(period: Period, usd: &str) -> BudgetConfig {
        let mut b = BudgetConfig {
            name: "llm".into(),
            tenant: String::new(),
            team: String::new(),
            period,
            amount_usd: usd.parse().unwrap(),
            thresholds_percent: default_thresholds(),
            burn_rate_alert: false,
        };
        let call = enriched("x", 0, "m", None);
        b.tenant = call.call.tenant;
        b.team = call.call.team;
        b
    }

    fn at(secs_after_midnight: i64, cost_usd_cents: i64) -> EnrichedLlmCall {
        enriched(
            "e",
            NOV_23_2026 / 1_000_000 + secs_after_midnight,
            "m",
            Some(cost_usd_cents * 10_000_000),
        )
    }

    #[test]
    fn periods_are_utc_days_iso_weeks_and_calendar_months() {
        let noon = NOV_23_2026 + 12 * HOUR;
        assert_eq!(
            period_bounds(Period::Day, noon),
            (NOV_23_2026, NOV_23_2026 + DAY)
        );
        assert_eq!(
            period_bounds(Period::Week, noon + 3 * DAY),
            (NOV_23_2026, NOV_23_2026 + 7 * DAY)
        );
        let (start, end) = period_bounds(Period::Month, noon);
        assert_eq!((start, end), (1_793_491_200_000_000, 1_796_083_200_000_000));
        // Nov 1 .. Dec 1
    }

    fn named(name: &str, usd: &str) -> BudgetConfig {
        BudgetConfig {
            name: name.into(),
            ..budget(Period::Day, usd)
        }
    }

    #[test]
    fn budgets_are_known_by_name_whatever_their_order() {
        let roles = RolesConfig::default();
        let mut state = BudgetState::default();
        let first = [named("a", "100"), named("b", "1000")];
        apply(&first, &roles, &mut state, &at(10, 6_000), 0);
        // A budget inserted before both, and the two swapped: each keeps its own spend.
        let later = [named("new", "10000"), named("b", "1000"), named("a", "100")];
        let alerts = apply(&later, &roles, &mut state, &at(20, 2_000), 0).alerts;
        let fired: Vec<(&str, &str)> = alerts
            .iter()
            .map(|a| {
                (
                    a.labels["budget"].as_str(),
                    a.labels["threshold_percent"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            fired,
            [("a", "80")],
            "a: $80 of $100 (its 50% fired before)"
        );
        assert_eq!(
            state.spent_by_budget[&("a".into(), NOV_23_2026)],
            80_000_000_000
        );
        assert_eq!(
            state.spent_by_budget[&("b".into(), NOV_23_2026)],
            80_000_000_000
        );
        // A budget removed from the configuration: its state goes when the state is restored.
        state.adopt(&[named("b", "1000")]);
        assert!(state.spent_by_budget.keys().all(|(name, _)| name != "a"));
        assert!(state.fired_by_budget.keys().all(|(name, _)| name != "a"));
    }

    #[test]
    fn state_written_by_position_is_adopted_by_name() {
        let mut state = BudgetState::default();
        state.spent.insert((1, NOV_23_2026), 5);
        state.fired.insert((1, NOV_23_2026), BTreeSet::from([50]));
        let json = serde_json::to_value(&state).unwrap();
        assert!(
            json.get("spent").is_none(),
            "positions are read, never written"
        );
        state.adopt(&[named("a", "1"), named("b", "1")]);
        assert_eq!(state.spent_by_budget[&("b".into(), NOV_23_2026)], 5);
        assert!(state.spent.is_empty());
    }

    #[test]
    fn closed_periods_are_forgotten_and_a_call_for_one_is_late() {
        let roles = RolesConfig::default();
        let mut state = BudgetState::default();
        let budgets = [named("a", "100")];
        apply(&budgets, &roles, &mut state, &at(10, 100), 0);
        // Two days later the day is still kept (a late call counts in it) ...
        let two_days = 2 * 86_400;
        assert!(!apply(&budgets, &roles, &mut state, &at(two_days, 100), 0).late);
        assert!(!apply(&budgets, &roles, &mut state, &at(20, 100), 0).late);
        assert_eq!(
            state.spent_by_budget[&("a".into(), NOV_23_2026)],
            2_000_000_000
        );
        // ... five days later it is gone, and a call for it is counted as late.
        let five_days = 5 * 86_400;
        apply(&budgets, &roles, &mut state, &at(five_days, 100), 0);
        assert!(!state
            .spent_by_budget
            .contains_key(&("a".into(), NOV_23_2026)));
        assert!(apply(&budgets, &roles, &mut state, &at(30, 100), 0).late);
        assert_eq!(
            state.spent_by_budget.len(),
            2,
            "the days of the later calls"
        );
    }

    #[test]
    fn each_threshold_alerts_once_per_period() {
        let budgets = [budget(Period::Day, "100")];
        let mut state = BudgetState::default();
        let roles = RolesConfig::default();
        let titles = |alerts: Vec<Alert>| {
            alerts
                .into_iter()
                .map(|a| a.labels["threshold_percent"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            titles(apply(&budgets, &roles, &mut state, &at(10, 4_000), 0).alerts),
            Vec::<String>::new()
        );
        assert_eq!(
            titles(apply(&budgets, &roles, &mut state, &at(20, 4_500), 0).alerts),
            ["50", "80"]
        );
        assert_eq!(
            titles(apply(&budgets, &roles, &mut state, &at(30, 100), 0).alerts),
            Vec::<String>::new()
        );
        let alerts = apply(&budgets, &roles, &mut state, &at(40, 2_000), 0).alerts;
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].severity, Severity::Critical);
        assert_eq!(alerts[0].message, "Spent $106.00 of $100.00 (100% threshold) in the day 2026-11-23. Unpriced calls (unknown models) are not included.");
        assert_eq!(
            (alerts[0].amount_nanos, alerts[0].limit_nanos),
            (Some(106_000_000_000), Some(100_000_000_000))
        );
        // The next day starts again.
        assert_eq!(
            titles(apply(&budgets, &roles, &mut state, &at(86_400 + 10, 5_000), 0).alerts),
            ["50"]
        );
    }

    #[test]
    fn burn_rate_alerts_when_the_forecast_exceeds_the_budget() {
        let mut b = budget(Period::Day, "1000");
        b.burn_rate_alert = true;
        b.thresholds_percent = vec![];
        let budgets = [b];
        let mut state = BudgetState::default();
        let roles = RolesConfig::default();
        // $10 in the first hour, observed at 01:00: forecast 10 + 10 × 23 = $240 — fine.
        assert!(apply(&budgets, &roles, &mut state, &at(3_599, 1_000), 0)
            .alerts
            .is_empty());
        // $60 in the hour before 02:00: forecast 70 + 60 × 22 = $1,390 > $1,000.
        let alerts = apply(&budgets, &roles, &mut state, &at(7_199, 6_000), 0).alerts;
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::BudgetBurnRate);
        assert!(
            alerts[0]
                .message
                .starts_with("Spent $70.00 of $1,000.00 so far"),
            "{}",
            alerts[0].message
        );
        assert!(
            apply(&budgets, &roles, &mut state, &at(7_300, 6_000), 0)
                .alerts
                .is_empty(),
            "once per period"
        );
    }

    #[test]
    fn a_user_far_above_the_role_benchmark_gets_one_review_prompt() {
        let roles = RolesConfig {
            users: [("u-7f3a".to_string(), "engineer".to_string())].into(),
            expected_tokens_per_day: [("engineer".to_string(), 100)].into(),
            review_multiple: 3,
        };
        let mut state = BudgetState::default();
        // Each call is 110 tokens; the third makes 330 > 300.
        assert!(apply(&[], &roles, &mut state, &at(10, 1), 0)
            .alerts
            .is_empty());
        assert!(apply(&[], &roles, &mut state, &at(20, 1), 0)
            .alerts
            .is_empty());
        let alerts = apply(&[], &roles, &mut state, &at(30, 1), 0).alerts;
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::UsageReview);
        assert_eq!(
            alerts[0].title,
            "Worth a look: u-7f3a used 3.3× the engineer benchmark in 24 h"
        );
        assert!(alerts[0].message.contains("not a judgement"));
        assert!(
            apply(&[], &roles, &mut state, &at(40, 1), 0)
                .alerts
                .is_empty(),
            "once per day"
        );
    }
}
