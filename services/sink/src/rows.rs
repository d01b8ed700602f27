//! Rows of tally's ClickHouse tables, field for field as `sql/migrations/` creates them
//! (materialized columns such as `cost_usd` are computed by ClickHouse and not sent).
use std::collections::BTreeMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_contract::records::{
    Alert, DeployEvent, EnrichedLlmCall, LoopSignal, SpendWindow, TicketEvent,
};

/// A wide integer column (`Int128` in ClickHouse, `Decimal128(38, 0)` in `tally up`'s Parquet
/// store): the sums of a spend window and the amounts of an alert (see [`tally_contract::wide`]).
///
/// To ClickHouse (RowBinary) it is an `i128`. The Parquet store's Arrow builder takes decimals
/// as text, so [`Wide::as_text`] makes it one for the duration of a conversion; and tracing the
/// Arrow schema from the row type reads it as text too (the store declares the column as a
/// decimal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wide(pub i128);

thread_local! {
    static WIDE_AS_TEXT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Wide {
    /// Runs `convert` with every [`Wide`] serialised as decimal text (for Arrow).
    pub fn as_text<R>(convert: impl FnOnce() -> R) -> R {
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                WIDE_AS_TEXT.with(|flag| flag.set(self.0));
            }
        }
        let _reset = Reset(WIDE_AS_TEXT.with(|flag| flag.replace(true)));
        convert()
    }
}

impl Serialize for Wide {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if WIDE_AS_TEXT.with(std::cell::Cell::get) {
            serializer.serialize_str(&self.0.to_string())
        } else {
            serializer.serialize_i128(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Wide {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Wide, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Wide;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a wide integer")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Wide, E> {
                match text {
                    // What a schema tracer hands over.
                    "" => Ok(Wide(0)),
                    text => text.parse().map(Wide).map_err(E::custom),
                }
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Wide, E> {
                Ok(Wide(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Wide, E> {
                Ok(Wide(v.into()))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Text)
        } else {
            deserializer.deserialize_i128(Text)
        }
    }
}

/// One row of `llm_calls`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct LlmCallRow {
    pub event_id: String,
    pub occurred_at: i64,
    pub received_at: i64,
    pub enriched_at: i64,
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
    pub service_tier: String,
    pub latency_ms: Option<i64>,
    pub status: String,
    pub error_type: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_fingerprint: Option<String>,
    pub output_fingerprint: Option<String>,
    pub tool_name: Option<String>,
    pub tool_args_fingerprint: Option<String>,
    pub ticket_id: Option<String>,
    pub reported_cost_micros: Option<i64>,
    pub tags: BTreeMap<String, String>,
    pub unpriced: bool,
    pub price_catalogue_version: String,
    pub price_entry: Option<String>,
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
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl LlmCallRow {
    /// The row of an enriched call read from a partition and offset.
    pub fn new(enriched: EnrichedLlmCall, partition: i32, offset: i64) -> LlmCallRow {
        let call = enriched.call;
        // Calls enriched before EnrichedLlmCall version 3 did not say.
        let canonical_model = match enriched.canonical_model.is_empty() {
            true => tally_accounting::provider::canonical_model(&call.model),
            false => enriched.canonical_model,
        };
        LlmCallRow {
            event_id: call.event_id,
            occurred_at: call.occurred_at,
            received_at: call.received_at,
            enriched_at: enriched.enriched_at,
            tenant: call.tenant,
            team: call.team,
            user: call.user,
            service: call.service,
            environment: call.environment,
            workflow: call.workflow,
            session_id: call.session_id,
            agent: call.agent,
            step: call.step,
            parent_id: call.parent_id,
            trace_id: call.trace_id,
            span_id: call.span_id,
            provider: call.provider,
            model: call.model,
            response_model: call.response_model,
            operation: call.operation,
            region: call.region,
            input_tokens: call.input_tokens,
            output_tokens: call.output_tokens,
            cache_read_tokens: call.cache_read_tokens,
            cache_write_tokens: call.cache_write_tokens,
            reasoning_tokens: call.reasoning_tokens,
            service_tier: call.service_tier.as_str().to_string(),
            latency_ms: call.latency_ms,
            status: call.status.as_str().to_string(),
            error_type: call.error_type,
            finish_reason: call.finish_reason,
            prompt_fingerprint: call.prompt_fingerprint,
            output_fingerprint: call.output_fingerprint,
            tool_name: call.tool_name,
            tool_args_fingerprint: call.tool_args_fingerprint,
            ticket_id: call.ticket_id,
            reported_cost_micros: call.reported_cost_micros,
            tags: call.tags,
            unpriced: enriched.unpriced,
            price_catalogue_version: enriched.price_catalogue_version,
            price_entry: enriched.price_entry,
            canonical_model,
            cost_input_nanos: enriched.cost_input_nanos,
            cost_cache_read_nanos: enriched.cost_cache_read_nanos,
            cost_cache_write_nanos: enriched.cost_cache_write_nanos,
            cost_output_nanos: enriched.cost_output_nanos,
            cost_reasoning_nanos: enriched.cost_reasoning_nanos,
            cost_total_nanos: enriched.cost_total_nanos,
            energy_uwh_low: enriched.energy_uwh_low,
            energy_uwh_central: enriched.energy_uwh_central,
            energy_uwh_high: enriched.energy_uwh_high,
            grid_g_per_kwh: enriched.grid_g_per_kwh,
            grid_source: enriched.grid_source,
            grid_dataset_version: enriched.grid_dataset_version,
            co2e_ug_low: enriched.co2e_ug_low,
            co2e_ug_central: enriched.co2e_ug_central,
            co2e_ug_high: enriched.co2e_ug_high,
            carbon_method: enriched.carbon_method,
            carbon_method_version: enriched.carbon_method_version,
            kafka_partition: partition,
            kafka_offset: offset,
        }
    }
}

/// One row of `deploys`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct DeployRow {
    pub event_id: String,
    pub occurred_at: i64,
    pub received_at: i64,
    pub tenant: String,
    pub team: String,
    pub service: String,
    pub environment: String,
    pub version: Option<String>,
    pub commit_sha: Option<String>,
    pub status: String,
    pub ticket_ids: Vec<String>,
    pub url: Option<String>,
}

impl From<DeployEvent> for DeployRow {
    fn from(d: DeployEvent) -> Self {
        DeployRow {
            event_id: d.event_id,
            occurred_at: d.occurred_at,
            received_at: d.received_at,
            tenant: d.tenant,
            team: d.team,
            service: d.service,
            environment: d.environment,
            version: d.version,
            commit_sha: d.commit_sha,
            status: d.status.as_str().to_string(),
            ticket_ids: d.ticket_ids,
            url: d.url,
        }
    }
}

/// One row of `tickets`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct TicketRow {
    pub event_id: String,
    pub occurred_at: i64,
    pub received_at: i64,
    pub tenant: String,
    pub ticket_id: String,
    pub team: String,
    pub kind: String,
    pub status: String,
    pub title_fingerprint: Option<String>,
    pub estimate_hours: Option<f64>,
    pub url: Option<String>,
}

impl From<TicketEvent> for TicketRow {
    fn from(t: TicketEvent) -> Self {
        TicketRow {
            event_id: t.event_id,
            occurred_at: t.occurred_at,
            received_at: t.received_at,
            tenant: t.tenant,
            ticket_id: t.ticket_id,
            team: t.team,
            kind: t.kind.as_str().to_string(),
            status: t.status.as_str().to_string(),
            title_fingerprint: t.title_fingerprint,
            estimate_hours: t.estimate_hours,
            url: t.url,
        }
    }
}

/// One row of `spend_windows`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct SpendWindowRow {
    pub window_start: i64,
    pub window_seconds: i64,
    pub revision: i32,
    pub tenant: String,
    pub team: String,
    pub dimension: String,
    pub dimension_value: String,
    pub calls: i64,
    pub unpriced_calls: i64,
    pub input_tokens: Wide,
    pub output_tokens: Wide,
    pub cache_read_tokens: Wide,
    pub cache_write_tokens: Wide,
    pub reasoning_tokens: Wide,
    pub cost_nanos: Wide,
    pub energy_uwh_central: Wide,
    pub co2e_ug_low: Wide,
    pub co2e_ug_central: Wide,
    pub co2e_ug_high: Wide,
    pub source_partition: i32,
    pub source_offset: i64,
    pub emitted_at: i64,
}

impl From<SpendWindow> for SpendWindowRow {
    fn from(w: SpendWindow) -> Self {
        SpendWindowRow {
            window_start: w.window_start,
            window_seconds: w.window_seconds,
            revision: w.revision,
            tenant: w.tenant,
            team: w.team,
            dimension: w.dimension.as_str().to_string(),
            dimension_value: w.dimension_value,
            calls: w.calls,
            unpriced_calls: w.unpriced_calls,
            input_tokens: Wide(w.input_tokens),
            output_tokens: Wide(w.output_tokens),
            cache_read_tokens: Wide(w.cache_read_tokens),
            cache_write_tokens: Wide(w.cache_write_tokens),
            reasoning_tokens: Wide(w.reasoning_tokens),
            cost_nanos: Wide(w.cost_nanos),
            energy_uwh_central: Wide(w.energy_uwh_central),
            co2e_ug_low: Wide(w.co2e_ug_low),
            co2e_ug_central: Wide(w.co2e_ug_central),
            co2e_ug_high: Wide(w.co2e_ug_high),
            source_partition: w.source_partition,
            source_offset: w.source_offset,
            emitted_at: w.emitted_at,
        }
    }
}

/// One row of `loop_signals`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct LoopSignalRow {
    pub signal_id: String,
    pub signal_type: String,
    pub state: String,
    pub severity: String,
    pub tenant: String,
    pub team: String,
    pub session_id: Option<String>,
    pub agent: Option<String>,
    pub workflow: Option<String>,
    pub user: Option<String>,
    pub first_event_at: i64,
    pub last_event_at: i64,
    pub evidence_event_ids: Vec<String>,
    pub evidence_calls: i64,
    pub tokens_burned: i64,
    pub cost_nanos_burned: i64,
    pub unpriced_calls: i64,
    pub co2e_ug_burned: i64,
    pub explanation: String,
    pub emitted_at: i64,
}

impl From<LoopSignal> for LoopSignalRow {
    fn from(s: LoopSignal) -> Self {
        LoopSignalRow {
            signal_id: s.signal_id,
            signal_type: s.signal_type.as_str().to_string(),
            state: s.state.as_str().to_string(),
            severity: s.severity.as_str().to_string(),
            tenant: s.tenant,
            team: s.team,
            session_id: s.session_id,
            agent: s.agent,
            workflow: s.workflow,
            user: s.user,
            first_event_at: s.first_event_at,
            last_event_at: s.last_event_at,
            evidence_event_ids: s.evidence_event_ids,
            evidence_calls: s.evidence_calls,
            tokens_burned: s.tokens_burned,
            cost_nanos_burned: s.cost_nanos_burned,
            unpriced_calls: s.unpriced_calls,
            co2e_ug_burned: s.co2e_ug_burned,
            explanation: s.explanation,
            emitted_at: s.emitted_at,
        }
    }
}

/// One row of `alerts`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct AlertRow {
    pub alert_id: String,
    pub kind: String,
    pub state: String,
    pub severity: String,
    pub tenant: String,
    pub team: Option<String>,
    pub subject: String,
    pub title: String,
    pub message: String,
    pub source_id: Option<String>,
    pub amount_nanos: Option<Wide>,
    pub limit_nanos: Option<Wide>,
    pub labels: BTreeMap<String, String>,
    pub occurred_at: i64,
    pub emitted_at: i64,
}

impl From<Alert> for AlertRow {
    fn from(a: Alert) -> Self {
        AlertRow {
            alert_id: a.alert_id,
            kind: a.kind.as_str().to_string(),
            state: a.state.as_str().to_string(),
            severity: a.severity.as_str().to_string(),
            tenant: a.tenant,
            team: a.team,
            subject: a.subject,
            title: a.title,
            message: a.message,
            source_id: a.source_id,
            amount_nanos: a.amount_nanos.map(Wide),
            limit_nanos: a.limit_nanos.map(Wide),
            labels: a.labels,
            occurred_at: a.occurred_at,
            emitted_at: a.emitted_at,
        }
    }
}
