//! A whole workload: teams of different sizes and habits, business hours in their regions,
//! a mix of real catalogue models, deploys and tickets that follow the teams' work, and
//! runaway agents injected among healthy sessions, labelled in their tags
//! (`tally.label` = the loop kind, `healthy/<shape>` otherwise).
//!
//! The "inverted U": most users are light chat users; a few heavy agent users (about one in
//! eight) run long agent sessions and spend most of the tokens.
use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_contract::records::{
    DeployEvent, DeployStatus, LlmCall, LoopSignalType, Micros, TicketEvent, TicketKind,
    TicketStatus,
};

use crate::sessions::{self, Caller, Gen, Shape, HOUR, LOOPS, MINUTE};

const DAY: Micros = 24 * HOUR;

/// Which sessions a workload has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Healthy sessions with a runaway agent now and then (one agent session in 20).
    Mixed,
    /// Healthy sessions only.
    Healthy,
    /// Runaway agents only, every kind in turn.
    Loops,
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Mix, String> {
        match s {
            "mixed" => Ok(Mix::Mixed),
            "healthy" => Ok(Mix::Healthy),
            "loops" => Ok(Mix::Loops),
            other => Err(format!(
                "unknown scenario {other:?}; expected mixed, healthy or loops"
            )),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    pub seed: u64,
    pub tenant: String,
    pub teams: usize,
    /// Calls to generate.
    pub calls: usize,
    /// Event time of the workload's start, and how long it spans.
    pub start: Micros,
    pub span: Micros,
    pub mix: Mix,
}

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Call(Box<LlmCall>),
    Deploy(DeployEvent),
    Ticket(TicketEvent),
}

impl Event {
    /// Its event time.
    pub fn at(&self) -> Micros {
        match self {
            Event::Call(c) => c.occurred_at,
            Event::Deploy(d) => d.occurred_at,
            Event::Ticket(t) => t.occurred_at,
        }
    }

    fn id(&self) -> &str {
        match self {
            Event::Call(c) => &c.event_id,
            Event::Deploy(d) => &d.event_id,
            Event::Ticket(t) => &t.event_id,
        }
    }
}

/// A generated workload, in event-time order.
#[derive(Debug, Clone)]
pub struct Workload {
    pub events: Vec<Event>,
    /// Sessions generated, and the runaway ones among them by kind.
    pub sessions: usize,
    pub loops: BTreeMap<LoopSignalType, usize>,
}

/// A team: its name, region, time zone and users.
#[derive(Debug, Clone)]
struct Team {
    name: String,
    region: &'static str,
    utc_offset_hours: i64,
    users: Vec<User>,
    next_ticket: u32,
}

#[derive(Debug, Clone)]
struct User {
    name: String,
    heavy: bool,
}

const TEAM_NAMES: [&str; 16] = [
    "platform", "payments", "search", "growth", "research", "support", "data", "mobile", "infra",
    "security", "ml", "web", "checkout", "identity", "billing", "ads",
];
/// Regions with their offset from UTC, for business hours.
const REGIONS: [(&str, i64); 5] = [
    ("us-east-1", -5),
    ("us-west-2", -8),
    ("europe-west4", 1),
    ("eu-west-1", 0),
    ("ap-northeast-1", 9),
];
/// Models a session may use instead of its shape's own, weighted; one is not in any
/// catalogue (its calls are unpriced).
const MODELS: [((&str, &str), u32); 7] = [
    (("openai", "gpt-4o-mini"), 30),
    (("openai", "gpt-4o"), 20),
    (("anthropic", "claude-sonnet-4-5"), 25),
    (("gcp.gemini", "gemini-2.5-flash"), 10),
    (("openai", "gpt-4.1"), 10),
    (("openai", "o3-mini"), 4),
    (("acme", "acme-internal-7b"), 1),
];
/// Shapes of heavy users' sessions, weighted.
const AGENT_SHAPES: [(&str, Shape, u32); 5] = [
    ("coding-agent", sessions::coding_agent, 45),
    ("multi-agent", sessions::multi_agent, 20),
    ("flaky-provider", sessions::flaky_provider, 20),
    ("rag", sessions::rag_assistant, 10),
    ("batch-job", sessions::batch_job, 5),
];

/// Generates the workload: sessions at business-hours-weighted times until there are
/// `config.calls` calls, plus the tickets they worked on and the deploys that shipped them.
pub fn generate(config: &TrafficConfig) -> Workload {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut teams = make_teams(&mut rng, config.teams.max(1));
    let mut calls: Vec<LlmCall> = Vec::new();
    let mut others: Vec<Event> = Vec::new();
    let mut loops = BTreeMap::new();
    let mut sessions = 0usize;
    let mut agent_sessions = 0usize;
    let mut injected = 0usize;
    let mut closed: Vec<Vec<(Micros, String)>> = vec![Vec::new(); teams.len()];
    while calls.len() < config.calls {
        let t = pick_team(&mut rng, &teams);
        let start = business_hours_time(&mut rng, config, teams[t].utc_offset_hours);
        let u = rng.random_range(0..teams[t].users.len());
        let user = teams[t].users[u].clone();
        let (label, shape, agent) = choose_shape(
            &mut rng,
            config.mix,
            user.heavy,
            &mut agent_sessions,
            &mut injected,
        );
        if let Ok(kind) = label.parse::<LoopSignalType>() {
            *loops.entry(kind).or_insert(0) += 1;
        }
        let team = &mut teams[t];
        let prefix = format!("{}-{sessions}", user.name);
        let model = (rng.random_range(0..2) == 0).then(|| weighted(&mut rng, &MODELS));
        let caller = Caller {
            tenant: config.tenant.clone(),
            team: team.name.clone(),
            user: user.name.clone(),
            workflow: format!("{}-{}", team.name, label.trim_start_matches("healthy/")),
            prefix,
            region: Some(team.region.to_string()),
            model,
            label,
        };
        let mut generator = Gen::new(rng.random(), caller, start);
        shape(&mut generator);
        let (mut session_calls, _) = generator.finish();
        end_by(&mut session_calls, config.start + config.span);
        sessions += 1;
        // Half of the agent sessions work on a ticket: opened before, closed after.
        if agent && rng.random_range(0..2) == 0 && !session_calls.is_empty() {
            team.next_ticket += 1;
            let ticket = format!("{}-{}", team.name.to_uppercase(), team.next_ticket);
            let first = session_calls[0].occurred_at;
            let last = session_calls[session_calls.len() - 1].occurred_at;
            for call in &mut session_calls {
                call.ticket_id = Some(ticket.clone());
            }
            let opened = first - rng.random_range(1..48) * HOUR;
            let done = last + rng.random_range(30..480) * MINUTE;
            // A ticket whose work ends near the end of the span is still open at its end.
            let closes = done < config.start + config.span;
            let kind = [
                TicketKind::Feature,
                TicketKind::Feature,
                TicketKind::Bug,
                TicketKind::Chore,
            ][rng.random_range(0..4)];
            let estimate = f64::from(rng.random_range(1..9u32) * 2);
            others.push(ticket_event(
                config,
                team,
                &ticket,
                kind,
                TicketStatus::Opened,
                opened,
                estimate,
            ));
            if closes {
                others.push(ticket_event(
                    config,
                    team,
                    &ticket,
                    kind,
                    TicketStatus::Closed,
                    done,
                    estimate,
                ));
                closed[t].push((done, ticket));
            }
        }
        calls.extend(session_calls);
    }
    calls.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
    calls.truncate(config.calls);
    for (t, team) in teams.iter().enumerate() {
        others.extend(deploys(&mut rng, config, team, &mut closed[t]));
    }
    let mut events: Vec<Event> = calls
        .into_iter()
        .map(|c| Event::Call(Box::new(c)))
        .collect();
    events.extend(others);
    events.sort_by(|a, b| (a.at(), a.id()).cmp(&(b.at(), b.id())));
    Workload {
        events,
        sessions,
        loops,
    }
}

/// Moves a session back in time, whole, so that its last call is before `end`: a session
/// that begins late in the span would otherwise run past it (past now, with the default
/// start), and ingest refuses events from the future. Its shape, and so its loop, is kept.
fn end_by(calls: &mut [LlmCall], end: Micros) {
    let Some(last) = calls.iter().map(|c| c.occurred_at).max() else {
        return;
    };
    let excess = last - end + 1;
    if excess > 0 {
        for call in calls {
            call.occurred_at -= excess;
            call.received_at -= excess;
        }
    }
}

fn make_teams(rng: &mut StdRng, count: usize) -> Vec<Team> {
    (0..count)
        .map(|i| {
            let base = TEAM_NAMES[i % TEAM_NAMES.len()];
            let name = if i < TEAM_NAMES.len() {
                base.to_string()
            } else {
                format!("{base}-{}", i / TEAM_NAMES.len() + 1)
            };
            // Team sizes are heavy-tailed: most teams small, a few large.
            let size = 3 + (rng.random::<f64>().powi(3) * 120.0) as usize;
            let (region, utc_offset_hours) = REGIONS[rng.random_range(0..REGIONS.len())];
            let users = (0..size)
                .map(|u| User {
                    name: format!("{name}-u{u}"),
                    heavy: rng.random_range(0..8) == 0,
                })
                .collect();
            Team {
                name,
                region,
                utc_offset_hours,
                users,
                next_ticket: 0,
            }
        })
        .collect()
}

fn pick_team(rng: &mut StdRng, teams: &[Team]) -> usize {
    let total: usize = teams.iter().map(|t| t.users.len()).sum();
    let mut n = rng.random_range(0..total);
    for (i, team) in teams.iter().enumerate() {
        if n < team.users.len() {
            return i;
        }
        n -= team.users.len();
    }
    teams.len() - 1
}

fn weighted<T: Copy>(rng: &mut StdRng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut n = rng.random_range(0..total);
    for (choice, weight) in choices {
        if n < *weight {
            return *choice;
        }
        n -= weight;
    }
    choices[choices.len() - 1].0
}

/// The label, shape and whether it is an agent session, for a user's next session. In the
/// mixed workload every other agent session is a runaway one until each variant has run
/// once, then one in twenty.
fn choose_shape(
    rng: &mut StdRng,
    mix: Mix,
    heavy: bool,
    agent_sessions: &mut usize,
    injected: &mut usize,
) -> (String, Shape, bool) {
    let runaway = |injected: &mut usize| {
        let (kind, shape) = LOOPS[*injected % LOOPS.len()];
        *injected += 1;
        (kind.to_string(), shape, true)
    };
    match mix {
        Mix::Loops => runaway(injected),
        _ if heavy => {
            *agent_sessions += 1;
            let due = if *injected < LOOPS.len() {
                *agent_sessions % 2 == 1
            } else {
                *agent_sessions % 20 == 1
            };
            if mix == Mix::Mixed && due {
                return runaway(injected);
            }
            let (name, shape) = weighted(
                rng,
                &AGENT_SHAPES.map(|(name, shape, weight)| ((name, shape), weight)),
            );
            (format!("healthy/{name}"), shape, true)
        }
        _ if rng.random_range(0..4) == 0 => ("healthy/rag".into(), sessions::rag_assistant, false),
        _ => ("healthy/chat".into(), sessions::chat, false),
    }
}

/// A time in the span, most likely in the team's business hours (09–18 local, weekdays).
fn business_hours_time(rng: &mut StdRng, config: &TrafficConfig, utc_offset_hours: i64) -> Micros {
    loop {
        let at = config.start + rng.random_range(0..config.span.max(1));
        let local = at + utc_offset_hours * HOUR;
        let hour = local.rem_euclid(DAY) / HOUR;
        // 1970-01-01 was a Thursday: day 0 of the week is Thursday.
        let weekday = (local.div_euclid(DAY) + 3).rem_euclid(7); // 0 = Monday
        let weight = match (weekday < 5, (9..18).contains(&hour)) {
            (true, true) => 1.0,
            (true, false) => 0.12,
            (false, _) => 0.08,
        };
        if rng.random::<f64>() < weight {
            return at;
        }
    }
}

fn ticket_event(
    config: &TrafficConfig,
    team: &Team,
    ticket: &str,
    kind: TicketKind,
    status: TicketStatus,
    at: Micros,
    estimate_hours: f64,
) -> Event {
    Event::Ticket(TicketEvent {
        event_id: format!("{ticket}-{status}"),
        occurred_at: at,
        received_at: at,
        tenant: config.tenant.clone(),
        ticket_id: ticket.to_string(),
        team: team.name.clone(),
        kind,
        status,
        title_fingerprint: None,
        estimate_hours: Some(estimate_hours),
        url: None,
    })
}

/// A team's deploys: one or two each working day around its afternoon, shipping the tickets
/// closed since the previous one; one in ten fails.
fn deploys(
    rng: &mut StdRng,
    config: &TrafficConfig,
    team: &Team,
    closed: &mut [(Micros, String)],
) -> Vec<Event> {
    closed.sort();
    let mut events = Vec::new();
    let first_day = config.start.div_euclid(DAY);
    let last_day = (config.start + config.span).div_euclid(DAY);
    let mut shipped = 0;
    for day in first_day..=last_day {
        for slot in 0..rng.random_range(1..3) {
            let local_hour = 14 + slot * 2;
            let at = day * DAY
                + (local_hour - team.utc_offset_hours) * HOUR
                + rng.random_range(0..60) * MINUTE;
            if at < config.start || at >= config.start + config.span {
                continue;
            }
            let failed = rng.random_range(0..10) == 0;
            let mut ticket_ids = Vec::new();
            if !failed {
                while shipped < closed.len() && closed[shipped].0 <= at {
                    ticket_ids.push(closed[shipped].1.clone());
                    shipped += 1;
                }
            }
            let n = events.len();
            events.push(Event::Deploy(DeployEvent {
                event_id: format!("deploy-{}-{day}-{n}", team.name),
                occurred_at: at,
                received_at: at,
                tenant: config.tenant.clone(),
                team: team.name.clone(),
                service: format!("{}-service", team.name),
                environment: "production".into(),
                version: Some(format!("v{day}.{n}")),
                commit_sha: None,
                status: if failed {
                    DeployStatus::Failed
                } else {
                    DeployStatus::Succeeded
                },
                ticket_ids,
                url: None,
            }));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(calls: usize, mix: Mix) -> TrafficConfig {
        TrafficConfig {
            seed: 7,
            tenant: "acme".into(),
            teams: 12,
            calls,
            // Monday 2026-11-02, one week.
            start: 1_793_577_600_000_000,
            span: 7 * DAY,
            mix,
        }
    }

    fn calls(workload: &Workload) -> Vec<&LlmCall> {
        workload
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Call(c) => Some(c.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_workload_and_another_seed_another() {
        let a = generate(&config(5_000, Mix::Mixed));
        let b = generate(&config(5_000, Mix::Mixed));
        assert_eq!(a.events, b.events);
        let mut other = config(5_000, Mix::Mixed);
        other.seed = 8;
        assert_ne!(generate(&other).events, a.events);
    }

    #[test]
    fn exactly_the_calls_asked_for_in_event_time_order_with_unique_ids() {
        let workload = generate(&config(20_000, Mix::Mixed));
        let calls = calls(&workload);
        assert_eq!(calls.len(), 20_000);
        assert!(workload.events.windows(2).all(|w| w[0].at() <= w[1].at()));
        let mut ids: Vec<&str> = workload.events.iter().map(Event::id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "event ids are unique");
    }

    #[test]
    fn most_calls_fall_in_business_hours_and_a_few_users_spend_most_tokens() {
        let workload = generate(&config(50_000, Mix::Healthy));
        let calls = calls(&workload);
        // Teams are in several time zones; count local business hours on weekdays.
        let in_hours = calls
            .iter()
            .filter(|c| {
                let offset = REGIONS
                    .iter()
                    .find(|(r, _)| Some(*r) == c.region.as_deref())
                    .unwrap()
                    .1;
                let local = c.occurred_at + offset * HOUR;
                let weekday = (local.div_euclid(DAY) + 3).rem_euclid(7);
                weekday < 5 && (8..20).contains(&(local.rem_euclid(DAY) / HOUR))
            })
            .count();
        assert!(
            in_hours * 10 > calls.len() * 6,
            "{in_hours} of {}",
            calls.len()
        );
        let mut by_user: BTreeMap<&str, i64> = BTreeMap::new();
        for c in &calls {
            *by_user.entry(c.user.as_deref().unwrap()).or_default() += c.input_tokens;
        }
        let mut spend: Vec<i64> = by_user.values().copied().collect();
        spend.sort_unstable_by(|a, b| b.cmp(a));
        let total: i64 = spend.iter().sum();
        let top_tenth: i64 = spend[..spend.len() / 10].iter().sum();
        assert!(
            top_tenth * 2 > total,
            "the top tenth of users spend most tokens"
        );
    }

    #[test]
    fn every_call_has_consistent_tokens_whatever_the_seed() {
        for seed in 1..6 {
            let mut c = config(10_000, Mix::Mixed);
            c.seed = seed;
            for call in calls(&generate(&c)) {
                assert!(
                    call.input_tokens >= call.cache_read_tokens + call.cache_write_tokens
                        && call.output_tokens >= call.reasoning_tokens
                        && call.reasoning_tokens >= 0,
                    "seed {seed}: {call:?}"
                );
            }
        }
    }

    #[test]
    fn no_event_is_dated_at_or_after_the_end_of_the_span_whatever_the_start() {
        // Starts at several times of day: sessions that begin late in the span are moved
        // back, tickets that would close after it stay open.
        for hour in [0, 7, 13, 18, 23] {
            let mut c = config(4_000, Mix::Mixed);
            c.start += hour * HOUR + 17 * MINUTE;
            c.span = DAY;
            let end = c.start + c.span;
            let workload = generate(&c);
            let last = workload.events.iter().map(Event::at).max().unwrap();
            assert!(
                last < end,
                "start +{hour} h: an event at {last} >= end {end}"
            );
            assert_eq!(calls(&workload).len(), 4_000);
        }
    }

    #[test]
    fn every_loop_kind_is_injected_and_labelled() {
        let workload = generate(&config(20_000, Mix::Mixed));
        for kind in LoopSignalType::ALL {
            assert!(
                workload.loops.get(kind).copied().unwrap_or(0) > 0,
                "{kind} injected"
            );
            assert!(calls(&workload)
                .iter()
                .any(|c| c.tags.get("tally.label").map(String::as_str) == Some(kind.as_str())));
        }
        let deploys = workload
            .events
            .iter()
            .filter(|e| matches!(e, Event::Deploy(_)))
            .count();
        let shipped: usize = workload
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Deploy(d) => Some(d.ticket_ids.len()),
                _ => None,
            })
            .sum();
        assert!(
            deploys > 12 && shipped > 0,
            "{deploys} deploys shipped {shipped} tickets"
        );
    }
}
