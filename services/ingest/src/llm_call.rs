//! A native JSON LLM call (field names of the `LlmCall` schema, plus a provider `usage`
//! object and raw text that is fingerprinted and dropped) → a validated `LlmCall`.
use serde_json::Value;
use sha2::{Digest, Sha256};
use tally_contract::records::{CallStatus, LlmCall, Micros, ServiceTier};

use crate::auth::{to_hex, Principal, TeamError};
use crate::fingerprint;
use crate::record::{FieldError, Record};
use crate::usage::{read_usage, Tokens};

/// What every record of a request shares: who sent it and when it arrived.
pub struct Context<'a> {
    /// The authenticated sender.
    pub principal: &'a Principal,
    /// Size limits of one record.
    pub limits: &'a crate::limits::RecordLimits,
    /// Arrival time, epoch microseconds: the records' `received_at`.
    pub received_at: Micros,
    /// Latest acceptable `occurred_at`: arrival plus the allowed clock skew.
    pub latest_occurred_at: Micros,
}

/// Raw text fields a client may send. They are fingerprinted and never leave the ingest
/// service.
const PROMPT_TEXT_FIELDS: [&str; 3] = ["prompt", "messages", "gen_ai.input.messages"];
const OUTPUT_TEXT_FIELDS: [&str; 3] = ["completion", "output", "gen_ai.output.messages"];

/// Reads one native JSON record into an `LlmCall`, or every problem with it.
pub fn llm_call_from_json(value: Value, context: &Context<'_>) -> Result<LlmCall, Vec<FieldError>> {
    let mut value = value;
    let derived_id_source = strip_text(&mut value);
    let mut r = Record::new(value)?;

    let event_id = r.string("event_id");
    let occurred_at = r.required_timestamp("occurred_at");
    r.take("received_at"); // set by the server, whatever the client says
    check_tenant(&mut r, context.principal);
    let team = resolve_team(&mut r, context.principal);
    let tokens = read_tokens(&mut r);
    let service_tier = read_service_tier(&mut r);
    let error_type = r.string("error_type");
    let status = r
        .symbol::<CallStatus>("status")
        .unwrap_or(if error_type.is_some() {
            CallStatus::Error
        } else {
            CallStatus::Ok
        });
    let prompt_fingerprint = r
        .string("prompt_fingerprint")
        .or(derived_id_source.prompt_fingerprint);
    let tool_args_fingerprint = r
        .string("tool_args_fingerprint")
        .or(derived_id_source.tool_args_fingerprint);
    let output_fingerprint = r
        .string("output_fingerprint")
        .or(derived_id_source.output_fingerprint);

    let mut call = LlmCall {
        event_id: String::new(),
        occurred_at: occurred_at.unwrap_or_default(),
        received_at: context.received_at,
        tenant: context.principal.tenant.clone(),
        team: team.unwrap_or_default(),
        user: r.string("user"),
        service: r.string("service"),
        environment: r.string("environment"),
        workflow: r.string("workflow"),
        session_id: r.string("session_id"),
        agent: r.string("agent"),
        step: r.integer("step", 0, i32::MAX as i64).map(|s| s as i32),
        parent_id: r.string("parent_id"),
        trace_id: r.string("trace_id"),
        span_id: r.string("span_id"),
        // One provider, one name, whatever the sender calls it (tally_accounting::provider).
        provider: tally_accounting::provider::canonical(
            &r.required_string("provider").unwrap_or_default(),
        ),
        model: r.required_string("model").unwrap_or_default(),
        response_model: r.string("response_model"),
        operation: r.string("operation").unwrap_or_else(|| "chat".to_string()),
        region: r.string("region"),
        input_tokens: tokens.input,
        output_tokens: tokens.output,
        cache_read_tokens: tokens.cache_read,
        cache_write_tokens: tokens.cache_write,
        reasoning_tokens: tokens.reasoning,
        service_tier: service_tier.unwrap_or(ServiceTier::Standard),
        latency_ms: r.integer("latency_ms", 0, i64::MAX),
        status,
        error_type,
        finish_reason: r.string("finish_reason"),
        prompt_fingerprint,
        output_fingerprint,
        tool_name: r.string("tool_name"),
        tool_args_fingerprint,
        ticket_id: r.string("ticket_id"),
        reported_cost_micros: r.integer("reported_cost_micros", 0, i64::MAX),
        tags: r.string_map("tags").unwrap_or_default(),
    };
    if let Some(occurred_at) = occurred_at {
        if occurred_at > context.latest_occurred_at {
            r.error(
                "occurred_at",
                format!(
                    "is {} s in the future, more than the allowed clock skew",
                    (occurred_at - context.received_at) / 1_000_000
                ),
            );
        }
    }
    check_token_subsets(&mut r, &tokens);
    let errors = r.finish();
    if !errors.is_empty() {
        return Err(errors);
    }
    call.event_id = match (event_id, derived_id_source.content) {
        (Some(event_id), _) => event_id,
        (None, Some(content)) => derived_event_id(&context.principal.tenant, &content),
        (None, None) => unreachable!("a record without an event id has its content kept"),
    };
    Ok(call)
}

/// What stripping raw text leaves: fingerprints, and the content a derived id hashes.
struct Stripped {
    prompt_fingerprint: Option<String>,
    output_fingerprint: Option<String>,
    tool_args_fingerprint: Option<String>,
    /// The record as received, raw text replaced by its fingerprint, canonical JSON; only
    /// for a record without an event id, the one case it is hashed into a derived id (most
    /// records have ids, and copying and printing each cost more than the rest of reading it).
    content: Option<String>,
}

/// Removes raw prompt, completion and tool-argument text from a record, keeping only
/// fingerprints, before anything else looks at it.
fn strip_text(value: &mut Value) -> Stripped {
    let mut stripped = Stripped {
        prompt_fingerprint: None,
        output_fingerprint: None,
        tool_args_fingerprint: None,
        content: None,
    };
    if let Value::Object(map) = value {
        for field in PROMPT_TEXT_FIELDS {
            if let Some(text) = map.remove(field).filter(|v| !v.is_null()) {
                stripped
                    .prompt_fingerprint
                    .get_or_insert_with(|| fingerprint::of_value(&text));
            }
        }
        for field in OUTPUT_TEXT_FIELDS {
            if let Some(text) = map.remove(field).filter(|v| !v.is_null()) {
                stripped
                    .output_fingerprint
                    .get_or_insert_with(|| fingerprint::of_value(&text));
            }
        }
        if let Some(args) = map.remove("tool_args").filter(|v| !v.is_null()) {
            stripped.tool_args_fingerprint = Some(fingerprint::of_value(&args));
        }
        // `r.string("event_id")` is None for an absent or null id: then the id is derived.
        if map.get("event_id").is_some_and(|id| !id.is_null()) {
            return stripped;
        }
        let mut content = map.clone();
        content.remove("received_at");
        if let Some(fp) = &stripped.prompt_fingerprint {
            content
                .entry("prompt_fingerprint")
                .or_insert_with(|| Value::String(fp.clone()));
        }
        if let Some(fp) = &stripped.tool_args_fingerprint {
            content
                .entry("tool_args_fingerprint")
                .or_insert_with(|| Value::String(fp.clone()));
        }
        if let Some(fp) = &stripped.output_fingerprint {
            content
                .entry("output_fingerprint")
                .or_insert_with(|| Value::String(fp.clone()));
        }
        stripped.content = Some(fingerprint::canonical_json(&Value::Object(content)));
    }
    stripped
}

/// What every derived event id starts with.
pub const DERIVED_ID_PREFIX: &str = "derived-";

/// A deterministic id for a record that came without one: the same record sent again (a
/// retried request) gets the same id, so it is not counted twice. (Identical records of one
/// request are told apart by their order: see the server's `number_identical_records`.)
pub fn derived_event_id(tenant: &str, content: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    hasher.update([0]);
    hasher.update(content.as_bytes());
    format!("{DERIVED_ID_PREFIX}{}", &to_hex(&hasher.finalize())[..32])
}

fn check_tenant(r: &mut Record, principal: &Principal) {
    if let Some(tenant) = r.string("tenant") {
        if tenant != principal.tenant {
            r.forbidden("tenant", format!("{tenant:?} is not the API key's tenant"));
        }
    }
}

/// The record's team under the key's rights; problems are recorded on the record.
pub fn resolve_team(r: &mut Record, principal: &Principal) -> Option<String> {
    let requested = r.string("team");
    match principal.resolve_team(requested.as_deref()) {
        Ok(team) => Some(team),
        Err(TeamError::Missing) => {
            r.error("team", "is required: this API key has no team of its own");
            None
        }
        Err(TeamError::Forbidden { requested }) => {
            r.forbidden(
                "team",
                format!("this API key may not send events for team {requested:?}"),
            );
            None
        }
    }
}

fn read_tokens(r: &mut Record) -> Tokens {
    const NATIVE: [&str; 5] = [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ];
    if let Some(mut usage) = r.nested("usage") {
        let (_, tokens) = read_usage(&mut usage);
        if let Some(tier) = usage.take("service_tier") {
            // Anthropic reports the tier inside usage; a top-level one wins.
            if !r.has("service_tier") {
                r.set("service_tier", tier);
            }
        }
        r.absorb(usage);
        for field in NATIVE {
            if r.take(field).is_some() {
                r.error(
                    field,
                    "give token counts either natively or in usage, not both",
                );
            }
        }
        return tokens;
    }
    if !r.has("input_tokens") && !r.has("output_tokens") {
        r.error(
            "input_tokens",
            "token counts are required: input_tokens and output_tokens, or a usage object",
        );
    }
    Tokens {
        input: r.tokens("input_tokens").unwrap_or(0),
        output: r.tokens("output_tokens").unwrap_or(0),
        cache_read: r.tokens("cache_read_tokens").unwrap_or(0),
        cache_write: r.tokens("cache_write_tokens").unwrap_or(0),
        reasoning: r.tokens("reasoning_tokens").unwrap_or(0),
    }
}

fn check_token_subsets(r: &mut Record, tokens: &Tokens) {
    // A provider's usage object is normalised by adding (Anthropic's input is the sum of three
    // counts): the sums must be within the limit too.
    for (field, n) in [
        ("input_tokens", tokens.input),
        ("output_tokens", tokens.output),
    ] {
        if n > tally_contract::records::MAX_TOKENS_PER_CALL {
            r.error(field, crate::record::too_many_tokens(n));
        }
    }
    if tokens.cache_read > tokens.input {
        r.error(
            "cache_read_tokens",
            format!(
                "{} is more than input_tokens {} (input includes cached tokens)",
                tokens.cache_read, tokens.input
            ),
        );
    } else if tokens.cache_read.saturating_add(tokens.cache_write) > tokens.input {
        r.error(
            "cache_write_tokens",
            format!(
                "cache_read_tokens {} + cache_write_tokens {} is more than input_tokens {} (input includes both)",
                tokens.cache_read, tokens.cache_write, tokens.input
            ),
        );
    }
    if tokens.reasoning > tokens.output {
        r.error(
            "reasoning_tokens",
            format!(
                "{} is more than output_tokens {} (output includes reasoning)",
                tokens.reasoning, tokens.output
            ),
        );
    }
}

/// Service tier, accepting the providers' own words for the standard tier.
fn read_service_tier(r: &mut Record) -> Option<ServiceTier> {
    let tier = r.string("service_tier")?;
    match tier.as_str() {
        // OpenAI answers "default" (and accepts "auto") for the standard tier.
        "default" | "auto" | "standard_only" => Some(ServiceTier::Standard),
        other => match other.parse() {
            Ok(tier) => Some(tier),
            Err(reason) => {
                r.error("service_tier", reason);
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_key, Authenticator};
    use crate::config::ApiKeyConfig;
    use serde_json::json;
    use std::sync::Arc;

    const NOW: Micros = 1_795_428_000_000_000;

    fn principal(team: Option<&str>, any_team: bool) -> Arc<Principal> {
        let auth = Authenticator::new(&[ApiKeyConfig {
            name: "test".into(),
            sha256: hash_key("k"),
            tenant: "acme".into(),
            team: team.map(String::from),
            any_team,
            rate_limit_per_sec: 10,
            github_webhook_secret: None,
        }]);
        auth.bearer(Some("Bearer k")).unwrap()
    }

    fn read(value: Value) -> Result<LlmCall, Vec<FieldError>> {
        let p = principal(Some("payments"), false);
        let context = Context {
            principal: &p,
            limits: &crate::limits::RecordLimits::default(),
            received_at: NOW,
            latest_occurred_at: NOW + 300_000_000,
        };
        llm_call_from_json(value, &context)
    }

    fn problems(value: Value) -> Vec<String> {
        read(value)
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {}", e.field, e.reason))
            .collect()
    }

    fn minimal() -> Value {
        json!({"occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o",
               "input_tokens": 100, "output_tokens": 20})
    }

    #[test]
    fn token_counts_above_the_per_call_limit_are_refused_naming_the_field() {
        let limit = tally_contract::records::MAX_TOKENS_PER_CALL;
        let mut at_limit = minimal();
        at_limit["output_tokens"] = json!(limit);
        assert_eq!(read(at_limit).unwrap().output_tokens, limit);
        for (field, value) in [
            ("output_tokens", json!(limit + 1)),
            ("input_tokens", json!(i64::MAX)),
            ("input_tokens", json!(u64::MAX)),
            ("input_tokens", json!(1e30)),
        ] {
            let mut call = minimal();
            call[field] = value.clone();
            let errors = problems(call);
            assert!(
                errors.len() == 1
                    && errors[0].starts_with(&format!("{field}: "))
                    && errors[0].contains("the most tokens one call may count"),
                "{field} = {value}: {errors:?}"
            );
        }
        // Anthropic's input is the sum of three counts: within the limit each, not together.
        let mut call = minimal();
        call.as_object_mut().unwrap().remove("input_tokens");
        call.as_object_mut().unwrap().remove("output_tokens");
        call["usage"] = json!({"input_tokens": limit, "output_tokens": 1,
                               "cache_read_input_tokens": limit, "cache_creation_input_tokens": 1});
        let errors = problems(call);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("input_tokens: ") && e.contains("most tokens")),
            "{errors:?}"
        );
    }

    #[test]
    fn the_provider_is_stored_under_its_one_name_however_it_is_spelled() {
        for (sent, stored) in [
            ("mistralai", "mistral_ai"),
            ("Mistral", "mistral_ai"),
            ("bedrock", "aws.bedrock"),
            ("google_genai", "gcp.gen_ai"),
            ("gcp.gemini", "gcp.gemini"),
            ("acme", "acme"),
        ] {
            let mut value = minimal();
            value["provider"] = json!(sent);
            assert_eq!(read(value).unwrap().provider, stored, "{sent}");
        }
    }

    #[test]
    fn a_minimal_call_gets_defaults_from_the_key_and_the_server() {
        let call = read(minimal()).unwrap();
        assert_eq!(
            (call.tenant.as_str(), call.team.as_str()),
            ("acme", "payments")
        );
        assert_eq!(call.received_at, NOW);
        assert_eq!(call.occurred_at, NOW);
        assert_eq!(call.operation, "chat");
        assert_eq!(call.status, CallStatus::Ok);
        assert_eq!(call.service_tier, ServiceTier::Standard);
        assert!(
            call.event_id.starts_with("derived-") && call.event_id.len() == 40,
            "{}",
            call.event_id
        );
        assert_eq!(
            (
                call.input_tokens,
                call.output_tokens,
                call.cache_read_tokens
            ),
            (100, 20, 0)
        );
    }

    #[test]
    fn a_derived_id_is_stable_for_the_same_record_and_differs_for_another() {
        let a = read(minimal()).unwrap().event_id;
        assert_eq!(read(minimal()).unwrap().event_id, a);
        let mut other = minimal();
        other["output_tokens"] = json!(21);
        assert_ne!(read(other).unwrap().event_id, a);
    }

    #[test]
    fn raw_text_becomes_fingerprints_and_is_dropped() {
        let mut value = minimal();
        value["messages"] = json!([{"role": "user", "content": "refund order 42"}]);
        value["completion"] = json!("Sure, refunding.");
        value["tool_args"] = json!({"order": 42});
        let call = read(value).unwrap();
        let expected =
            fingerprint::of_value(&json!([{"role": "user", "content": "refund order 42"}]));
        assert_eq!(call.prompt_fingerprint.as_deref(), Some(expected.as_str()));
        assert_eq!(
            call.tool_args_fingerprint,
            Some(fingerprint::of_value(&json!({"order": 42})))
        );
        assert_eq!(
            call.output_fingerprint,
            Some(fingerprint::of_value(&json!("Sure, refunding.")))
        );
        let encoded = format!("{call:?}");
        assert!(!encoded.contains("refund order") && !encoded.contains("Sure, refunding"));
    }

    #[test]
    fn usage_shapes_normalise_and_cannot_mix_with_native_counts() {
        let mut value = minimal();
        value.as_object_mut().unwrap().remove("input_tokens");
        value.as_object_mut().unwrap().remove("output_tokens");
        value["usage"] = json!({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90,
                                "cache_creation_input_tokens": 0, "service_tier": "priority"});
        let call = read(value.clone()).unwrap();
        assert_eq!(
            (
                call.input_tokens,
                call.cache_read_tokens,
                call.output_tokens
            ),
            (100, 90, 5)
        );
        assert_eq!(call.service_tier, ServiceTier::Priority);

        value["input_tokens"] = json!(100);
        assert_eq!(
            problems(value),
            ["input_tokens: give token counts either natively or in usage, not both"]
        );
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let value = json!({
            "occurred_at": "2026-11-23T11:00:00Z", "provider": 3, "input_tokens": -5,
            "output_tokens": 10, "reasoning_tokens": 11, "status": "maybe", "service_tier": "turbo",
            "cost": 1
        });
        assert_eq!(
            problems(value),
            [
                "input_tokens: must not be negative (got -5)",
                "service_tier: unknown ServiceTier \"turbo\"; expected one of: standard, batch, priority, flex",
                "status: unknown CallStatus \"maybe\"; expected one of: ok, error",
                "provider: expected a string, got a number",
                "model: is required",
                "occurred_at: is 3600 s in the future, more than the allowed clock skew",
                "reasoning_tokens: 11 is more than output_tokens 10 (output includes reasoning)",
                "cost: is not a known field",
            ]
        );
    }

    #[test]
    fn cached_tokens_must_fit_in_input() {
        let mut value = minimal();
        value["cache_read_tokens"] = json!(101);
        assert_eq!(
            problems(value.clone()),
            ["cache_read_tokens: 101 is more than input_tokens 100 (input includes cached tokens)"]
        );
        value["cache_read_tokens"] = json!(60);
        value["cache_write_tokens"] = json!(41);
        assert_eq!(
            problems(value),
            ["cache_write_tokens: cache_read_tokens 60 + cache_write_tokens 41 is more than input_tokens 100 (input includes both)"]
        );
    }

    #[test]
    fn another_team_or_tenant_is_forbidden() {
        let mut value = minimal();
        value["team"] = json!("search");
        value["tenant"] = json!("globex");
        let errors = read(value).unwrap_err();
        assert!(errors.iter().all(|e| e.forbidden), "{errors:?}");
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn an_error_type_implies_error_status() {
        let mut value = minimal();
        value["error_type"] = json!("rate_limit");
        assert_eq!(read(value).unwrap().status, CallStatus::Error);
    }
}
