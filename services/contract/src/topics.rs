//! Kafka topic names and record keys: the addresses of the contract.
use crate::records::{DeployEvent, LlmCall, TicketEvent};

/// One of tally's topics. Names carry a major version (`.v1`): an incompatible change to a
/// topic's records gets a new topic, never new bytes on the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `LlmCall`s from ingest.
    LlmCalls,
    /// `DeployEvent`s from ingest.
    Deploys,
    /// `TicketEvent`s from ingest.
    Tickets,
    /// `EnrichedLlmCall`s from the processor.
    LlmCallsEnriched,
    /// `SpendWindow`s from the processor.
    SpendWindows,
    /// `LoopSignal`s from the detectors.
    LoopSignals,
    /// `Alert`s from budgets and detectors.
    Alerts,
    /// `DeadLetter`s from any stage.
    DeadLetter,
}

impl Topic {
    /// Every topic, in pipeline order.
    pub const ALL: [Topic; 8] = [
        Topic::LlmCalls,
        Topic::Deploys,
        Topic::Tickets,
        Topic::LlmCallsEnriched,
        Topic::SpendWindows,
        Topic::LoopSignals,
        Topic::Alerts,
        Topic::DeadLetter,
    ];

    /// The topic's name without any deployment prefix.
    pub fn base_name(self) -> &'static str {
        match self {
            Topic::LlmCalls => "tally.llm_calls.v1",
            Topic::Deploys => "tally.deploys.v1",
            Topic::Tickets => "tally.tickets.v1",
            Topic::LlmCallsEnriched => "tally.llm_calls_enriched.v1",
            Topic::SpendWindows => "tally.spend_windows.v1",
            Topic::LoopSignals => "tally.loop_signals.v1",
            Topic::Alerts => "tally.alerts.v1",
            Topic::DeadLetter => "tally.dead_letter.v1",
        }
    }

    /// The name of the record type its values are (`LlmCall`).
    pub fn record_name(self) -> &'static str {
        match self {
            Topic::LlmCalls => "LlmCall",
            Topic::Deploys => "DeployEvent",
            Topic::Tickets => "TicketEvent",
            Topic::LlmCallsEnriched => "EnrichedLlmCall",
            Topic::SpendWindows => "SpendWindow",
            Topic::LoopSignals => "LoopSignal",
            Topic::Alerts => "Alert",
            Topic::DeadLetter => "DeadLetter",
        }
    }

    /// The topic's name with a deployment prefix (empty for none), e.g. `staging.tally.alerts.v1`.
    pub fn name(self, prefix: &str) -> String {
        format!("{prefix}{}", self.base_name())
    }
}

/// The Kafka key of an `LlmCall`: `tenant/team/session_id`, or `tenant/team` without a
/// session. A session's calls share a key, so they stay in order on one partition.
pub fn llm_call_key(call: &LlmCall) -> String {
    match &call.session_id {
        Some(session) => format!("{}/{}/{}", call.tenant, call.team, session),
        None => format!("{}/{}", call.tenant, call.team),
    }
}

/// The Kafka key of a `DeployEvent`: `tenant/team/service`, so a service's deploys stay in
/// order (attribution pairs each deploy with the previous one).
pub fn deploy_key(deploy: &DeployEvent) -> String {
    format!("{}/{}/{}", deploy.tenant, deploy.team, deploy.service)
}

/// The Kafka key of a `TicketEvent`: `tenant/ticket_id`, so a ticket's changes stay in order.
pub fn ticket_key(ticket: &TicketEvent) -> String {
    format!("{}/{}", ticket.tenant, ticket.ticket_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_contract_names_with_prefix() {
        let names: Vec<String> = Topic::ALL.iter().map(|t| t.name("")).collect();
        assert_eq!(
            names,
            [
                "tally.llm_calls.v1",
                "tally.deploys.v1",
                "tally.tickets.v1",
                "tally.llm_calls_enriched.v1",
                "tally.spend_windows.v1",
                "tally.loop_signals.v1",
                "tally.alerts.v1",
                "tally.dead_letter.v1"
            ]
        );
        assert_eq!(Topic::Alerts.name("staging."), "staging.tally.alerts.v1");
    }
}
