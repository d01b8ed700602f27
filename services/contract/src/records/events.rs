//! `DeployEvent` and `TicketEvent`: what shipped and what was done, to join spend to.
use serde::{Deserialize, Serialize};

use super::{DeployStatus, Micros, TicketKind, TicketStatus};

/// A deploy of a service to an environment (`schemas/DeployEvent.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployEvent {
    pub event_id: String,
    pub occurred_at: Micros,
    pub received_at: Micros,
    pub tenant: String,
    pub team: String,
    pub service: String,
    pub environment: String,
    pub version: Option<String>,
    pub commit_sha: Option<String>,
    pub status: DeployStatus,
    pub ticket_ids: Vec<String>,
    pub url: Option<String>,
}

/// A change of a ticket's status (`schemas/TicketEvent.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketEvent {
    pub event_id: String,
    pub occurred_at: Micros,
    pub received_at: Micros,
    pub tenant: String,
    pub ticket_id: String,
    pub team: String,
    pub kind: TicketKind,
    pub status: TicketStatus,
    pub title_fingerprint: Option<String>,
    pub estimate_hours: Option<f64>,
    pub url: Option<String>,
}
