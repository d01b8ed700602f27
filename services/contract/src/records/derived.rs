//! Records the processors, detectors and sink derive: enriched calls, spend windows, loop
//! signals, alerts and dead letters.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    AlertKind, AlertState, LlmCall, LoopSignalType, Micros, Severity, SignalState, SpendDimension,
};

/// An `LlmCall` with its cost and carbon (`schemas/EnrichedLlmCall.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedLlmCall {
    pub call: LlmCall,
    pub enriched_at: Micros,
    pub unpriced: bool,
    pub price_catalogue_version: String,
    pub price_entry: Option<String>,
    /// The model reports and windows group by (see the schema); empty before version 3.
    #[serde(default)]
    pub canonical_model: String,
    pub cost_input_nanos: Option<i64>,
    pub cost_cache_read_nanos: Option<i64>,
    pub cost_cache_write_nanos: Option<i64>,
    pub cost_output_nanos: Option<i64>,
    pub cost_reasoning_nanos: Option<i64>,
    pub cost_total_nanos: Option<i64>,
    pub energy_uwh_low: i64,
    pub energy_uwh_central: i64,
    pub energy_uwh_high: i64,
    pub grid_g_per_kwh: f64,
    pub grid_source: String,
    pub grid_dataset_version: String,
    pub co2e_ug_low: i64,
    pub co2e_ug_central: i64,
    pub co2e_ug_high: i64,
    pub carbon_method: String,
    pub carbon_method_version: String,
}

/// Totals of one event-time tumbling window for one key (`schemas/SpendWindow.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendWindow {
    pub window_start: Micros,
    pub window_seconds: i64,
    pub revision: i32,
    pub tenant: String,
    pub team: String,
    pub dimension: SpendDimension,
    pub dimension_value: String,
    pub calls: i64,
    pub unpriced_calls: i64,
    #[serde(with = "crate::wide")]
    pub input_tokens: i128,
    #[serde(with = "crate::wide")]
    pub output_tokens: i128,
    #[serde(with = "crate::wide")]
    pub cache_read_tokens: i128,
    #[serde(with = "crate::wide")]
    pub cache_write_tokens: i128,
    #[serde(with = "crate::wide")]
    pub reasoning_tokens: i128,
    #[serde(with = "crate::wide")]
    pub cost_nanos: i128,
    #[serde(with = "crate::wide")]
    pub energy_uwh_central: i128,
    #[serde(with = "crate::wide")]
    pub co2e_ug_low: i128,
    #[serde(with = "crate::wide")]
    pub co2e_ug_central: i128,
    #[serde(with = "crate::wide")]
    pub co2e_ug_high: i128,
    #[serde(default)]
    pub source_partition: i32,
    #[serde(default)]
    pub source_offset: i64,
    pub emitted_at: Micros,
}

/// A runaway-agent signal for one session (`schemas/LoopSignal.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopSignal {
    pub signal_id: String,
    pub signal_type: LoopSignalType,
    pub state: SignalState,
    pub severity: Severity,
    pub tenant: String,
    pub team: String,
    pub session_id: Option<String>,
    pub agent: Option<String>,
    pub workflow: Option<String>,
    pub user: Option<String>,
    pub first_event_at: Micros,
    pub last_event_at: Micros,
    pub evidence_event_ids: Vec<String>,
    pub evidence_calls: i64,
    pub tokens_burned: i64,
    pub cost_nanos_burned: i64,
    pub unpriced_calls: i64,
    pub co2e_ug_burned: i64,
    pub explanation: String,
    pub emitted_at: Micros,
}

/// Something a person should look at (`schemas/Alert.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub kind: AlertKind,
    pub state: AlertState,
    pub severity: Severity,
    pub tenant: String,
    pub team: Option<String>,
    pub subject: String,
    pub title: String,
    pub message: String,
    pub source_id: Option<String>,
    #[serde(default, with = "crate::wide::option")]
    pub amount_nanos: Option<i128>,
    #[serde(default, with = "crate::wide::option")]
    pub limit_nanos: Option<i128>,
    pub labels: BTreeMap<String, String>,
    pub occurred_at: Micros,
    pub emitted_at: Micros,
}

/// A record that failed after acceptance, kept byte for byte (`schemas/DeadLetter.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub original: Vec<u8>,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub key: Option<Vec<u8>>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub stage: String,
    pub error_kind: String,
    pub error: String,
    pub failed_at: Micros,
}
