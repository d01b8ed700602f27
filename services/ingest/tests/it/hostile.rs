//! Broken and hostile records against the real broker: each gets a clear 4xx naming the
//! field and the reason, and nothing of a refused request reaches Kafka; what is accepted
//! (a string that looks like SQL) reaches Kafka byte for byte.
use serde_json::{json, Value};
use tally_contract::records::LlmCall;
use tally_contract::topics::Topic;

use crate::harness::{Harness, PAYMENTS_KEY};

fn call(id: &str) -> Value {
    json!({"event_id": id, "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai",
           "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5})
}

fn with(id: &str, field: &str, value: Value) -> Value {
    let mut record = call(id);
    record[field] = value;
    record
}

/// The field errors of a 422 answer, as (field, reason).
fn field_errors(answer: &Value) -> Vec<(String, String)> {
    answer["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("no rejected list in {answer}"))
        .iter()
        .flat_map(|r| r["errors"].as_array().unwrap().clone())
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_records_are_refused_naming_the_field() {
    let ingest = Harness::start().await;
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "negative",
            with("neg", "input_tokens", json!(-5)),
            "input_tokens",
            "negative",
        ),
        (
            "overflowing",
            with(
                "big",
                "output_tokens",
                json!(99_999_999_999_999_999_999u128 as f64),
            ),
            "output_tokens",
            "",
        ),
        (
            "above the per-call limit",
            with("huge", "input_tokens", json!(1_000_000_000_001u64)),
            "input_tokens",
            "",
        ),
        (
            "fractional",
            with("frac", "input_tokens", json!(1.5)),
            "input_tokens",
            "",
        ),
        (
            "a string for a number",
            with("str", "input_tokens", json!("ten")),
            "input_tokens",
            "",
        ),
        (
            "far future",
            with("future", "occurred_at", json!("9999-12-31T23:59:59Z")),
            "occurred_at",
            "future",
        ),
        (
            "not a time",
            with("nottime", "occurred_at", json!("yesterday")),
            "occurred_at",
            "",
        ),
        (
            "a huge string",
            with("longmodel", "model", json!("m".repeat(100_000))),
            "model",
            "",
        ),
        (
            "too many tags",
            with(
                "tags",
                "tags",
                Value::Object((0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect()),
            ),
            "tags",
            "",
        ),
    ];
    for (name, record, field, reason) in &cases {
        let (status, answer) = ingest.post_json("/v1/llm-calls", &json!([record])).await;
        assert_eq!(status, 422, "{name}: {answer}");
        let errors = field_errors(&answer);
        assert!(
            errors.iter().any(|(f, r)| f == field && r.contains(reason)),
            "{name}: expected an error on {field} ({reason}), got {errors:?}"
        );
    }
    // Bodies that are not JSON records: 400 with the position.
    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "NaN",
            br#"{"input_tokens": NaN}"#.to_vec(),
            "expected value",
        ),
        (
            "a key twice",
            br#"{"event_id": "dup", "input_tokens": 1, "input_tokens": 2}"#.to_vec(),
            "duplicate key \"input_tokens\"",
        ),
        (
            "invalid UTF-8",
            [b"{\"model\": \"gpt".as_slice(), &[0xff, 0xfe], b"\"}"].concat(),
            "not UTF-8",
        ),
        (
            "nested 100,000 deep",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            "recursion limit exceeded",
        ),
    ];
    for (name, body, reason) in bodies {
        let response = ingest
            .post(
                "/v1/llm-calls",
                Some(PAYMENTS_KEY),
                "application/json",
                body,
            )
            .await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(reason),
            "{name}: {answer}"
        );
        assert!(answer["line"].as_u64().unwrap() >= 1, "{name}: {answer}");
    }
    // None of it reached Kafka; a good call after it does, alone.
    let (status, _) = ingest
        .post_json("/v1/llm-calls", &json!([call("good")]))
        .await;
    assert_eq!(status, 202);
    let on_topic = ingest.read::<LlmCall>(Topic::LlmCalls, 1).await;
    assert_eq!(on_topic[0].1.event_id, "good");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strings_that_look_like_sql_reach_kafka_verbatim() {
    let ingest = Harness::start().await;
    let hostile = [
        "'; DROP TABLE llm_calls; --",
        "\\' OR 1=1 --",
        "back\\slash and \"quotes\"",
        "line\nbreak\r\nand\ttab",
        "nul\u{0}byte",
        "<script>alert(1)</script>",
        "=HYPERLINK(\"http://x\")",
        "ünïcödé ✓ 🚀",
    ];
    let records: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut record = call(&format!("sql-{i}"));
            record["user"] = json!(text);
            record["workflow"] = json!(text);
            record["tags"] = json!({ *text: text });
            record
        })
        .collect();
    let (status, answer) = ingest.post_json("/v1/llm-calls", &json!(records)).await;
    assert_eq!(status, 202, "{answer}");
    let on_topic = ingest
        .read_by_id::<LlmCall>(Topic::LlmCalls, hostile.len(), |c| c.event_id.clone())
        .await;
    for (i, text) in hostile.iter().enumerate() {
        let call = &on_topic[&format!("sql-{i}")];
        assert_eq!(call.user.as_deref(), Some(*text));
        assert_eq!(call.workflow.as_deref(), Some(*text));
        assert_eq!(call.tags.get(*text).map(String::as_str), Some(*text));
    }
    ingest.stop().await;
}
