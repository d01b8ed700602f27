//! A randomised but seeded history for the attribution views (`cost_per_deploy`,
//! `cost_per_ticket`, `team_efficiency`), made to meet every case their figures hinge on:
//! two tenants, several teams, services deployed by more than one team, two environments;
//! calls, deploys and ticket events on a coarse grid of instants, so that calls fall at the
//! very instant of a deploy or of a ticket's opening or closing, and deploys of one service
//! share an instant; calls with no cost (unpriced), with no ticket, with the ticket `""`, with
//! tickets of other teams; failed and rolled-back deploys, deploys listing no ticket, a ticket
//! twice, `""` or a ticket no call names; tickets never opened, closed before they opened,
//! reopened, moved between teams, with no estimate; a call at the epoch; and records sent
//! again (the same identity with a later version, some with other figures), which only the
//! tables' de-duplication (`FINAL`) keeps once.
//!
//! The records come in the order they are to be written: a record sent again comes after the
//! one it replaces, with a later `enriched_at` / `received_at`.
use tally_contract::records::{
    DeployEvent, DeployStatus, EnrichedLlmCall, TicketEvent, TicketKind, TicketStatus,
};

/// The records of one history.
#[derive(Debug, Clone)]
pub struct History {
    pub calls: Vec<EnrichedLlmCall>,
    pub deploys: Vec<DeployEvent>,
    pub tickets: Vec<TicketEvent>,
}

/// SplitMix64: small, seeded, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// 2026-11-01 00:00 UTC, in epoch microseconds.
const START: i64 = 1_793_491_200_000_000;
const MINUTE: i64 = 60_000_000;
/// Instants are whole minutes of four days: 5,760 of them, so they meet often.
const MINUTES: u64 = 4 * 24 * 60;

const TENANTS: [&str; 2] = ["acme", "globex"];
const TEAMS: [&str; 4] = ["payments", "search", "growth", "platform"];
const SERVICES: [&str; 3] = ["checkout", "ranker", "gateway"];
const ENVIRONMENTS: [&str; 2] = ["production", "staging"];
/// Ticket ids: a few per team, and some no ticket event names.
const TICKETS: [&str; 14] = [
    "PAY-1", "PAY-2", "PAY-3", "SRCH-1", "SRCH-2", "SRCH-3", "GRW-1", "GRW-2", "PLT-1", "PLT-2",
    "PLT-3", "OPS-1", "OPS-2", "GHOST-9",
];

fn instant(rng: &mut Rng) -> i64 {
    START + rng.below(MINUTES) as i64 * MINUTE
}

/// A seeded history of about `calls` calls, `deploys` deploy events and `tickets` tickets'
/// events.
pub fn history(seed: u64, calls: usize, deploys: usize, tickets: usize) -> History {
    let mut rng = Rng(seed);
    let template: EnrichedLlmCall = crate::fixture("EnrichedLlmCall");
    let mut call_records = Vec::with_capacity(calls + calls / 20);
    for i in 0..calls {
        let mut e = template.clone();
        e.call.event_id = format!("call-{i}");
        e.call.tenant = rng.pick(&TENANTS).to_string();
        e.call.team = rng.pick(&TEAMS).to_string();
        e.call.occurred_at = if i == 0 { 0 } else { instant(&mut rng) };
        e.call.received_at = e.call.occurred_at;
        e.enriched_at = START + MINUTES as i64 * MINUTE + i as i64;
        e.call.ticket_id = match rng.below(10) {
            0..=4 => None,
            5 => Some(String::new()),
            _ => Some(rng.pick(&TICKETS).to_string()),
        };
        e.unpriced = rng.chance(10);
        e.cost_total_nanos = (!e.unpriced).then(|| 1 + rng.below(5_000_000_000) as i64);
        e.call.input_tokens = 1 + rng.below(10_000) as i64;
        e.call.output_tokens = rng.below(2_000) as i64;
        call_records.push(e.clone());
        // Sent again: the same call, enriched later, sometimes priced otherwise.
        if rng.chance(5) {
            e.enriched_at += 1_000_000_000;
            if !e.unpriced && rng.chance(50) {
                e.cost_total_nanos = Some(1 + rng.below(5_000_000_000) as i64);
            }
            call_records.push(e);
        }
    }

    let template: DeployEvent = crate::fixture("DeployEvent");
    let mut deploy_records = Vec::with_capacity(deploys + deploys / 10);
    for i in 0..deploys {
        let mut d = template.clone();
        d.event_id = format!("deploy-{i}");
        d.tenant = rng.pick(&TENANTS).to_string();
        d.team = rng.pick(&TEAMS).to_string();
        d.service = rng.pick(&SERVICES).to_string();
        d.environment = rng.pick(&ENVIRONMENTS).to_string();
        // Now and then at the instant of the deploy before it, on a coarser grid.
        d.occurred_at = match deploy_records.last() {
            Some(previous) if rng.chance(10) => {
                let previous: &DeployEvent = previous;
                previous.occurred_at
            }
            _ => START + rng.below(MINUTES / 30) as i64 * 30 * MINUTE,
        };
        d.received_at = START + MINUTES as i64 * MINUTE + i as i64;
        d.status = match rng.below(10) {
            0 => DeployStatus::Failed,
            1 => DeployStatus::RolledBack,
            _ => DeployStatus::Succeeded,
        };
        d.version = (!rng.chance(10)).then(|| format!("v{i}"));
        d.ticket_ids = (0..rng.below(4))
            .map(|_| match rng.below(12) {
                0 => String::new(),
                _ => rng.pick(&TICKETS).to_string(),
            })
            .collect();
        if let Some(first) = d.ticket_ids.first().cloned() {
            if rng.chance(20) {
                d.ticket_ids.push(first);
            }
        }
        deploy_records.push(d.clone());
        // Sent again, sometimes with another status or list of tickets.
        if rng.chance(8) {
            d.received_at += 1_000_000_000;
            if rng.chance(50) {
                d.status = DeployStatus::Succeeded;
                d.ticket_ids = vec![rng.pick(&TICKETS).to_string()];
            }
            deploy_records.push(d);
        }
    }

    let template: TicketEvent = crate::fixture("TicketEvent");
    let kinds = [
        TicketKind::Feature,
        TicketKind::Bug,
        TicketKind::Chore,
        TicketKind::Incident,
    ];
    let mut ticket_records = Vec::new();
    let mut n = 0;
    for i in 0..tickets {
        let tenant = rng.pick(&TENANTS).to_string();
        let ticket_id = TICKETS[i % TICKETS.len()].to_string();
        let mut team = rng.pick(&TEAMS).to_string();
        let kind = *rng.pick(&kinds);
        let estimate = (!rng.chance(25)).then(|| (1 + rng.below(40)) as f64 / 2.0);
        let opened = instant(&mut rng);
        let mut statuses: Vec<(TicketStatus, i64)> = Vec::new();
        match rng.below(10) {
            // Never opened: closed only.
            0 => statuses.push((TicketStatus::Closed, instant(&mut rng))),
            // Closed before it opened.
            1 => {
                statuses.push((TicketStatus::Opened, opened));
                statuses.push((
                    TicketStatus::Closed,
                    opened - rng.below(600) as i64 * MINUTE,
                ));
            }
            // Still open.
            2 => statuses.push((TicketStatus::Opened, opened)),
            _ => {
                statuses.push((TicketStatus::Opened, opened));
                let worked = opened + rng.below(600) as i64 * MINUTE;
                statuses.push((TicketStatus::InProgress, worked));
                let closed = worked + rng.below(1_500) as i64 * MINUTE;
                statuses.push((TicketStatus::Closed, closed));
                if rng.chance(20) {
                    statuses.push((TicketStatus::Reopened, closed + 30 * MINUTE));
                    statuses.push((TicketStatus::Closed, closed + 90 * MINUTE));
                }
            }
        }
        for (status, at) in statuses {
            let mut t = template.clone();
            t.event_id = format!("ticket-event-{n}");
            n += 1;
            t.tenant = tenant.clone();
            t.ticket_id = ticket_id.clone();
            // Moved to another team now and then, sometimes by an event of the same instant.
            if rng.chance(10) {
                team = rng.pick(&TEAMS).to_string();
            }
            t.team = team.clone();
            t.kind = kind;
            t.status = status;
            t.occurred_at = at;
            t.received_at = START + MINUTES as i64 * MINUTE + n as i64;
            t.estimate_hours = estimate;
            ticket_records.push(t.clone());
            if rng.chance(5) {
                let mut moved = t.clone();
                moved.event_id = format!("ticket-event-{n}");
                n += 1;
                moved.team = rng.pick(&TEAMS).to_string();
                moved.received_at += 1;
                ticket_records.push(moved);
            }
            if rng.chance(5) {
                t.received_at += 1_000_000_000;
                ticket_records.push(t);
            }
        }
    }
    History {
        calls: call_records,
        deploys: deploy_records,
        tickets: ticket_records,
    }
}
