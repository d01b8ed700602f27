//! The notifier against the real Kafka broker, delivering to local HTTP receivers that stand
//! in for a webhook, Slack and Alertmanager (and for ones that fail).
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::{Alert, AlertKind, AlertState, DeadLetter, Micros, Severity};
use tally_contract::topics::Topic;
use tally_contract::{decode, encode};
use tally_notify::config::{DestinationConfig, DestinationKind, RetryConfig, Secret};
use tally_notify::{NotifyConfig, Stats};
use tally_tests::{delete_topics, kafka_config, require_kafka, unique_name};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// 2026-11-23T10:00:00.123456Z
const OCCURRED: Micros = 1_795_428_000_123_456;
const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ a recording receiver

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Recording {
    requests: Mutex<Vec<Received>>,
    /// Statuses to answer, in order, before answering `then`.
    script: Mutex<VecDeque<u16>>,
    then: u16,
}

/// A local HTTP server that records every request and answers as scripted.
#[derive(Clone)]
struct Receiver {
    address: SocketAddr,
    recording: Arc<Recording>,
}

impl Receiver {
    /// Answers `script` in order, then `then` forever.
    async fn start(script: &[u16], then: u16) -> Receiver {
        let recording = Arc::new(Recording {
            requests: Mutex::default(),
            script: Mutex::new(script.iter().copied().collect()),
            then,
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(recording.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { address, recording }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn requests(&self) -> Vec<Received> {
        self.recording.requests.lock().unwrap().clone()
    }

    /// Waits until the receiver got `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} requests at {}", self.address), || {
            let requests = self.requests();
            (requests.len() >= n).then_some(requests)
        })
        .await
    }
}

async fn record(
    State(recording): State<Arc<Recording>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    recording.requests.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_string(),
        headers,
        body,
    });
    let status = recording
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(recording.then);
    let text = if status >= 300 {
        "down for maintenance"
    } else {
        ""
    };
    (StatusCode::from_u16(status).unwrap(), text)
}

/// Polls `check` every 50 ms until it returns something, failing after 30 s.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ Kafka and the notifier

/// Topics with a prefix of this test's own, deleted when dropped.
struct Topics {
    kafka: KafkaConfig,
}

impl Topics {
    async fn create(name: &str) -> Topics {
        require_kafka();
        let kafka = KafkaConfig {
            topic_prefix: format!("{}.", unique_name(name)),
            ..kafka_config()
        };
        let layout = TopicLayout {
            partitions: 2,
            replication_factor: 1,
        };
        create_topics(&kafka, layout).await.unwrap();
        Topics { kafka }
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        delete_topics(Topic::ALL.iter().map(|t| self.kafka.topic(*t)).collect());
    }
}

/// Writes records to the alert topic; returns where each landed, as (partition, offset).
async fn produce(kafka: &KafkaConfig, records: &[(&str, Vec<u8>)]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let topic = kafka.topic(Topic::Alerts);
    let mut landed = Vec::new();
    for (key, payload) in records {
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(*key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        landed.push((delivery.partition, delivery.offset));
    }
    landed
}

fn alert(id: &str, state: AlertState, severity: Severity, occurred_at: Micros) -> Alert {
    Alert {
        alert_id: id.into(),
        kind: AlertKind::BudgetThreshold,
        state,
        severity,
        tenant: "acme".into(),
        team: Some("payments".into()),
        subject: "monthly".into(),
        title: "payments reached 80% of budget monthly (2026-11)".into(),
        message: "Spent $40,012.34 of $50,000.00 (80.0%).".into(),
        source_id: Some("budget/acme/payments/monthly".into()),
        amount_nanos: Some(40_012_340_000_000),
        limit_nanos: Some(50_000_000_000_000),
        labels: [("period".to_string(), "2026-11".to_string())].into(),
        occurred_at,
        emitted_at: occurred_at + 1_000_000,
    }
}

fn destination(name: &str, kind: DestinationKind, url: String) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind,
        url: Some(Secret::new(url)),
        url_env: None,
        token_env: None,
        min_severity: Severity::Info,
        kinds: AlertKind::ALL.to_vec(),
        renotify_interval_secs: None,
        hold_secs: None,
    }
}

fn config(kafka: &KafkaConfig, destinations: Vec<DestinationConfig>) -> NotifyConfig {
    NotifyConfig {
        group_id: unique_name("notify-group"),
        // The fixtures are dated November 2026: no age limit.
        max_alert_age_secs: 0,
        retry: RetryConfig {
            max_attempts: 3,
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
            request_timeout_ms: 2_000,
        },
        destinations,
        kafka: kafka.clone(),
        ..NotifyConfig::default()
    }
}

/// The notifier running in the background until `stop`.
struct Running {
    stats: Arc<Stats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tally_notify::NotifyError>>,
}

fn start(config: NotifyConfig) -> Running {
    let stats = Arc::new(Stats::new(&config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tally_notify::run_until(config, stats.clone(), async {
        let _ = stopped.await;
    }));
    Running { stats, stop, task }
}

impl Running {
    async fn stop(self) -> Arc<Stats> {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.stats
    }

    fn counter(
        &self,
        destination: &str,
        read: impl Fn(&tally_notify::stats::DestinationStats) -> u64,
    ) -> u64 {
        read(self.stats.destination(destination).unwrap())
    }
}

/// (committed, end) of the alert topic for `group`, summed over partitions.
fn committed_and_end(kafka: &KafkaConfig, group: &str) -> (i64, i64) {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .create()
        .unwrap();
    let topic = kafka.topic(Topic::Alerts);
    let mut list = TopicPartitionList::new();
    for partition in 0..2 {
        list.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    let committed: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum();
    let end: i64 = (0..2)
        .map(|p| {
            consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    (committed, end)
}

/// Reads `n` dead letters from the dead-letter topic.
async fn dead_letters(kafka: &KafkaConfig, n: usize) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique_name("dead-letter-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&kafka.topic(Topic::DeadLetter)])
        .unwrap();
    let mut letters = Vec::new();
    while letters.len() < n {
        let message = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("a dead letter within 30 s")
            .unwrap();
        letters.push(decode::<DeadLetter>(message.payload().unwrap()).unwrap());
    }
    letters
}

fn parse_time(text: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(text.as_str().unwrap(), &Rfc3339).unwrap()
}

// ------------------------------------------------------------------ the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_webhook_slack_and_alertmanager_deduplicated_and_resolved() {
    let topics = Topics::create("notify-all").await;
    let kafka = &topics.kafka;
    let receiver = Receiver::start(&[], 200).await;
    let token_env = unique_name("TALLY_TEST_TOKEN").replace('-', "_");
    std::env::set_var(&token_env, "t0ken-for-the-webhook");

    let firing = alert("budget/a", AlertState::Firing, Severity::Warning, OCCURRED);
    let mut loop_alert = alert("loop/b", AlertState::Firing, Severity::Critical, OCCURRED);
    loop_alert.kind = AlertKind::LoopSignal;
    loop_alert.team = None;
    loop_alert.labels = [("signal.type".to_string(), "retry_storm".to_string())].into();
    let mut resolved = firing.clone();
    resolved.state = AlertState::Resolved;
    resolved.occurred_at = OCCURRED + 1_800_000_000; // half an hour later
    resolved.message = "Back under 80%.".into();
    produce(
        kafka,
        &[
            ("acme/payments", encode(&firing).unwrap()),
            ("acme/payments", encode(&firing).unwrap()), // a duplicate: suppressed
            ("acme/-", encode(&loop_alert).unwrap()),
            ("acme/payments", encode(&resolved).unwrap()),
        ],
    )
    .await;

    let mut webhook = destination(
        "ops",
        DestinationKind::Webhook,
        receiver.url("/hook/s3cret"),
    );
    webhook.token_env = Some(token_env);
    let slack = destination(
        "chat",
        DestinationKind::Slack,
        receiver.url("/slack/T0/B0/s3cret"),
    );
    let alertmanager = destination("pager", DestinationKind::Alertmanager, receiver.url("/am/"));
    let config = config(kafka, vec![webhook, slack, alertmanager]);
    let group = config.group_id.clone();
    let before = OffsetDateTime::now_utc();
    let running = start(config);
    let requests = receiver.wait_for(9).await;
    let after = OffsetDateTime::now_utc();
    eventually("the duplicate suppressed everywhere", || {
        ["ops", "chat", "pager"]
            .iter()
            .all(|d| running.counter(d, |s| s.suppressed.load(Ordering::Relaxed)) == 1)
            .then_some(())
    })
    .await;
    let stats = running.stop().await;

    let at = |path: &str| -> Vec<Received> {
        requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    };
    let by_id = |received: &[Received], id: &str, field: fn(&Value) -> &Value| -> Vec<Value> {
        received
            .iter()
            .filter(|r| field(&r.body) == id)
            .map(|r| r.body.clone())
            .collect()
    };

    // The webhook: the record as JSON, each alert once, A's firing before its resolve.
    let hooks = at("/hook/s3cret");
    assert_eq!(hooks.len(), 3, "{hooks:#?}");
    for hook in &hooks {
        assert_eq!(
            hook.headers["authorization"],
            "Bearer t0ken-for-the-webhook"
        );
        assert_eq!(hook.headers["content-type"], "application/json");
    }
    let webhook_a = by_id(&hooks, "budget/a", |b| &b["alert_id"]);
    assert_eq!(
        webhook_a[0],
        json!({
            "alert_id": "budget/a",
            "kind": "budget_threshold",
            "state": "firing",
            "severity": "warning",
            "tenant": "acme",
            "team": "payments",
            "subject": "monthly",
            "title": "payments reached 80% of budget monthly (2026-11)",
            "message": "Spent $40,012.34 of $50,000.00 (80.0%).",
            "source_id": "budget/acme/payments/monthly",
            "amount_nanos": 40_012_340_000_000i64,
            "limit_nanos": 50_000_000_000_000i64,
            "labels": {"period": "2026-11"},
            "occurred_at": OCCURRED,
            "emitted_at": OCCURRED + 1_000_000,
            "occurred_at_rfc3339": "2026-11-23T10:00:00.123456Z",
            "emitted_at_rfc3339": "2026-11-23T10:00:01.123456Z"
        })
    );
    assert_eq!(webhook_a.len(), 2);
    assert_eq!(webhook_a[1]["state"], "resolved");
    assert_eq!(
        webhook_a[1]["occurred_at_rfc3339"],
        "2026-11-23T10:30:00.123456Z"
    );
    assert_eq!(
        by_id(&hooks, "loop/b", |b| &b["alert_id"])[0]["kind"],
        "loop_signal"
    );

    // Slack: firing with its severity, then the resolve, clearly marked.
    let chats = at("/slack/T0/B0/s3cret");
    assert_eq!(chats.len(), 3, "{chats:#?}");
    assert!(chats
        .iter()
        .all(|c| !c.headers.contains_key("authorization")));
    let slack_a: Vec<Value> = chats
        .iter()
        .map(|c| c.body.clone())
        // The loop alert has the same title: tell them apart by the alert id in the context.
        .filter(|b| b.to_string().contains("alert `budget/a`"))
        .collect();
    assert_eq!(
        slack_a[0],
        json!({
            "text": ":warning: *WARNING*: payments reached 80% of budget monthly (2026-11)\nTeam payments · monthly\nSpent $40,012.34 of $50,000.00 (80.0%).",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": ":warning: WARNING: payments reached 80% of budget monthly (2026-11)", "emoji": true}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "Spent $40,012.34 of $50,000.00 (80.0%)."}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Tenant*\nacme"},
                    {"type": "mrkdwn", "text": "*Team*\npayments"},
                    {"type": "mrkdwn", "text": "*Subject*\nmonthly"},
                    {"type": "mrkdwn", "text": "*Severity*\nwarning (firing)"}
                ]},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "budget_threshold · alert `budget/a` · since 2026-11-23T10:00:00.123456Z"}]}
            ]
        })
    );
    assert_eq!(
        slack_a[1]["text"],
        ":white_check_mark: *RESOLVED*: payments reached 80% of budget monthly (2026-11)\nTeam payments · monthly\nBack under 80%."
    );
    assert!(chats.iter().any(|c| c.body["text"]
        .as_str()
        .unwrap()
        .starts_with(":rotating_light: *CRITICAL*: payments reached 80%")));

    // Alertmanager: one alert per alert_id, held while firing, ended by the resolve.
    let pages = at("/am/api/v2/alerts");
    assert_eq!(pages.len(), 3, "{pages:#?}");
    let am_a = by_id(&pages, "budget/a", |b| &b[0]["labels"]["alert_id"]);
    let mut firing_page = am_a[0].clone();
    let ends_at = parse_time(&firing_page[0]["endsAt"]);
    let hold = time::Duration::seconds(86_400);
    assert!(
        ends_at >= before + hold - time::Duration::seconds(1) && ends_at <= after + hold,
        "endsAt {ends_at} is now + the hold"
    );
    firing_page[0]["endsAt"] = Value::Null;
    assert_eq!(
        firing_page,
        json!([{
            "labels": {
                "alertname": "TallyBudgetThreshold",
                "alert_id": "budget/a",
                "severity": "warning",
                "tenant": "acme",
                "team": "payments",
                "kind": "budget_threshold",
                "period": "2026-11"
            },
            "annotations": {
                "summary": "payments reached 80% of budget monthly (2026-11)",
                "description": "Spent $40,012.34 of $50,000.00 (80.0%).",
                "subject": "monthly",
                "source_id": "budget/acme/payments/monthly"
            },
            "startsAt": "2026-11-23T10:00:00.123456Z",
            "endsAt": null
        }])
    );
    assert_eq!(
        am_a[1][0]["labels"], am_a[0][0]["labels"],
        "the same Alertmanager alert"
    );
    assert_eq!(am_a[1][0]["endsAt"], "2026-11-23T10:30:00.123456Z");
    let am_b = by_id(&pages, "loop/b", |b| &b[0]["labels"]["alert_id"]);
    assert_eq!(
        am_b[0][0]["labels"],
        json!({
            "alertname": "TallyLoopSignal",
            "alert_id": "loop/b",
            "severity": "critical",
            "tenant": "acme",
            "kind": "loop_signal",
            "signal_type": "retry_storm"
        })
    );

    for name in ["ops", "chat", "pager"] {
        let d = stats.destination(name).unwrap();
        assert_eq!(
            (
                d.delivered.load(Ordering::Relaxed),
                d.suppressed.load(Ordering::Relaxed),
                d.attempts_ok.load(Ordering::Relaxed),
                d.dead_letters.load(Ordering::Relaxed)
            ),
            (3, 1, 3, 0),
            "{name}: delivered, suppressed, attempts, dead letters"
        );
    }
    assert_eq!(stats.consumed.load(Ordering::Relaxed), 4);
    assert_eq!(
        committed_and_end(kafka, &group),
        (4, 4),
        "every alert committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_fails_twice_is_retried_then_delivered_once() {
    let topics = Topics::create("notify-retry").await;
    let kafka = &topics.kafka;
    let flaky = Receiver::start(&[503, 503], 200).await;
    let firing = alert(
        "budget/flaky",
        AlertState::Firing,
        Severity::Warning,
        OCCURRED,
    );
    produce(kafka, &[("acme/payments", encode(&firing).unwrap())]).await;

    let config = config(
        kafka,
        vec![destination(
            "flaky",
            DestinationKind::Webhook,
            flaky.url("/hook"),
        )],
    );
    let group = config.group_id.clone();
    let running = start(config);
    let requests = flaky.wait_for(3).await;
    eventually("the delivery counted", || {
        (running.counter("flaky", |s| s.delivered.load(Ordering::Relaxed)) == 1).then_some(())
    })
    .await;
    let stats = running.stop().await;

    assert_eq!(requests.len(), 3, "two 503s, then the 200");
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    assert!(
        requests[1].at - requests[0].at >= Duration::from_millis(25)
            && requests[2].at - requests[1].at >= Duration::from_millis(50),
        "backoff: at least half of 50 ms, then of 100 ms"
    );
    let d = stats.destination("flaky").unwrap();
    assert_eq!(
        (
            d.attempts_retryable.load(Ordering::Relaxed),
            d.retries.load(Ordering::Relaxed),
            d.attempts_ok.load(Ordering::Relaxed),
            d.delivered.load(Ordering::Relaxed),
            d.dead_letters.load(Ordering::Relaxed)
        ),
        (2, 2, 1, 1, 0),
        "failed attempts, retries, ok attempts, delivered, dead letters"
    );
    assert_eq!(committed_and_end(kafka, &group), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_stays_down_is_dead_lettered_without_holding_back_the_others() {
    let topics = Topics::create("notify-down").await;
    let kafka = &topics.kafka;
    let healthy = Receiver::start(&[], 200).await;
    let down = Receiver::start(&[], 503).await;
    let url_env = unique_name("TALLY_TEST_PAGER_URL").replace('-', "_");
    let secret_url = down.url("/services/T0/B0/s3cret-path");
    std::env::set_var(&url_env, &secret_url);

    let firing = alert(
        "budget/down",
        AlertState::Firing,
        Severity::Critical,
        OCCURRED,
    );
    let original = encode(&firing).unwrap();
    let landed = produce(kafka, &[("acme/payments", original.clone())]).await;

    let mut pager = destination("pager", DestinationKind::Slack, String::new());
    pager.url = None;
    pager.url_env = Some(url_env);
    let mut config = config(
        kafka,
        vec![
            destination("ops", DestinationKind::Webhook, healthy.url("/hook")),
            pager,
        ],
    );
    config.retry = RetryConfig {
        max_attempts: 4,
        initial_backoff_ms: 200,
        max_backoff_ms: 1_000,
        request_timeout_ms: 2_000,
    };
    let group = config.group_id.clone();
    let running = start(config);

    // The healthy destination has the alert while the other is still retrying, and nothing
    // is committed: the alert is not finished until its dead letter is written.
    let delivered = healthy.wait_for(1).await;
    let (committed_meanwhile, end) = committed_and_end(kafka, &group);
    assert!(
        down.requests().len() < 4,
        "the healthy one did not wait for the retries"
    );
    let letters = dead_letters(kafka, 1).await;
    let attempts = down.wait_for(4).await;
    assert!(delivered[0].at < attempts[3].at);
    assert!(
        attempts[3].at - attempts[0].at >= Duration::from_millis(100 + 200 + 400),
        "backed off between the four attempts"
    );
    eventually("the dead letter counted", || {
        (running.counter("pager", |s| s.dead_letters.load(Ordering::Relaxed)) == 1).then_some(())
    })
    .await;
    let stats = running.stop().await;
    assert_eq!(
        (committed_meanwhile, end),
        (0, 1),
        "nothing committed before the dead letter"
    );

    let letter = &letters[0];
    assert_eq!(
        letter.error,
        "destination `pager` (slack): HTTP 503 Service Unavailable after 4 attempts: down for maintenance"
    );
    for leak in [secret_url.as_str(), "s3cret-path", "/services/T0"] {
        assert!(!letter.error.contains(leak), "the reason leaks {leak}");
    }
    assert_eq!(
        (letter.stage.as_str(), letter.error_kind.as_str()),
        ("notify", "delivery")
    );
    assert_eq!(letter.original, original, "the alert byte for byte");
    assert_eq!(letter.key.as_deref(), Some(&b"acme/payments"[..]));
    assert_eq!(
        (letter.topic.clone(), letter.partition, letter.offset),
        (kafka.topic(Topic::Alerts), landed[0].0, landed[0].1)
    );
    let pager = stats.destination("pager").unwrap();
    assert_eq!(
        (
            pager.attempts_retryable.load(Ordering::Relaxed),
            pager.retries.load(Ordering::Relaxed),
            pager.delivered.load(Ordering::Relaxed)
        ),
        (4, 3, 0)
    );
    assert_eq!(
        stats
            .destination("ops")
            .unwrap()
            .delivered
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        committed_and_end(kafka, &group),
        (1, 1),
        "committed after the dead letter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_and_a_record_that_is_no_alert_are_dead_lettered_at_once() {
    let topics = Topics::create("notify-refused").await;
    let kafka = &topics.kafka;
    let refusing = Receiver::start(&[], 400).await;
    let firing = alert(
        "budget/refused",
        AlertState::Firing,
        Severity::Info,
        OCCURRED,
    );
    produce(
        kafka,
        &[
            ("acme/payments", b"not an alert".to_vec()),
            ("acme/payments", encode(&firing).unwrap()),
        ],
    )
    .await;
    let config = config(
        kafka,
        vec![destination(
            "strict",
            DestinationKind::Webhook,
            refusing.url("/hook"),
        )],
    );
    let group = config.group_id.clone();
    let running = start(config);
    let mut letters = dead_letters(kafka, 2).await;
    letters.sort_by_key(|l| l.offset);
    eventually("both dead letters counted", || {
        (running.stats.undecodable.load(Ordering::Relaxed) == 1
            && running.counter("strict", |s| s.dead_letters.load(Ordering::Relaxed)) == 1)
            .then_some(())
    })
    .await;
    let stats = running.stop().await;

    assert_eq!(letters[0].error_kind, "decode");
    assert_eq!(letters[0].original, b"not an alert");
    assert_eq!(letters[1].error_kind, "delivery");
    assert_eq!(
        letters[1].error,
        "destination `strict` (webhook): HTTP 400 Bad Request after 1 attempt (not retryable): down for maintenance"
    );
    assert_eq!(refusing.requests().len(), 1, "a 400 is not retried");
    let strict = stats.destination("strict").unwrap();
    assert_eq!(
        (
            strict.attempts_rejected.load(Ordering::Relaxed),
            strict.retries.load(Ordering::Relaxed)
        ),
        (1, 0)
    );
    assert_eq!(committed_and_end(kafka, &group), (2, 2));
}
