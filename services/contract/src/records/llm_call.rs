//! `LlmCall`: one LLM API call as ingested (`schemas/LlmCall.avsc`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CallStatus, Micros, ServiceTier};

/// One LLM API call. Token counts follow the OpenTelemetry convention: `input_tokens`
/// includes cached tokens, `output_tokens` includes reasoning tokens. See the schema for the
/// meaning of each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    pub event_id: String,
    pub occurred_at: Micros,
    pub received_at: Micros,
    pub tenant: String,
    pub team: String,
    pub user: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub workflow: Option<String>,
    pub session_id: Option<String>,
    pub agent: Option<String>,
    pub step: Option<i32>,
    pub parent_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub response_model: Option<String>,
    pub operation: String,
    pub region: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub service_tier: ServiceTier,
    pub latency_ms: Option<i64>,
    pub status: CallStatus,
    pub error_type: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_fingerprint: Option<String>,
    pub output_fingerprint: Option<String>,
    pub tool_name: Option<String>,
    pub tool_args_fingerprint: Option<String>,
    pub ticket_id: Option<String>,
    pub reported_cost_micros: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

impl LlmCall {
    /// A successful standard-tier call with no tokens and every optional field empty; callers
    /// set what they know. (Tests, estimates and adapters build calls from it.)
    pub fn new(
        event_id: &str,
        occurred_at: Micros,
        tenant: &str,
        team: &str,
        provider: &str,
        model: &str,
    ) -> LlmCall {
        LlmCall {
            event_id: event_id.to_string(),
            occurred_at,
            received_at: occurred_at,
            tenant: tenant.to_string(),
            team: team.to_string(),
            user: None,
            service: None,
            environment: None,
            workflow: None,
            session_id: None,
            agent: None,
            step: None,
            parent_id: None,
            trace_id: None,
            span_id: None,
            provider: provider.to_string(),
            model: model.to_string(),
            response_model: None,
            operation: "chat".to_string(),
            region: None,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            service_tier: ServiceTier::Standard,
            latency_ms: None,
            status: CallStatus::Ok,
            error_type: None,
            finish_reason: None,
            prompt_fingerprint: None,
            output_fingerprint: None,
            tool_name: None,
            tool_args_fingerprint: None,
            ticket_id: None,
            reported_cost_micros: None,
            tags: BTreeMap::new(),
        }
    }
}
