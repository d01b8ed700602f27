//! An ingest server in the test process with its own topics (a unique prefix), and a reader
//! of what reached Kafka.
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::topics::Topic;
use tally_contract::{decode, AvroRecord};
use tally_ingest::auth::hash_key;
use tally_ingest::{ApiKeyConfig, IngestConfig, IngestError, Server};
use tally_tests::{delete_topics, kafka_config, require_kafka, unique_name};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PAYMENTS_KEY: &str = "test-key-payments";
pub const ANY_TEAM_KEY: &str = "test-key-any-team";
pub const SLOW_KEY: &str = "test-key-slow";
pub const GITHUB_SECRET: &str = "gh-webhook-secret";

fn key(name: &str, key: &str, team: Option<&str>, any_team: bool, rate: u32) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.into(),
        sha256: hash_key(key),
        tenant: "acme".into(),
        team: team.map(String::from),
        any_team,
        rate_limit_per_sec: rate,
        github_webhook_secret: (name == "payments").then(|| GITHUB_SECRET.to_string()),
    }
}

/// A running ingest server.
pub struct Harness {
    pub url: String,
    /// OTLP/gRPC's endpoint (`http://127.0.0.1:PORT`).
    pub grpc_url: String,
    pub kafka: KafkaConfig,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), IngestError>>>,
    owns_topics: bool,
}

impl Harness {
    /// Starts against the test broker with fresh topics.
    pub async fn start() -> Harness {
        require_kafka();
        let kafka = KafkaConfig {
            topic_prefix: format!("{}.", unique_name("ingest")),
            ..kafka_config()
        };
        create_topics(
            &kafka,
            TopicLayout {
                partitions: 2,
                replication_factor: 1,
            },
        )
        .await
        .expect("topics");
        Harness::start_with(kafka, |_| {}, true).await
    }

    /// Starts with the given Kafka settings and configuration changes.
    pub async fn start_with(
        kafka: KafkaConfig,
        change: impl FnOnce(&mut IngestConfig),
        owns_topics: bool,
    ) -> Harness {
        let mut config = IngestConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            otlp_grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
            api_keys: vec![
                key("payments", PAYMENTS_KEY, Some("payments"), false, 100_000),
                key("any-team", ANY_TEAM_KEY, None, true, 100_000),
                key("slow", SLOW_KEY, Some("payments"), false, 5),
            ],
            kafka: kafka.clone(),
            ..IngestConfig::default()
        };
        change(&mut config);
        let server = Server::bind(config).await.expect("the ingest server binds");
        let url = format!("http://{}", server.local_addr());
        let grpc_url = format!(
            "http://{}",
            server.grpc_local_addr().expect("the OTLP/gRPC listener")
        );
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Harness {
            url,
            grpc_url,
            kafka,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
            owns_topics,
        }
    }

    /// POSTs a body with a bearer key (if any) and content type.
    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("the server answers")
    }

    /// POSTs JSON with the payments key.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_json_as(path, body, PAYMENTS_KEY).await
    }

    /// POSTs JSON with `key`.
    pub async fn post_json_as(
        &self,
        path: &str,
        body: &serde_json::Value,
        key: &str,
    ) -> (u16, serde_json::Value) {
        let response = self
            .post(path, Some(key), "application/json", body.to_string())
            .await;
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Reads exactly `count` records of a topic, then checks that no more arrive for a while.
    pub async fn read<T: AvroRecord>(&self, topic: Topic, count: usize) -> Vec<(String, T)> {
        let consumer: StreamConsumer = self
            .kafka
            .client_config()
            .set("group.id", unique_name("ingest-reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&self.kafka.topic(topic)]).unwrap();
        let mut out = Vec::new();
        while out.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {count} records arrived on {topic:?}", out.len())
                })
                .unwrap();
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            out.push((key, decode::<T>(message.payload().unwrap()).unwrap()));
        }
        if let Ok(extra) = tokio::time::timeout(Duration::from_millis(1500), consumer.recv()).await
        {
            let extra = extra.unwrap();
            panic!(
                "more than {count} records on {topic:?}: offset {} too",
                extra.offset()
            );
        }
        out
    }

    /// The same records, by event id.
    pub async fn read_by_id<T: AvroRecord>(
        &self,
        topic: Topic,
        count: usize,
        id: impl Fn(&T) -> String,
    ) -> BTreeMap<String, T> {
        self.read::<T>(topic, count)
            .await
            .into_iter()
            .map(|(_, r)| (id(&r), r))
            .collect()
    }

    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the server gracefully and checks it ended without error.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().expect("the server stops cleanly");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.owns_topics {
            delete_topics(Topic::ALL.iter().map(|t| self.kafka.topic(*t)).collect());
        }
    }
}
