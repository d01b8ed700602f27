//! 401 for missing or unknown keys, 403 for another team or tenant, 429 over the rate limit.
use serde_json::json;

use crate::harness::{Harness, ANY_TEAM_KEY, PAYMENTS_KEY, SLOW_KEY};

fn call(id: &str, team: Option<&str>) -> serde_json::Value {
    let mut call = json!({"event_id": id, "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai",
                          "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1});
    if let Some(team) = team {
        call["team"] = json!(team);
    }
    call
}

#[tokio::test]
async fn keys_decide_who_may_send_what() {
    let ingest = Harness::start().await;
    let body = json!([call("a", None)]).to_string();

    for key in [None, Some("not-a-key")] {
        let response = ingest
            .post("/v1/llm-calls", key, "application/json", body.clone())
            .await;
        assert_eq!(response.status().as_u16(), 401);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            answer,
            json!({"error": "missing or unknown API key"}),
            "no hint of which keys exist"
        );
    }

    let other_team = json!([call("b", Some("payments")), call("c", Some("search"))]).to_string();
    let response = ingest
        .post(
            "/v1/llm-calls",
            Some(PAYMENTS_KEY),
            "application/json",
            other_team.clone(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 403);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        answer["forbidden"],
        json!([{"index": 1, "field": "team", "reason": "this API key may not send events for team \"search\""}])
    );
    let response = ingest
        .post(
            "/v1/llm-calls",
            Some(ANY_TEAM_KEY),
            "application/json",
            other_team,
        )
        .await;
    assert_eq!(response.status().as_u16(), 202, "a key with any_team may");

    // 5 events/s: the first request of 6 is admitted (a burst may overdraw), the next waits.
    let six: Vec<_> = (0..6).map(|i| call(&format!("slow-{i}"), None)).collect();
    let response = ingest
        .post(
            "/v1/llm-calls",
            Some(SLOW_KEY),
            "application/json",
            json!(six).to_string(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 202);
    let response = ingest
        .post("/v1/llm-calls", Some(SLOW_KEY), "application/json", body)
        .await;
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    ingest.stop().await;
}
