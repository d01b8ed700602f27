//! `POST /v1/llm-calls`: native records and provider usage shapes, partial batches,
//! duplicates, malformed and oversized bodies.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tally_contract::records::{CallStatus, LlmCall, ServiceTier};
use tally_contract::topics::Topic;
use tally_ingest::fingerprint;

use crate::harness::{Harness, ANY_TEAM_KEY, PAYMENTS_KEY};

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// What every call of these tests shares; each test changes what it exercises.
fn expected(event_id: &str) -> LlmCall {
    LlmCall::new(
        event_id,
        1_795_428_000_000_000,
        "acme",
        "payments",
        "openai",
        "gpt-4o",
    )
}

#[tokio::test]
async fn native_records_and_every_usage_shape_reach_kafka_field_by_field() {
    let ingest = Harness::start().await;
    let before = now_micros();
    let body = json!([
        {"event_id": "native", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o",
         "user": "u-1", "service": "checkout", "environment": "production", "workflow": "refunds",
         "session_id": "s-1", "agent": "planner", "step": 3, "parent_id": "p-1", "trace_id": "t-1", "span_id": "sp-1",
         "response_model": "gpt-4o-2024-08-06", "operation": "chat", "region": "us-east-1",
         "input_tokens": 1000, "output_tokens": 300, "cache_read_tokens": 800, "cache_write_tokens": 100,
         "reasoning_tokens": 200, "service_tier": "batch", "latency_ms": 1234, "status": "error",
         "error_type": "timeout", "finish_reason": "length", "tool_name": "search", "tool_args": {"q": "refund"},
         "ticket_id": "PAY-1", "reported_cost_micros": 4200, "tags": {"interactive": "false"},
         "messages": [{"role": "user", "content": "never stored"}], "completion": "never stored either"},
        // OpenAI Chat: prompt_tokens already include the 800 cached.
        {"event_id": "openai-chat", "occurred_at": 1_795_428_000_000i64, "provider": "openai", "model": "gpt-4o",
         "usage": {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
                   "prompt_tokens_details": {"cached_tokens": 800}, "completion_tokens_details": {"reasoning_tokens": 200}}},
        // OpenAI Responses: same convention, other names.
        {"event_id": "openai-responses", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o",
         "usage": {"input_tokens": 1000, "output_tokens": 300,
                   "input_tokens_details": {"cached_tokens": 800}, "output_tokens_details": {"reasoning_tokens": 200}}},
        // Anthropic: input_tokens EXCLUDE cache reads (800) and writes (100): 100 + 800 + 100 = 1000.
        {"event_id": "anthropic", "occurred_at": "2026-11-23T10:00:00Z", "provider": "anthropic", "model": "claude-sonnet-4-5",
         "usage": {"input_tokens": 100, "output_tokens": 300, "cache_read_input_tokens": 800,
                   "cache_creation_input_tokens": 100, "service_tier": "priority"}},
        // Gemini: candidates EXCLUDE thoughts: 100 + 200 = 300.
        {"event_id": "gemini", "occurred_at": "2026-11-23T10:00:00Z", "provider": "gcp.gemini", "model": "gemini-2.5-pro",
         "usage": {"promptTokenCount": 1000, "candidatesTokenCount": 100, "thoughtsTokenCount": 200,
                   "cachedContentTokenCount": 800}}
    ]);
    let (status, answer) = ingest.post_json("/v1/llm-calls", &body).await;
    assert_eq!(
        (status, answer.clone()),
        (202, json!({"accepted": 5, "duplicates": 0, "rejected": []}))
    );

    let calls = ingest.read::<LlmCall>(Topic::LlmCalls, 5).await;
    let after = now_micros();
    let mut by_id: BTreeMap<String, (String, LlmCall)> = calls
        .into_iter()
        .map(|(key, call)| (call.event_id.clone(), (key, call)))
        .collect();
    for (_, call) in by_id.values() {
        assert!(
            (before..=after).contains(&call.received_at),
            "received_at is the server's time"
        );
    }

    let (key, native) = by_id.remove("native").unwrap();
    assert_eq!(key, "acme/payments/s-1");
    let mut want = expected("native");
    want.received_at = native.received_at;
    want.user = Some("u-1".into());
    want.service = Some("checkout".into());
    want.environment = Some("production".into());
    want.workflow = Some("refunds".into());
    want.session_id = Some("s-1".into());
    want.agent = Some("planner".into());
    want.step = Some(3);
    want.parent_id = Some("p-1".into());
    want.trace_id = Some("t-1".into());
    want.span_id = Some("sp-1".into());
    want.response_model = Some("gpt-4o-2024-08-06".into());
    want.region = Some("us-east-1".into());
    (
        want.input_tokens,
        want.output_tokens,
        want.cache_read_tokens,
        want.cache_write_tokens,
        want.reasoning_tokens,
    ) = (1000, 300, 800, 100, 200);
    want.service_tier = ServiceTier::Batch;
    want.latency_ms = Some(1234);
    want.status = CallStatus::Error;
    want.error_type = Some("timeout".into());
    want.finish_reason = Some("length".into());
    want.tool_name = Some("search".into());
    want.tool_args_fingerprint = Some(fingerprint::of_value(&json!({"q": "refund"})));
    want.prompt_fingerprint = Some(fingerprint::of_value(
        &json!([{"role": "user", "content": "never stored"}]),
    ));
    want.output_fingerprint = Some(fingerprint::of_value(&json!("never stored either")));
    want.ticket_id = Some("PAY-1".into());
    want.reported_cost_micros = Some(4200);
    want.tags = [("interactive".to_string(), "false".to_string())].into();
    assert_eq!(native, want);

    for (id, provider, model, cache_write, reasoning, tier) in [
        (
            "openai-chat",
            "openai",
            "gpt-4o",
            0,
            200,
            ServiceTier::Standard,
        ),
        (
            "openai-responses",
            "openai",
            "gpt-4o",
            0,
            200,
            ServiceTier::Standard,
        ),
        (
            "anthropic",
            "anthropic",
            "claude-sonnet-4-5",
            100,
            0,
            ServiceTier::Priority,
        ),
        (
            "gemini",
            "gcp.gemini",
            "gemini-2.5-pro",
            0,
            200,
            ServiceTier::Standard,
        ),
    ] {
        let (key, call) = by_id.remove(id).unwrap();
        assert_eq!(key, "acme/payments", "{id}: no session, so tenant/team");
        let mut want = expected(id);
        want.received_at = call.received_at;
        want.provider = provider.into();
        want.model = model.into();
        (
            want.input_tokens,
            want.output_tokens,
            want.cache_read_tokens,
            want.cache_write_tokens,
            want.reasoning_tokens,
        ) = (1000, 300, 800, cache_write, reasoning);
        want.service_tier = tier;
        assert_eq!(call, want, "{id}");
    }
    ingest.stop().await;
}

#[tokio::test]
async fn a_partly_bad_batch_accepts_the_good_records_and_names_the_bad_ones() {
    let ingest = Harness::start().await;
    let ndjson = [
        json!({"event_id": "good-1", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1}),
        json!({"event_id": "bad-1", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1, "cache_read_tokens": 11}),
        json!({"event_id": "good-2", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 20, "output_tokens": 2}),
        json!({"event_id": "bad-2", "occurred_at": "2126-01-01T00:00:00Z", "model": "gpt-4o", "input_tokens": "ten", "output_tokens": 1, "status": "fine"}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    let response = ingest
        .post(
            "/v1/llm-calls",
            Some(PAYMENTS_KEY),
            "application/x-ndjson",
            ndjson,
        )
        .await;
    assert_eq!(response.status().as_u16(), 207);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 2);
    assert_eq!(
        answer["rejected"][0],
        json!({"index": 1, "errors": [{"field": "cache_read_tokens", "reason": "11 is more than input_tokens 10 (input includes cached tokens)"}]})
    );
    assert_eq!(answer["rejected"][1]["index"], 3);
    let errors: Vec<(String, String)> = answer["rejected"][1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        errors[..3],
        [
            (
                "input_tokens".to_string(),
                "expected an integer, got a string".to_string()
            ),
            (
                "status".to_string(),
                "unknown CallStatus \"fine\"; expected one of: ok, error".to_string()
            ),
            ("provider".to_string(), "is required".to_string()),
        ]
    );
    assert_eq!(errors[3].0, "occurred_at");
    assert!(
        errors[3]
            .1
            .ends_with("s in the future, more than the allowed clock skew"),
        "{}",
        errors[3].1
    );
    assert_eq!(errors.len(), 4);
    let ids: Vec<String> = ingest
        .read::<LlmCall>(Topic::LlmCalls, 2)
        .await
        .into_iter()
        .map(|(_, c)| c.event_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.contains(&"good-1".to_string()) && ids.contains(&"good-2".to_string()),
        "{ids:?}"
    );

    let all_bad = json!([{"occurred_at": "2026-11-23T10:00:00Z"}]);
    let (status, answer) = ingest.post_json("/v1/llm-calls", &all_bad).await;
    assert_eq!(status, 422, "{answer}");
    ingest.stop().await;
}

#[tokio::test]
async fn retried_requests_and_records_without_ids_are_counted_once() {
    let ingest = Harness::start().await;
    let body = json!([
        {"event_id": "e-1", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1},
        {"occurred_at": "2026-11-23T10:00:01Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 2, "output_tokens": 1, "prompt": "hi"},
        {"event_id": "e-1", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}
    ]);
    assert_eq!(
        ingest.post_json("/v1/llm-calls", &body).await,
        (202, json!({"accepted": 2, "duplicates": 1, "rejected": []}))
    );
    assert_eq!(
        ingest.post_json("/v1/llm-calls", &body).await,
        (202, json!({"accepted": 0, "duplicates": 3, "rejected": []}))
    );
    let calls = ingest.read::<LlmCall>(Topic::LlmCalls, 2).await;
    let derived = calls.iter().find(|(_, c)| c.event_id != "e-1").unwrap();
    assert!(
        derived.1.event_id.starts_with("derived-"),
        "{}",
        derived.1.event_id
    );
    assert_eq!(
        derived.1.prompt_fingerprint.as_deref(),
        Some(fingerprint::of_text("hi").as_str())
    );

    let metrics = ingest.metrics().await;
    assert!(
        metrics.contains("tally_ingest_events_duplicate_total 4\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_ingest_events_accepted_total{kind=\"llm_call\"} 2\n"),
        "{metrics}"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn identical_records_of_one_request_are_distinct_calls_and_keep_their_ids_on_retry() {
    // An embeddings batch: three equal inputs in one millisecond, no event ids, no session.
    let ingest = Harness::start().await;
    let one = json!({"occurred_at": "2026-11-23T10:00:00Z", "provider": "openai",
                     "model": "text-embedding-3-small", "operation": "embeddings",
                     "input_tokens": 8, "output_tokens": 0});
    let body = json!([one, one, one]);
    assert_eq!(
        ingest.post_json("/v1/llm-calls", &body).await,
        (202, json!({"accepted": 3, "duplicates": 0, "rejected": []}))
    );
    // The retry of the whole request: the same three ids, all duplicates.
    assert_eq!(
        ingest.post_json("/v1/llm-calls", &body).await,
        (202, json!({"accepted": 0, "duplicates": 3, "rejected": []}))
    );
    let mut ids: Vec<String> = ingest
        .read::<LlmCall>(Topic::LlmCalls, 3)
        .await
        .into_iter()
        .map(|(_, c)| c.event_id)
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], format!("{}-2", ids[0]));
    assert_eq!(ids[2], format!("{}-3", ids[0]));
    ingest.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_with_reasons() {
    let ingest = Harness::start_with(
        tally_tests::kafka_config(),
        |config| config.max_body_bytes = 1024,
        false,
    )
    .await;
    let response = ingest
        .post(
            "/v1/llm-calls",
            Some(PAYMENTS_KEY),
            "application/json",
            "{\"a\":1}\n{\"b\":}",
        )
        .await;
    assert_eq!(response.status().as_u16(), 400);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"error": "malformed JSON at line 2, column 6: expected value", "line": 2, "column": 6})
    );

    let big = format!("[{}]", vec!["{}"; 600].join(","));
    let response = ingest
        .post("/v1/llm-calls", Some(PAYMENTS_KEY), "application/json", big)
        .await;
    assert_eq!(response.status().as_u16(), 413);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        answer["error"],
        "the body is larger than max_body_bytes (1024 bytes, after decompression)"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn a_request_kafka_takes_in_part_is_answered_record_by_record() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    // The topic refuses records over 2,500 bytes; one record of the request is larger (within
    // ingest's own limits): the broker takes the others.
    let ingest = Harness::start_with(
        {
            let kafka = tally_contract::kafka::KafkaConfig {
                topic_prefix: format!("{}.", tally_tests::unique_name("partial")),
                ..tally_tests::kafka_config()
            };
            // The limit is set when the topic is created: a config altered afterwards reaches
            // the broker's log a moment later, and a record sent in that moment is taken.
            let admin: AdminClient<DefaultClientContext> = kafka.client_config().create().unwrap();
            let topic = kafka.topic(Topic::LlmCalls);
            let created = admin
                .create_topics(
                    &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))
                        .set("max.message.bytes", "2500")],
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                )
                .await
                .unwrap();
            assert!(created.iter().all(Result::is_ok), "{created:?}");
            tally_contract::kafka::create_topics(
                &kafka,
                tally_contract::kafka::TopicLayout {
                    partitions: 3,
                    replication_factor: 1,
                },
            )
            .await
            .unwrap();
            kafka
        },
        |config| config.producer.linger_ms = 0,
        true,
    )
    .await;
    // Hex of a hash chain: text the producer's compression cannot shrink.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        (0..25)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                format!("{:08x}", seed >> 32)
            })
            .collect::<String>()
    };
    let tags: serde_json::Map<String, serde_json::Value> = (0..60)
        .map(|i| (format!("tag{i}"), json!(noise())))
        .collect();
    let record = |team: &str, tags: serde_json::Value| {
        json!({"event_id": format!("p-{team}"), "occurred_at": "2026-11-23T10:00:00Z", "team": team,
               "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1, "tags": tags})
    };
    let body = json!([
        record("alpha", json!({})),
        record("beta", json!(tags)),
        record("gamma", json!({}))
    ]);
    let (status, answer) = ingest
        .post_json_as("/v1/llm-calls", &body, ANY_TEAM_KEY)
        .await;
    assert_eq!(status, 503, "{answer}");
    let failed: Vec<u64> = answer["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let accepted = answer["accepted"].as_u64().unwrap();
    assert!(failed.contains(&1), "{answer}");
    assert_eq!(accepted as usize + failed.len(), 3, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("retry the whole request"),
        "{answer}"
    );
    // What the answer says was taken is on the topic, and a retry counts it once.
    let on_topic = ingest
        .read::<LlmCall>(Topic::LlmCalls, accepted as usize)
        .await;
    assert_eq!(on_topic.len() as u64, accepted);
    let (status, again) = ingest
        .post_json_as("/v1/llm-calls", &body, ANY_TEAM_KEY)
        .await;
    assert_eq!(status, 503, "{again}");
    // What was taken counts once; of the rest, the broker may now take a record it refused
    // in the first try's batch (it refuses whole batches), never the oversized one.
    assert_eq!(again["duplicates"], accepted, "{again}");
    let failed_again = again["failed"].as_array().unwrap();
    assert!(failed_again.contains(&json!(1)), "{again}");
    assert_eq!(
        again["accepted"].as_u64().unwrap() + failed_again.len() as u64,
        3 - accepted,
        "{again}"
    );
    ingest.stop().await;
}

#[tokio::test]
async fn a_field_above_the_record_limits_is_refused_naming_it() {
    let ingest = Harness::start().await;
    let tags: serde_json::Map<String, serde_json::Value> =
        (0..65).map(|i| (format!("t{i}"), json!("v"))).collect();
    let body = json!([
        {"occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "x".repeat(3_000), "input_tokens": 1, "output_tokens": 1},
        {"occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1, "tags": tags},
        {"occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1,
         "prompt": "p".repeat(100_000)}
    ]);
    let (status, answer) = ingest.post_json("/v1/llm-calls", &body).await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(
        answer["accepted"], 1,
        "the long prompt is only fingerprinted: {answer}"
    );
    assert_eq!(answer["rejected"][0]["errors"][0]["field"], "model");
    assert!(answer["rejected"][0]["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("max_string_bytes"));
    assert_eq!(answer["rejected"][1]["errors"][0]["field"], "tags");
    ingest.stop().await;
}
