//! From calls to on-call, live, against the real broker: a retry storm and a healthy session
//! go through `tally process` (enrich and detect) and `tally notify`; local HTTP receivers
//! stand in for a generic webhook, a Slack incoming webhook and Alertmanager. Each gets the
//! storm's alert once firing and once resolved (the loop stops, its partition goes quiet,
//! and the signal resolves by the wall clock), with the payload each one expects; the healthy
//! session raises nothing.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tally_accounting::enrich::Enricher;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::{AlertKind, LlmCall, Severity};
use tally_contract::topics::{llm_call_key, Topic};
use tally_notify::config::{DestinationConfig, DestinationKind, RetryConfig, Secret};
use tally_notify::{NotifyConfig, Stats};
use tally_processor::{pipeline, ProcessorConfig};
use tally_tests::{delete_topics, kafka_config, require_kafka, unique_name};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

type Requests = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

/// A local HTTP server recording (path, authorization header, JSON body) of every request.
async fn receiver() -> (SocketAddr, Requests) {
    async fn record(
        State(requests): State<Requests>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        requests
            .lock()
            .unwrap()
            .push((uri.path().to_string(), authorization, body));
        "ok"
    }
    let requests: Requests = Arc::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, requests)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn session_call(id: &str, session: &str, prompt: &str, tool_args: Option<&str>) -> LlmCall {
    let mut call = LlmCall::new(
        id,
        now_micros(),
        "acme",
        "platform",
        "openai",
        "gpt-4o-mini",
    );
    call.received_at = call.occurred_at;
    call.session_id = Some(session.into());
    call.agent = Some("fixer".into());
    call.workflow = Some("triage".into());
    call.input_tokens = 2_000;
    call.output_tokens = 150;
    call.prompt_fingerprint = Some(prompt.into());
    if let Some(args) = tool_args {
        call.tool_name = Some("search".into());
        call.tool_args_fingerprint = Some(args.into());
    }
    call
}

async fn produce(kafka: &KafkaConfig, call: &LlmCall) {
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let payload = tally_contract::encode(call).unwrap();
    producer
        .send(
            FutureRecord::to(&kafka.topic(Topic::LlmCalls))
                .key(&llm_call_key(call))
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

async fn wait_for(
    requests: &Requests,
    n: usize,
    what: &str,
) -> Vec<(String, Option<String>, Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = requests.lock().unwrap().clone();
        if seen.len() >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} requests: {seen:?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_storm_pages_webhook_slack_and_alertmanager_then_resolves() {
    require_kafka();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("runaway")),
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
    .unwrap();
    let (address, requests) = receiver().await;
    let url = |path: &str| Some(Secret::new(format!("http://{address}{path}")));
    std::env::set_var("TALLY_TEST_ONCALL_TOKEN", "s3cret-token");
    let destination = |name: &str, kind, path: &str| DestinationConfig {
        name: name.into(),
        kind,
        url: url(path),
        url_env: None,
        token_env: None,
        min_severity: Severity::Info,
        kinds: AlertKind::ALL.to_vec(),
        renotify_interval_secs: None,
        hold_secs: None,
    };
    let mut webhook = destination("ops-webhook", DestinationKind::Webhook, "/hook");
    webhook.token_env = Some("TALLY_TEST_ONCALL_TOKEN".into());
    let notify = NotifyConfig {
        group_id: unique_name("notify"),
        retry: RetryConfig {
            max_attempts: 3,
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
            request_timeout_ms: 2_000,
        },
        destinations: vec![
            webhook,
            destination("chat", DestinationKind::Slack, "/slack"),
            destination("pager", DestinationKind::Alertmanager, "/am"),
        ],
        kafka: kafka.clone(),
        ..NotifyConfig::default()
    };
    let stats = Arc::new(Stats::new(&notify));
    let (stop_notify, notify_stopped) = tokio::sync::oneshot::channel::<()>();
    let notifier = tokio::spawn(tally_notify::run_until(notify, stats, async {
        let _ = notify_stopped.await;
    }));

    let mut processor = ProcessorConfig {
        group_id: unique_name("runaway-processor"),
        instance_id: "runaway-test".into(),
        commit_interval_ms: 100,
        kafka: kafka.clone(),
        ..ProcessorConfig::default()
    };
    processor.detect.quiet_period_secs = 3;
    let enricher = Enricher::new(processor.catalogue().unwrap(), processor.carbon.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stages = tally_processor::spawn_stages(
        processor,
        enricher,
        stop.clone(),
        Arc::new(pipeline::Stats::default()),
    );

    // A healthy session with varied searches, and eight identical attempts in another.
    for n in 0..8 {
        let healthy = session_call(
            &format!("ok-{n}"),
            "s-healthy",
            &format!("p{n}"),
            Some(&format!("q{n}")),
        );
        produce(&kafka, &healthy).await;
        produce(
            &kafka,
            &session_call(&format!("storm-{n}"), "s-storm", "same prompt", None),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let firing = wait_for(&requests, 3, "firing at three destinations").await;
    let resolved = wait_for(&requests, 6, "resolved at three destinations").await;
    assert_eq!(&resolved[..3], &firing[..3]);
    // Nothing more arrives: no re-notification, nothing for the healthy session.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = requests.lock().unwrap().clone();
    assert_eq!(all.len(), 6, "{all:?}");

    let to = |path: &str| -> Vec<(Option<String>, Value)> {
        all.iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, auth, body)| (auth.clone(), body.clone()))
            .collect()
    };
    let signal_id = "retry_storm/acme/platform/s-storm/storm-0";

    let hooks = to("/hook");
    assert_eq!(hooks.len(), 2);
    for (auth, _) in &hooks {
        assert_eq!(auth.as_deref(), Some("Bearer s3cret-token"));
    }
    let (fire, resolve) = (&hooks[0].1, &hooks[1].1);
    println!(
        "webhook firing payload:\n{}",
        serde_json::to_string_pretty(fire).unwrap()
    );
    assert_eq!(fire["alert_id"], signal_id);
    assert_eq!(fire["kind"], "loop_signal");
    assert_eq!(
        (fire["state"].as_str(), resolve["state"].as_str()),
        (Some("firing"), Some("resolved"))
    );
    assert_eq!(fire["labels"]["signal_type"], "retry_storm");
    assert_eq!(fire["labels"]["session_id"], "s-storm");
    assert_eq!(
        fire["title"],
        "retry storm: session s-storm (team platform, agent fixer)"
    );
    assert!(fire["message"].as_str().unwrap().starts_with(
        "6 consecutive attempts (0 failed; 5 repeated the previous prompt), more than the 5 allowed. Burned since "
    ));
    assert!(fire["amount_nanos"].as_i64().unwrap() > 0);
    // The resolve covers all eight attempts.
    assert!(
        resolve["message"]
            .as_str()
            .unwrap()
            .contains(": 8 calls, 17,200 tokens,"),
        "{resolve}"
    );

    let slack = to("/slack");
    assert_eq!(slack.len(), 2);
    let (fire_text, resolve_text) = (
        slack[0].1["text"].as_str().unwrap(),
        slack[1].1["text"].as_str().unwrap(),
    );
    assert!(
        fire_text.contains("retry storm: session s-storm") && fire_text.contains("WARNING"),
        "{fire_text}"
    );
    assert!(resolve_text.contains("RESOLVED"), "{resolve_text}");
    assert!(slack[0].1["blocks"]
        .as_array()
        .is_some_and(|b| !b.is_empty()));
    assert_eq!(slack[0].0, None, "no token goes to Slack");

    let pages = to("/am/api/v2/alerts");
    assert_eq!(pages.len(), 2);
    let (fire, resolve) = (&pages[0].1[0], &pages[1].1[0]);
    for page in [fire, resolve] {
        assert_eq!(page["labels"]["alertname"], "TallyLoopSignal");
        assert_eq!(page["labels"]["alert_id"], signal_id);
        assert_eq!(page["labels"]["signal_type"], "retry_storm");
        assert_eq!(page["labels"]["team"], "platform");
        assert_eq!(page["labels"]["severity"], "warning");
    }
    assert_eq!(
        fire["annotations"]["summary"],
        "retry storm: session s-storm (team platform, agent fixer)"
    );
    // Resolved: endsAt is the event time of the storm's last call.
    let resolved_at = OffsetDateTime::parse(resolve["endsAt"].as_str().unwrap(), &Rfc3339).unwrap();
    let firing_until = OffsetDateTime::parse(fire["endsAt"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(
        resolved_at < firing_until,
        "firing holds into the future; resolve ends it"
    );
    assert!(resolved_at <= OffsetDateTime::now_utc());
    let started_at = OffsetDateTime::parse(fire["startsAt"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(started_at <= resolved_at);

    stop.store(true, Ordering::SeqCst);
    for stage in stages {
        stage.join().unwrap().unwrap();
    }
    let _ = stop_notify.send(());
    notifier.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}
