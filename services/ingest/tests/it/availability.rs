//! Kafka stopped under a running ingest service: 503 with Retry-After and nothing accepted;
//! once Kafka is back, the retried requests are accepted and nothing is doubled. This test
//! runs a broker of its own (other ports, other data folder), so it can stop it.
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::LlmCall;
use tally_contract::topics::Topic;
use tally_tests::unique_name;

use crate::harness::Harness;

const PORT: u16 = 19092;
/// The broker of the test whose client hangs up: its own, so both tests can run at once.
const HANG_UP_PORT: u16 = 19096;

fn own_broker(command: &str, data: &std::path::Path) {
    own_broker_on(PORT, command, data)
}

fn own_broker_on(port: u16, command: &str, data: &std::path::Path) {
    let ports = [
        ("TALLY_KAFKA_PORT", port.to_string()),
        ("TALLY_KAFKA_CONTROLLER_PORT", (port + 1).to_string()),
    ];
    tally_tests::services_script(command, data, "TALLY_KAFKA_BROKERS", &ports);
}

struct StopOnDrop(PathBuf, u16);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        own_broker_on(self.1, "stop-kafka", &self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn kafka_down_means_503_and_the_retry_after_recovery_is_counted_once() {
    let data = std::env::temp_dir().join(unique_name("tally-own-kafka"));
    own_broker("start-kafka", &data);
    let _guard = StopOnDrop(data.clone(), PORT);
    let kafka = KafkaConfig {
        brokers: format!("127.0.0.1:{PORT}"),
        ..KafkaConfig::default()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 2,
            replication_factor: 1,
        },
    )
    .await
    .unwrap();
    let ingest =
        Harness::start_with(kafka, |config| config.produce_timeout_ms = 3_000, false).await;

    let first = json!([{"event_id": "before", "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}]);
    assert_eq!(ingest.post_json("/v1/llm-calls", &first).await.0, 202);
    let ready = ingest
        .http
        .get(format!("{}/readyz", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    own_broker("stop-kafka", &data);
    let during: Vec<_> = (0..3)
        .map(|i| json!({"event_id": format!("during-{i}"), "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}))
        .collect();
    let response = ingest
        .post(
            "/v1/llm-calls",
            Some(crate::harness::PAYMENTS_KEY),
            "application/json",
            json!(during).to_string(),
        )
        .await;
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("Kafka did not acknowledge"),
        "{answer}"
    );
    let ready = ingest
        .http
        .get(format!("{}/readyz", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    own_broker("start-kafka", &data);
    let mut accepted = None;
    for _ in 0..30 {
        let (status, answer) = ingest.post_json("/v1/llm-calls", &json!(during)).await;
        if status == 202 {
            accepted = Some(answer);
            break;
        }
        assert_eq!(status, 503, "{answer}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        accepted,
        Some(json!({"accepted": 3, "duplicates": 0, "rejected": []}))
    );
    // A second retry (say, the client did not see the 202) is a duplicate, not a new call.
    assert_eq!(
        ingest.post_json("/v1/llm-calls", &json!(during)).await,
        (202, json!({"accepted": 0, "duplicates": 3, "rejected": []}))
    );

    let ids: Vec<String> = ingest
        .read::<LlmCall>(Topic::LlmCalls, 4)
        .await
        .into_iter()
        .map(|(_, c)| c.event_id)
        .collect();
    let mut ids = ids;
    ids.sort();
    assert_eq!(ids, ["before", "during-0", "during-1", "during-2"]);
    ingest.stop().await;
}

/// A client that hangs up while ingest waits for Kafka does not make ingest forget the
/// records: Kafka takes them once it is back, they are counted as accepted, and the client's
/// retry is answered as duplicates (not produced a second time).
#[tokio::test]
async fn records_taken_after_the_client_hung_up_are_counted_and_remembered() {
    let data = std::env::temp_dir().join(unique_name("tally-own-kafka"));
    own_broker_on(HANG_UP_PORT, "start-kafka", &data);
    let _guard = StopOnDrop(data.clone(), HANG_UP_PORT);
    let kafka = KafkaConfig {
        brokers: format!("127.0.0.1:{HANG_UP_PORT}"),
        ..KafkaConfig::default()
    };
    let layout = TopicLayout {
        partitions: 2,
        replication_factor: 1,
    };
    create_topics(&kafka, layout).await.unwrap();
    let ingest = Harness::start_with(
        kafka,
        |config| {
            config.produce_timeout_ms = 120_000;
            config.http.request_timeout_ms = 125_000;
        },
        false,
    )
    .await;
    let calls: Vec<_> = (0..3)
        .map(|i| json!({"event_id": format!("hung-up-{i}"), "occurred_at": "2026-11-23T10:00:00Z", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}))
        .collect();
    let accepted = |metrics: String| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("tally_ingest_events_accepted_total{kind=\"llm_call\"} "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };

    own_broker_on(HANG_UP_PORT, "stop-kafka", &data);
    let impatient = ingest
        .http
        .post(format!("{}/v1/llm-calls", ingest.url))
        .bearer_auth(crate::harness::PAYMENTS_KEY)
        .header("content-type", "application/json")
        .body(json!(calls).to_string())
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(impatient.unwrap_err().is_timeout(), "the client gave up");
    assert_eq!(accepted(ingest.metrics().await), 0);

    own_broker_on(HANG_UP_PORT, "start-kafka", &data);
    let mut counted = 0;
    for _ in 0..90 {
        counted = accepted(ingest.metrics().await);
        if counted == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        counted, 3,
        "the records Kafka took after the client left are counted"
    );
    assert_eq!(
        ingest.post_json("/v1/llm-calls", &json!(calls)).await,
        (202, json!({"accepted": 0, "duplicates": 3, "rejected": []}))
    );
    let mut ids: Vec<String> = ingest
        .read::<LlmCall>(Topic::LlmCalls, 3)
        .await
        .into_iter()
        .map(|(_, c)| c.event_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["hung-up-0", "hung-up-1", "hung-up-2"]);
    ingest.stop().await;
}
