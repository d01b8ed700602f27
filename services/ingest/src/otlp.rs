//! OTLP/HTTP traces (`POST /v1/traces`), protobuf and JSON, → LLM calls.
//!
//! Each span that carries GenAI usage (`gen_ai.usage.*`) is turned into a native JSON record
//! and read by the same code as `POST /v1/llm-calls`, so both paths validate alike. Spans
//! without usage are counted and skipped. The mapping follows the OpenTelemetry GenAI
//! semantic conventions, including their deprecated names (`gen_ai.system`,
//! `gen_ai.usage.prompt_tokens`, `gen_ai.usage.completion_tokens`).
use prost::Message;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::auth::to_hex;

/// An attribute value, from either encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Vec<AttrValue>),
    /// Key-value lists and bytes: not used by the mapping, kept as "present".
    Other,
}

/// A span with what the mapping needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<(String, AttrValue)>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
}

/// A resource's attributes and spans (scopes flattened).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSpans {
    pub attributes: Vec<(String, AttrValue)>,
    pub spans: Vec<Span>,
}

// ------------------------------------------------------------------ protobuf

/// The subset of `opentelemetry.proto.collector.trace.v1` and friends tally reads. Field
/// numbers are those of the OTLP protos; unknown fields are skipped by prost. The gRPC
/// service decodes into and answers with these too.
pub(crate) mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<any_value::Value>,
    }
    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        #[allow(clippy::enum_variant_names)] // the names of the OTLP proto's oneof
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
            #[prost(message, tag = "6")]
            KvlistValue(super::KeyValueList),
            #[prost(bytes = "vec", tag = "7")]
            BytesValue(Vec<u8>),
        }
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportTracePartialSuccess>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTracePartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_spans: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }
}

/// Decodes an `ExportTraceServiceRequest` in protobuf.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<ResourceSpans>, String> {
    let request = proto::ExportTraceServiceRequest::decode(body)
        .map_err(|e| format!("not an OTLP ExportTraceServiceRequest in protobuf: {e}"))?;
    Ok(from_proto(request))
}

/// The resources and spans of a decoded `ExportTraceServiceRequest`.
pub(crate) fn from_proto(request: proto::ExportTraceServiceRequest) -> Vec<ResourceSpans> {
    request
        .resource_spans
        .into_iter()
        .map(|rs| ResourceSpans {
            attributes: rs
                .resource
                .map(|r| attributes_from_proto(r.attributes))
                .unwrap_or_default(),
            spans: rs
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
                .map(|span| Span {
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    attributes: attributes_from_proto(span.attributes),
                    status_code: span.status.map_or(0, |s| s.code),
                })
                .collect(),
        })
        .collect()
}

fn attributes_from_proto(attributes: Vec<proto::KeyValue>) -> Vec<(String, AttrValue)> {
    attributes
        .into_iter()
        .map(|kv| (kv.key, value_from_proto(kv.value)))
        .collect()
}

fn value_from_proto(value: Option<proto::AnyValue>) -> AttrValue {
    use proto::any_value::Value as V;
    match value.and_then(|v| v.value) {
        Some(V::StringValue(s)) => AttrValue::Str(s),
        Some(V::BoolValue(b)) => AttrValue::Bool(b),
        Some(V::IntValue(i)) => AttrValue::Int(i),
        Some(V::DoubleValue(d)) => AttrValue::Double(d),
        Some(V::ArrayValue(a)) => AttrValue::Array(
            a.values
                .into_iter()
                .map(|v| value_from_proto(Some(v)))
                .collect(),
        ),
        Some(V::KvlistValue(_)) | Some(V::BytesValue(_)) | None => AttrValue::Other,
    }
}

/// Encodes the OTLP response: empty on full success, else a partial success.
pub fn encode_response_protobuf(rejected_spans: i64, error_message: &str) -> Vec<u8> {
    response_proto(rejected_spans, error_message).encode_to_vec()
}

/// The `ExportTraceServiceResponse`: a partial success when some spans were refused.
pub(crate) fn response_proto(
    rejected_spans: i64,
    error_message: &str,
) -> proto::ExportTraceServiceResponse {
    proto::ExportTraceServiceResponse {
        partial_success: (rejected_spans > 0).then(|| proto::ExportTracePartialSuccess {
            rejected_spans,
            error_message: error_message.to_string(),
        }),
    }
}

/// The OTLP/JSON form of the same response.
pub fn encode_response_json(rejected_spans: i64, error_message: &str) -> Value {
    if rejected_spans > 0 {
        // int64 fields are strings in OTLP/JSON.
        json!({"partialSuccess": {"rejectedSpans": rejected_spans.to_string(), "errorMessage": error_message}})
    } else {
        json!({})
    }
}

// ------------------------------------------------------------------ JSON

/// OTLP/JSON: lowerCamelCase keys, hex trace and span ids, 64-bit integers as strings or
/// numbers, unknown fields ignored (as the OTLP specification asks of receivers).
mod json_form {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Request {
        #[serde(default)]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ResourceSpans {
        #[serde(default)]
        pub resource: Option<Resource>,
        #[serde(default)]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Deserialize)]
    pub struct Resource {
        #[serde(default)]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Deserialize)]
    pub struct ScopeSpans {
        #[serde(default)]
        pub spans: Vec<Span>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Span {
        #[serde(default)]
        pub trace_id: String,
        #[serde(default)]
        pub span_id: String,
        #[serde(default)]
        pub parent_span_id: String,
        #[serde(default, deserialize_with = "super::lenient_u64")]
        pub start_time_unix_nano: u64,
        #[serde(default, deserialize_with = "super::lenient_u64")]
        pub end_time_unix_nano: u64,
        #[serde(default)]
        pub attributes: Vec<KeyValue>,
        #[serde(default)]
        pub status: Option<Status>,
    }
    #[derive(Deserialize)]
    pub struct Status {
        #[serde(default, deserialize_with = "super::lenient_status_code")]
        pub code: i32,
    }
    #[derive(Deserialize)]
    pub struct KeyValue {
        pub key: String,
        #[serde(default)]
        pub value: Option<AnyValue>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AnyValue {
        pub string_value: Option<String>,
        pub bool_value: Option<bool>,
        #[serde(default, deserialize_with = "super::lenient_i64")]
        pub int_value: Option<i64>,
        pub double_value: Option<f64>,
        pub array_value: Option<ArrayValue>,
        // kvlistValue and bytesValue are not used by the mapping: ignored like unknown fields.
    }
    #[derive(Deserialize)]
    pub struct ArrayValue {
        #[serde(default)]
        pub values: Vec<AnyValue>,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(serde_json::Number),
    String(String),
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a u64"))),
        NumberOrString::String(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a u64"))),
    }
}

fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<NumberOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not an int64"))),
        Some(NumberOrString::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an int64"))),
    }
}

fn lenient_status_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::Number(n) => Ok(n.as_i64().unwrap_or(0) as i32),
        NumberOrString::String(s) => Ok(match s.as_str() {
            "STATUS_CODE_OK" => 1,
            "STATUS_CODE_ERROR" => 2,
            _ => 0,
        }),
    }
}

/// Decodes an `ExportTraceServiceRequest` in OTLP/JSON.
pub fn decode_json(body: &[u8]) -> Result<Vec<ResourceSpans>, String> {
    let request: json_form::Request = serde_json::from_slice(body)
        .map_err(|e| format!("not an OTLP ExportTraceServiceRequest in JSON: {e}"))?;
    let mut out = Vec::with_capacity(request.resource_spans.len());
    for rs in request.resource_spans {
        let mut spans = Vec::new();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Span {
                trace_id: decode_hex(&span.trace_id, "traceId")?,
                span_id: decode_hex(&span.span_id, "spanId")?,
                parent_span_id: decode_hex(&span.parent_span_id, "parentSpanId")?,
                start_time_unix_nano: span.start_time_unix_nano,
                end_time_unix_nano: span.end_time_unix_nano,
                attributes: attributes_from_json(span.attributes),
                status_code: span.status.map_or(0, |s| s.code),
            });
        }
        out.push(ResourceSpans {
            attributes: rs
                .resource
                .map(|r| attributes_from_json(r.attributes))
                .unwrap_or_default(),
            spans,
        });
    }
    Ok(out)
}

fn attributes_from_json(attributes: Vec<json_form::KeyValue>) -> Vec<(String, AttrValue)> {
    attributes
        .into_iter()
        .map(|kv| (kv.key, kv.value.map_or(AttrValue::Other, value_from_json)))
        .collect()
}

fn value_from_json(value: json_form::AnyValue) -> AttrValue {
    if let Some(s) = value.string_value {
        AttrValue::Str(s)
    } else if let Some(b) = value.bool_value {
        AttrValue::Bool(b)
    } else if let Some(i) = value.int_value {
        AttrValue::Int(i)
    } else if let Some(d) = value.double_value {
        AttrValue::Double(d)
    } else if let Some(a) = value.array_value {
        AttrValue::Array(a.values.into_iter().map(value_from_json).collect())
    } else {
        AttrValue::Other
    }
}

fn decode_hex(text: &str, field: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("{field} {text:?} is not hex"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{field} {text:?} is not hex"))
        })
        .collect()
}

// ------------------------------------------------------------------ mapping

/// What became of one span.
#[derive(Debug, PartialEq)]
pub enum SpanRecord {
    /// A GenAI span, as a native JSON LLM-call record.
    Call(Value),
    /// No GenAI usage on it: counted and skipped.
    NotGenAi,
}

/// Input tokens: the GenAI conventions, their deprecated name, OpenInference.
const INPUT_TOKENS: [&str; 3] = [
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
];
/// Output tokens, likewise.
const OUTPUT_TOKENS: [&str; 3] = [
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
];

/// Where a field's value may be found: the span's own attributes, or the span's then the
/// resource's (what describes the service rather than the call).
#[derive(Clone, Copy)]
enum Scope {
    Span,
    SpanOrResource,
}

/// How a found value becomes the field's.
#[derive(Clone, Copy)]
enum Take {
    Value,
    /// The first item of a list (or of a JSON list in a string).
    FirstItem,
}

/// The native field each GenAI attribute fills, with every spelling that fills it, first
/// found wins: the current semantic conventions first, then the deprecated names.
#[rustfmt::skip]
const SPAN_FIELDS: &[(&str, Scope, Take, &[&str])] = &[
    ("provider", Scope::Span, Take::Value, &["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"]),
    ("model", Scope::Span, Take::Value, &["gen_ai.request.model", "gen_ai.response.model", "llm.model_name"]),
    ("response_model", Scope::Span, Take::Value, &["gen_ai.response.model"]),
    ("operation", Scope::Span, Take::Value, &["gen_ai.operation.name"]),
    ("input_tokens", Scope::Span, Take::Value, &INPUT_TOKENS),
    ("output_tokens", Scope::Span, Take::Value, &OUTPUT_TOKENS),
    ("cache_read_tokens", Scope::Span, Take::Value, &["gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.input_tokens.cached", "llm.token_count.prompt_details.cache_read"]),
    ("cache_write_tokens", Scope::Span, Take::Value, &["gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.cache_creation_input_tokens", "llm.token_count.prompt_details.cache_write"]),
    ("reasoning_tokens", Scope::Span, Take::Value, &["gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.output_tokens.reasoning", "llm.token_count.completion_details.reasoning"]),
    ("session_id", Scope::SpanOrResource, Take::Value, &["gen_ai.conversation.id", "session.id"]),
    ("agent", Scope::Span, Take::Value, &["gen_ai.agent.name", "gen_ai.agent.id"]),
    ("tool_name", Scope::Span, Take::Value, &["gen_ai.tool.name"]),
    ("finish_reason", Scope::Span, Take::FirstItem, &["gen_ai.response.finish_reasons"]),
    ("error_type", Scope::Span, Take::Value, &["error.type"]),
    ("service_tier", Scope::Span, Take::Value, &["openai.response.service_tier", "gen_ai.openai.response.service_tier", "openai.request.service_tier"]),
    ("service", Scope::SpanOrResource, Take::Value, &["service.name"]),
    ("environment", Scope::SpanOrResource, Take::Value, &["deployment.environment.name", "deployment.environment"]),
    ("region", Scope::SpanOrResource, Take::Value, &["cloud.region"]),
    ("user", Scope::SpanOrResource, Take::Value, &["user.id"]),
    ("workflow", Scope::SpanOrResource, Take::Value, &["tally.workflow", "gen_ai.workflow.name"]),
    ("ticket_id", Scope::SpanOrResource, Take::Value, &["tally.ticket_id"]),
    // Raw text: fingerprinted by the LLM-call reader, then dropped.
    ("gen_ai.input.messages", Scope::Span, Take::Value, &["gen_ai.input.messages", "gen_ai.prompt"]),
    ("gen_ai.output.messages", Scope::Span, Take::Value, &["gen_ai.output.messages", "gen_ai.completion"]),
];

/// Maps one span (and its resource's attributes) to a native JSON record.
pub fn span_to_record(
    resource: &[(String, AttrValue)],
    span: &Span,
    team_attribute: &str,
) -> SpanRecord {
    let on_span = |keys: &[&str]| keys.iter().find_map(|key| lookup(&span.attributes, key));
    if on_span(&INPUT_TOKENS).is_none() && on_span(&OUTPUT_TOKENS).is_none() {
        return SpanRecord::NotGenAi;
    }
    let mut record = span_identity(span);
    let team = [team_attribute];
    let fields = SPAN_FIELDS.iter().copied().chain([(
        "team",
        Scope::SpanOrResource,
        Take::Value,
        &team[..],
    )]);
    for (field, scope, take, keys) in fields {
        let found = on_span(keys).or_else(|| match scope {
            Scope::Span => None,
            Scope::SpanOrResource => keys.iter().find_map(|key| lookup(resource, key)),
        });
        if let Some(value) = found {
            let value = match take {
                Take::Value => json_value(value),
                Take::FirstItem => first_of_array(value),
            };
            record.insert(field.to_string(), value);
        }
    }
    if span.status_code == 2 || on_span(&["error.type"]).is_some() {
        record.insert("status".into(), json!("error"));
    }
    if let Some(micros) = reported_cost_micros(&on_span) {
        record.insert("reported_cost_micros".into(), json!(micros));
    }
    if let Some(id) = on_span(&["gen_ai.tool.call.id"]) {
        record.insert("tags".into(), json!({ "tool_call_id": json_value(id) }));
    }
    SpanRecord::Call(Value::Object(record))
}

/// What the sender says the call cost, in micro-dollars: the proposed
/// `gen_ai.usage.cost.amount` when its `.currency` is USD (or absent), else LiteLLM's
/// `gen_ai.cost.total_cost` or OpenInference's `llm.cost.total` (dollars). The number is read
/// as the decimal it is written as (never through a float product) and rounded half to even
/// to the micro-dollar; a negative, non-numeric or other-currency cost is not taken.
fn reported_cost_micros<'a>(on_span: &impl Fn(&[&str]) -> Option<&'a AttrValue>) -> Option<i64> {
    let usd = match on_span(&["gen_ai.usage.cost.currency"]) {
        None => true,
        Some(AttrValue::Str(code)) => code.eq_ignore_ascii_case("USD"),
        Some(_) => false,
    };
    let amount = usd
        .then(|| on_span(&["gen_ai.usage.cost.amount"]))
        .flatten()
        .or_else(|| on_span(&["gen_ai.cost.total_cost", "llm.cost.total"]))?;
    let text = match amount {
        AttrValue::Double(d) if d.is_finite() => format!("{d}"),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Str(text) => text.trim().to_string(),
        _ => return None,
    };
    let dollars: tally_accounting::decimal::Decimal = text.parse().ok()?;
    dollars.round_scaled(6).ok().filter(|micros| *micros >= 0)
}

/// The fields a span gives by being a span: its id (the event id), start time, latency,
/// trace, span and parent ids.
fn span_identity(span: &Span) -> Map<String, Value> {
    let mut record = Map::new();
    let trace = to_hex(&span.trace_id);
    let span_id = to_hex(&span.span_id);
    record.insert("event_id".into(), json!(format!("otel-{trace}-{span_id}")));
    record.insert(
        "occurred_at".into(),
        json!(rfc3339_from_nanos(span.start_time_unix_nano)),
    );
    if span.end_time_unix_nano >= span.start_time_unix_nano && span.end_time_unix_nano > 0 {
        let millis = (span.end_time_unix_nano - span.start_time_unix_nano) / 1_000_000;
        record.insert("latency_ms".into(), json!(millis));
    }
    if !span.trace_id.is_empty() {
        record.insert("trace_id".into(), json!(trace));
    }
    if !span.span_id.is_empty() {
        record.insert("span_id".into(), json!(span_id));
    }
    if !span.parent_span_id.is_empty() {
        let parent = to_hex(&span.parent_span_id);
        record.insert("parent_id".into(), json!(format!("otel-{trace}-{parent}")));
    }
    record
}

fn lookup<'a>(attributes: &'a [(String, AttrValue)], key: &str) -> Option<&'a AttrValue> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .filter(|v| **v != AttrValue::Other)
}

fn json_value(value: &AttrValue) -> Value {
    match value {
        AttrValue::Str(s) => Value::String(s.clone()),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::Int(i) => json!(i),
        AttrValue::Double(d) => json!(d),
        AttrValue::Array(items) => Value::Array(items.iter().map(json_value).collect()),
        AttrValue::Other => Value::Null,
    }
}

/// The first item of an array attribute. LiteLLM's OpenTelemetry callback sends the array
/// as its JSON text (`'["stop"]'`): that is read as the array it encodes.
fn first_of_array(value: &AttrValue) -> Value {
    match value {
        AttrValue::Array(items) => items.first().map_or(Value::Null, json_value),
        AttrValue::Str(text) if text.trim_start().starts_with('[') => {
            match serde_json::from_str::<Vec<Value>>(text) {
                Ok(items) => items.into_iter().next().unwrap_or(Value::Null),
                Err(_) => Value::String(text.clone()),
            }
        }
        other => json_value(other),
    }
}

fn rfc3339_from_nanos(nanos: u64) -> String {
    let micros_as_nanos = (nanos / 1_000 * 1_000) as i128;
    OffsetDateTime::from_unix_timestamp_nanos(micros_as_nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "invalid".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(key: &str, value: proto::any_value::Value) -> proto::KeyValue {
        proto::KeyValue {
            key: key.into(),
            value: Some(proto::AnyValue { value: Some(value) }),
        }
    }

    fn request() -> proto::ExportTraceServiceRequest {
        use proto::any_value::Value as V;
        proto::ExportTraceServiceRequest {
            resource_spans: vec![proto::ResourceSpans {
                resource: Some(proto::Resource {
                    attributes: vec![
                        kv("service.name", V::StringValue("checkout".into())),
                        kv("cloud.region", V::StringValue("eu-west-1".into())),
                    ],
                }),
                scope_spans: vec![proto::ScopeSpans {
                    spans: vec![
                        proto::Span {
                            trace_id: vec![0xab; 16],
                            span_id: vec![0x01; 8],
                            parent_span_id: vec![],
                            start_time_unix_nano: 1_795_428_000_123_456_789,
                            end_time_unix_nano: 1_795_428_001_623_456_789,
                            attributes: vec![
                                kv("gen_ai.operation.name", V::StringValue("chat".into())),
                                kv("gen_ai.system", V::StringValue("openai".into())),
                                kv("gen_ai.request.model", V::StringValue("gpt-4o".into())),
                                kv("gen_ai.usage.prompt_tokens", V::IntValue(1200)),
                                kv("gen_ai.usage.completion_tokens", V::IntValue(80)),
                                kv("gen_ai.usage.cache_read.input_tokens", V::IntValue(1000)),
                                kv(
                                    "gen_ai.response.finish_reasons",
                                    V::ArrayValue(proto::ArrayValue {
                                        values: vec![proto::AnyValue {
                                            value: Some(V::StringValue("stop".into())),
                                        }],
                                    }),
                                ),
                            ],
                            status: Some(proto::Status {
                                message: String::new(),
                                code: 2,
                            }),
                        },
                        proto::Span {
                            span_id: vec![2; 8],
                            ..Default::default()
                        },
                    ],
                }],
            }],
        }
    }

    #[test]
    fn a_protobuf_genai_span_maps_to_a_native_record() {
        let decoded = decode_protobuf(&request().encode_to_vec()).unwrap();
        let resource = &decoded[0];
        assert_eq!(resource.spans.len(), 2);
        let SpanRecord::Call(record) =
            span_to_record(&resource.attributes, &resource.spans[0], "tally.team")
        else {
            panic!("a GenAI span")
        };
        assert_eq!(
            record,
            json!({
                "event_id": format!("otel-{}-0101010101010101", "ab".repeat(16)),
                "occurred_at": "2026-11-23T10:00:00.123456Z",
                "latency_ms": 1500,
                "trace_id": "ab".repeat(16),
                "span_id": "0101010101010101",
                "provider": "openai",
                "model": "gpt-4o",
                "operation": "chat",
                "input_tokens": 1200,
                "output_tokens": 80,
                "cache_read_tokens": 1000,
                "finish_reason": "stop",
                "status": "error",
                "service": "checkout",
                "region": "eu-west-1"
            })
        );
        assert_eq!(
            span_to_record(&resource.attributes, &resource.spans[1], "tally.team"),
            SpanRecord::NotGenAi
        );
    }

    #[test]
    fn the_json_form_decodes_to_the_same_spans() {
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}},
                                        {"key": "cloud.region", "value": {"stringValue": "eu-west-1"}}]},
            "scopeSpans": [{"scope": {"name": "x"}, "spans": [
                {"traceId": "ab".repeat(16), "spanId": "0101010101010101", "name": "chat gpt-4o", "kind": 3,
                 "startTimeUnixNano": "1795428000123456789", "endTimeUnixNano": 1_795_428_001_623_456_789u64,
                 "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                    {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                    {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": "1200"}},
                    {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": 80}},
                    {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": "1000"}},
                    {"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}}}],
                 "status": {"code": 2}},
                {"traceId": "", "spanId": "0202020202020202"}]}]}]});
        let from_json = decode_json(body.to_string().as_bytes()).unwrap();
        let from_proto = decode_protobuf(&request().encode_to_vec()).unwrap();
        assert_eq!(from_json, from_proto);
    }

    #[test]
    fn finish_reasons_sent_as_json_text_are_read_as_the_array() {
        // LiteLLM's OpenTelemetry callback: `gen_ai.response.finish_reasons = '["stop"]'`.
        let mut span = decode_protobuf(&request().encode_to_vec()).unwrap()[0].spans[0].clone();
        let reasons = |span: &mut Span, value: AttrValue| {
            span.attributes
                .retain(|(key, _)| key != "gen_ai.response.finish_reasons");
            span.attributes
                .push(("gen_ai.response.finish_reasons".into(), value));
            match span_to_record(&[], span, "tally.team") {
                SpanRecord::Call(record) => record["finish_reason"].clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            reasons(&mut span, AttrValue::Str(r#"["stop"]"#.into())),
            "stop"
        );
        assert_eq!(
            reasons(&mut span, AttrValue::Str(r#" ["length", "stop"]"#.into())),
            "length"
        );
        assert_eq!(reasons(&mut span, AttrValue::Str("stop".into())), "stop");
        assert_eq!(
            reasons(&mut span, AttrValue::Str("[not json".into())),
            "[not json",
            "text that is no JSON array is kept as sent"
        );
    }

    /// A GenAI span with only `attributes` (and input and output tokens in the spelling
    /// given), mapped.
    fn mapped(tokens: (&str, &str), attributes: &[(&str, AttrValue)]) -> Value {
        let mut span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: 1_795_428_000_000_000_000,
            ..Default::default()
        };
        span.attributes = [
            (tokens.0, AttrValue::Int(10)),
            (tokens.1, AttrValue::Int(5)),
        ]
        .into_iter()
        .chain(attributes.iter().cloned())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        match span_to_record(&[], &span, "tally.team") {
            SpanRecord::Call(record) => record,
            other => panic!("{other:?}"),
        }
    }

    /// Every spelling the ecosystem sends (written out here, not read from the mapping's
    /// table) gives its field: the current GenAI conventions, their renames and deprecated
    /// names, Sentry's, OpenInference's and LiteLLM's.
    #[test]
    fn every_spelling_of_a_genai_attribute_fills_its_field() {
        let text = |t: &str| AttrValue::Str(t.to_string());
        let cases: Vec<(&str, AttrValue, &str, Value)> = vec![
            (
                "gen_ai.usage.cache_creation.input_tokens",
                AttrValue::Int(3),
                "cache_write_tokens",
                json!(3),
            ),
            (
                "gen_ai.usage.cache_write.input_tokens",
                AttrValue::Int(3),
                "cache_write_tokens",
                json!(3),
            ),
            (
                "gen_ai.usage.cache_creation_input_tokens",
                AttrValue::Int(3),
                "cache_write_tokens",
                json!(3),
            ),
            (
                "llm.token_count.prompt_details.cache_write",
                AttrValue::Int(3),
                "cache_write_tokens",
                json!(3),
            ),
            (
                "gen_ai.usage.cache_read.input_tokens",
                AttrValue::Int(4),
                "cache_read_tokens",
                json!(4),
            ),
            (
                "gen_ai.usage.cache_read_input_tokens",
                AttrValue::Int(4),
                "cache_read_tokens",
                json!(4),
            ),
            (
                "gen_ai.usage.input_tokens.cached",
                AttrValue::Int(4),
                "cache_read_tokens",
                json!(4),
            ),
            (
                "llm.token_count.prompt_details.cache_read",
                AttrValue::Int(4),
                "cache_read_tokens",
                json!(4),
            ),
            (
                "gen_ai.usage.reasoning.output_tokens",
                AttrValue::Int(2),
                "reasoning_tokens",
                json!(2),
            ),
            (
                "gen_ai.usage.output_tokens.reasoning",
                AttrValue::Int(2),
                "reasoning_tokens",
                json!(2),
            ),
            (
                "llm.token_count.completion_details.reasoning",
                AttrValue::Int(2),
                "reasoning_tokens",
                json!(2),
            ),
            (
                "gen_ai.request.model",
                text("gpt-4o"),
                "model",
                json!("gpt-4o"),
            ),
            ("llm.model_name", text("gpt-4o"), "model", json!("gpt-4o")),
            (
                "gen_ai.provider.name",
                text("openai"),
                "provider",
                json!("openai"),
            ),
            ("gen_ai.system", text("openai"), "provider", json!("openai")),
            ("llm.provider", text("openai"), "provider", json!("openai")),
            ("llm.system", text("openai"), "provider", json!("openai")),
            (
                "gen_ai.agent.name",
                text("triage"),
                "agent",
                json!("triage"),
            ),
            (
                "gen_ai.agent.id",
                text("agent-7"),
                "agent",
                json!("agent-7"),
            ),
            (
                "gen_ai.workflow.name",
                text("refunds"),
                "workflow",
                json!("refunds"),
            ),
            (
                "tally.workflow",
                text("refunds"),
                "workflow",
                json!("refunds"),
            ),
            (
                "gen_ai.tool.call.id",
                text("call_9"),
                "tags",
                json!({"tool_call_id": "call_9"}),
            ),
            (
                "openai.response.service_tier",
                text("flex"),
                "service_tier",
                json!("flex"),
            ),
            (
                "gen_ai.openai.response.service_tier",
                text("flex"),
                "service_tier",
                json!("flex"),
            ),
            (
                "gen_ai.conversation.id",
                text("s-1"),
                "session_id",
                json!("s-1"),
            ),
            ("session.id", text("s-1"), "session_id", json!("s-1")),
        ];
        let token_spellings = [
            ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"),
            (
                "gen_ai.usage.prompt_tokens",
                "gen_ai.usage.completion_tokens",
            ),
            ("llm.token_count.prompt", "llm.token_count.completion"),
        ];
        for tokens in token_spellings {
            let record = mapped(tokens, &[]);
            assert_eq!(
                (
                    record["input_tokens"].clone(),
                    record["output_tokens"].clone()
                ),
                (json!(10), json!(5)),
                "{tokens:?}"
            );
            for (attribute, value, field, expected) in &cases {
                let record = mapped(tokens, &[(attribute, value.clone())]);
                assert_eq!(
                    record[*field], *expected,
                    "{attribute} with {tokens:?}: {record}"
                );
            }
        }
    }

    #[test]
    fn a_reported_cost_is_read_exactly_in_micro_dollars() {
        let tokens = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens");
        let cost = |attributes: &[(&str, AttrValue)]| {
            mapped(tokens, attributes)["reported_cost_micros"].clone()
        };
        let usd = AttrValue::Str("USD".into());
        assert_eq!(
            cost(&[
                ("gen_ai.usage.cost.amount", AttrValue::Double(0.0123456)),
                ("gen_ai.usage.cost.currency", usd.clone())
            ]),
            json!(12346)
        );
        assert_eq!(
            cost(&[("gen_ai.usage.cost.amount", AttrValue::Double(0.1))]),
            json!(100000),
            "0.1 is read as written, not as the float 0.1000000000000000055"
        );
        assert_eq!(
            cost(&[("gen_ai.cost.total_cost", AttrValue::Double(1.5))]),
            json!(1500000)
        );
        assert_eq!(
            cost(&[("llm.cost.total", AttrValue::Str("2.0000005".into()))]),
            json!(2000000),
            "half to even"
        );
        assert_eq!(
            cost(&[("llm.cost.total", AttrValue::Str("2.0000015".into()))]),
            json!(2000002),
            "half to even"
        );
        assert_eq!(
            cost(&[
                ("gen_ai.usage.cost.amount", AttrValue::Double(3.0)),
                ("gen_ai.usage.cost.currency", AttrValue::Str("EUR".into()))
            ]),
            Value::Null,
            "not dollars"
        );
        assert_eq!(
            cost(&[
                ("gen_ai.usage.cost.amount", AttrValue::Double(3.0)),
                ("gen_ai.usage.cost.currency", AttrValue::Str("EUR".into())),
                ("llm.cost.total", AttrValue::Double(3.3))
            ]),
            json!(3300000)
        );
        assert_eq!(
            cost(&[("llm.cost.total", AttrValue::Double(-1.0))]),
            Value::Null
        );
        assert_eq!(
            cost(&[("llm.cost.total", AttrValue::Double(f64::NAN))]),
            Value::Null
        );
        assert_eq!(cost(&[]), Value::Null);
    }

    #[test]
    fn bad_ids_and_bodies_are_errors() {
        let err =
            decode_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz1"}]}]}]}"#)
                .unwrap_err();
        assert_eq!(err, "traceId \"xyz1\" is not hex");
        assert!(decode_protobuf(b"\xff\xff\xff")
            .unwrap_err()
            .starts_with("not an OTLP"));
    }

    #[test]
    fn partial_success_responses() {
        assert!(encode_response_protobuf(0, "").is_empty());
        let bytes = encode_response_protobuf(2, "span 1: model: is required");
        let decoded = proto::ExportTraceServiceResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.partial_success.unwrap().rejected_spans, 2);
        assert_eq!(
            encode_response_json(2, "x")["partialSuccess"]["rejectedSpans"],
            "2"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(resources) = decode_protobuf(&body) {
                for r in &resources {
                    for s in &r.spans {
                        let _ = span_to_record(&r.attributes, s, "tally.team");
                    }
                }
            }
            let _ = decode_json(&body);
        }
    }
}
