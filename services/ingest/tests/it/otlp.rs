//! OTLP with a real OpenTelemetry client: the Python SDK and its exporters — OTLP/HTTP
//! (`POST /v1/traces`, protobuf and JSON) and OTLP/gRPC (plain and gzip) — from the venv
//! scripts/otel-venv.sh makes.
use tally_contract::records::{CallStatus, LlmCall};
use tally_contract::topics::Topic;
use tally_ingest::fingerprint;

use crate::harness::{Harness, PAYMENTS_KEY};

/// The SDK's export with `protocol` and `key`: whether it succeeded, and what it printed.
async fn try_emit(ingest: &Harness, protocol: &str, key: &str, run_id: &str) -> (bool, String) {
    let endpoint = if protocol.starts_with("grpc") {
        ingest.grpc_url.clone()
    } else {
        format!("{}/v1/traces", ingest.url)
    };
    let (protocol, key, run_id) = (protocol.to_string(), key.to_string(), run_id.to_string());
    tokio::task::spawn_blocking(move || {
        tally_tests::try_emit_genai_spans(&endpoint, &protocol, &key, &run_id)
    })
    .await
    .unwrap()
}

/// The runs of the four exports, each named after its protocol.
const RUNS: [(&str, &str); 4] = [
    ("protobuf", "run-proto"),
    ("json", "run-json"),
    ("grpc", "run-grpc"),
    ("grpc-gzip", "run-grpc-gzip"),
];

#[tokio::test]
async fn the_opentelemetry_sdk_exports_genai_spans_over_http_and_grpc() {
    let ingest = Harness::start().await;
    for (protocol, run) in RUNS {
        let (exported, output) = try_emit(&ingest, protocol, PAYMENTS_KEY, run).await;
        assert!(exported, "{protocol}: {output}");
    }

    let calls: Vec<LlmCall> = ingest
        .read::<LlmCall>(Topic::LlmCalls, 16)
        .await
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(calls.len(), 16);
    for (_, run) in RUNS {
        let mut chats: Vec<&LlmCall> = calls
            .iter()
            .filter(|c| c.session_id.as_deref() == Some(run) && c.provider == "openai")
            .collect();
        chats.sort_by_key(|c| c.input_tokens);
        assert_eq!(chats.len(), 3, "{run}");
        for (i, call) in chats.iter().enumerate() {
            let i = i as i64;
            assert_eq!(
                (
                    call.input_tokens,
                    call.output_tokens,
                    call.cache_read_tokens,
                    call.cache_write_tokens,
                    call.reasoning_tokens
                ),
                (1000 + i, 50 + i, 600, 100, 20),
                "{run}"
            );
            assert_eq!(
                (call.model.as_str(), call.response_model.as_deref()),
                ("gpt-4o", Some("gpt-4o-2024-08-06"))
            );
            assert_eq!(
                (call.tenant.as_str(), call.team.as_str()),
                ("acme", "payments")
            );
            assert_eq!(call.service.as_deref(), Some("support-bot"));
            assert_eq!(call.environment.as_deref(), Some("production"));
            assert_eq!(call.region.as_deref(), Some("us-east-1"));
            assert_eq!(call.user.as_deref(), Some("u-1"));
            assert_eq!(call.agent.as_deref(), Some("triage"));
            assert_eq!(call.finish_reason.as_deref(), Some("stop"));
            assert_eq!(call.status, CallStatus::Ok);
            assert!(
                call.event_id.starts_with("otel-")
                    && call.trace_id.as_ref().is_some_and(|t| t.len() == 32)
            );
            let prompt = r#"[{"role":"user","content":"secret prompt text"}]"#;
            assert_eq!(call.prompt_fingerprint, Some(fingerprint::of_text(prompt)));
        }
        let legacy = calls
            .iter()
            .find(|c| c.session_id.as_deref() == Some(run) && c.provider == "anthropic")
            .unwrap_or_else(|| panic!("{run}: the deprecated-names span"));
        assert_eq!((legacy.input_tokens, legacy.output_tokens), (70, 7));
        assert_eq!(
            (legacy.status, legacy.error_type.as_deref()),
            (CallStatus::Error, Some("timeout"))
        );
    }
    let metrics = ingest.metrics().await;
    assert!(
        metrics.contains("tally_ingest_spans_skipped_total 4\n"),
        "{metrics}"
    );
    for endpoint in ["traces", "traces_grpc"] {
        let requests =
            format!("tally_ingest_requests_total{{endpoint=\"{endpoint}\",status=\"200\"}} 2\n");
        assert!(metrics.contains(&requests), "{metrics}");
    }
    ingest.stop().await;
}

#[tokio::test]
async fn an_unknown_key_over_grpc_is_unauthenticated_and_nothing_is_produced() {
    let ingest = Harness::start().await;
    let (exported, output) = try_emit(&ingest, "grpc", "not-a-key", "run-unknown-key").await;
    assert!(!exported, "{output}");
    assert!(output.contains("UNAUTHENTICATED"), "{output}");
    let metrics = ingest.metrics().await;
    assert!(
        metrics
            .contains("tally_ingest_requests_total{endpoint=\"traces_grpc\",status=\"401\"} 1\n"),
        "{metrics}"
    );
    // A valid export after it is the only thing on the topic.
    let (exported, output) = try_emit(&ingest, "grpc", PAYMENTS_KEY, "run-after").await;
    assert!(exported, "{output}");
    let calls = ingest.read::<LlmCall>(Topic::LlmCalls, 4).await;
    assert!(
        calls
            .iter()
            .all(|(_, c)| c.session_id.as_deref() == Some("run-after")),
        "{calls:?}"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn rejected_spans_are_reported_as_partial_success() {
    let ingest = Harness::start().await;
    let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "startTimeUnixNano": "1795428000000000000",
         "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "5"}}]}]}]}]});
    let response = ingest
        .post(
            "/v1/traces",
            Some(PAYMENTS_KEY),
            "application/json",
            body.to_string(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1");
    assert_eq!(
        answer["partialSuccess"]["errorMessage"],
        "GenAI span 0: provider: is required; model: is required"
    );
    let response = ingest
        .post("/v1/traces", Some(PAYMENTS_KEY), "text/plain", "x")
        .await;
    assert_eq!(response.status().as_u16(), 415);
    ingest.stop().await;
}
