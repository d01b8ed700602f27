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
    pub tool_name: Option<String>,
    pub tool_args_fingerprint: Option<String>,
    pub ticket_id: Option<String>,
    pub reported_cost_micros: Option<i64>,
    pub tags: BTreeMap<String, String>,
}
