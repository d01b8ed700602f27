//! `tally gen`: a realistic, deterministic workload ([`tally_gen::traffic`]) sent to an ingest
//! service over HTTP, produced straight to Kafka, or written to NDJSON files; and its ground
//! truth — calls, tokens by kind, and the cost the shipped catalogue gives them — printed as
//! JSON at the end (and written with `--truth FILE`), for tests and benchmarks to compare.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tally_contract::clock::{now_micros, rfc3339};
use tally_contract::encode_framed;

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::Value;
use tally_accounting::enrich::Enricher;
use tally_contract::kafka::KafkaConfig;
use tally_contract::records::{DeployEvent, LlmCall, Micros, TicketEvent};
use tally_contract::topics::{deploy_key, llm_call_key, ticket_key, Topic};
use tally_gen::traffic::{self, Event, Mix, TrafficConfig, Workload};
use tally_processor::ProcessorConfig;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::TallyError;

/// Options of `tally gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Send to this ingest service (`http://127.0.0.1:8080`).
    #[arg(long, conflicts_with_all = ["out", "kafka"])]
    target: Option<String>,
    /// Write NDJSON instead: calls to FILE, deploys and tickets next to it
    /// (`FILE.deploys.ndjson`, `FILE.tickets.ndjson`), as the ingest endpoints take them.
    #[arg(long, conflicts_with = "kafka")]
    out: Option<PathBuf>,
    /// Produce straight to Kafka (`TALLY_KAFKA_BROKERS`, `--topic-prefix`).
    #[arg(long)]
    kafka: bool,
    /// Topic prefix with `--kafka`.
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// Calls per second to send (HTTP and Kafka); files are written at once.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long to send: `60s`, `5m`, `1h` (calls = rate × duration)...
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// ...or exactly this many calls.
    #[arg(long)]
    calls: Option<usize>,
    /// Seed: the same seed (and start) gives the same events.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Number of teams.
    #[arg(long, default_value_t = 12)]
    teams: usize,
    /// `mixed` (healthy traffic with runaway agents now and then), `healthy` or `loops`.
    #[arg(long, default_value = "mixed")]
    scenario: Mix,
    /// Event time of the first day (RFC 3339); default: `--span` before now, so the workload
    /// ends now.
    #[arg(long)]
    start: Option<String>,
    /// How much event time the workload spans: `1d`, `7d`, `8h`.
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    span: Duration,
    /// Tenant of the events (the API key's).
    #[arg(long, default_value = "acme")]
    tenant: String,
    /// Bearer key for `--target` (a key with `any_team = true`).
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Calls per request or produce batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Also write the ground truth to this JSON file.
    #[arg(long)]
    truth: Option<PathBuf>,
}

/// `60s`, `5m`, `2h`, `7d`, or seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 60s, 5m, 2h or 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(seconds))
}

/// What was generated, and what it must add up to.
#[derive(Debug, Default, Serialize)]
pub struct GroundTruth {
    pub seed: u64,
    pub scenario: String,
    pub tenant: String,
    pub start: String,
    pub span_secs: u64,
    pub sessions: usize,
    pub calls: u64,
    pub error_calls: u64,
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub cache_read_tokens: i128,
    pub cache_write_tokens: i128,
    pub reasoning_tokens: i128,
    pub priced_calls: u64,
    pub unpriced_calls: u64,
    /// Cost of the priced calls with the shipped catalogue, nano-dollars.
    pub cost_nanos: i128,
    pub catalogue_version: String,
    pub deploys: u64,
    pub tickets: u64,
    /// Runaway sessions injected, by kind.
    pub loops: BTreeMap<String, usize>,
    pub by_team: BTreeMap<String, TeamTruth>,
}

/// One team's share of the ground truth.
#[derive(Debug, Default, Serialize)]
pub struct TeamTruth {
    pub calls: u64,
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub cost_nanos: i128,
}

fn traffic_config(args: &GenArgs) -> Result<TrafficConfig, TallyError> {
    let span = args.span.as_micros() as Micros;
    let start = match &args.start {
        Some(text) => {
            let t = OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|e| TallyError::Usage(format!("--start {text:?}: {e}")))?;
            (t.unix_timestamp_nanos() / 1_000) as Micros
        }
        None => now_micros() - span,
    };
    // Events are sent no later than they are dated: ingest refuses calls from the future.
    let sends = args.out.is_none();
    if sends && start + span > now_micros() {
        return Err(TallyError::Usage(format!(
            "--start {} with --span {} s ends at {}, after now ({}): tally gen never sends an \
             event dated after the moment it sends it; choose an earlier --start or a shorter \
             --span (or write a file with --out)",
            rfc3339(start),
            span / 1_000_000,
            rfc3339(start + span),
            rfc3339(now_micros())
        )));
    }
    let calls = args
        .calls
        .unwrap_or((args.rate as u128 * args.duration.as_secs() as u128) as usize);
    if calls == 0 {
        return Err(TallyError::Usage(
            "--rate x --duration (or --calls) is 0".into(),
        ));
    }
    if args.batch == 0 || args.rate == 0 {
        return Err(TallyError::Usage(
            "--batch and --rate must be at least 1".into(),
        ));
    }
    Ok(TrafficConfig {
        seed: args.seed,
        tenant: args.tenant.clone(),
        teams: args.teams,
        calls,
        start,
        span,
        mix: args.scenario,
    })
}

/// Prices every call with the shipped catalogue and adds everything up.
pub fn ground_truth(
    config: &TrafficConfig,
    workload: &Workload,
) -> Result<GroundTruth, TallyError> {
    let processor = ProcessorConfig::default();
    let enricher = Enricher::new(processor.catalogue()?, processor.carbon.clone())?;
    let mut truth = GroundTruth {
        seed: config.seed,
        scenario: format!("{:?}", config.mix).to_lowercase(),
        tenant: config.tenant.clone(),
        start: rfc3339(config.start),
        span_secs: (config.span / 1_000_000) as u64,
        sessions: workload.sessions,
        catalogue_version: enricher.catalogue().version().to_string(),
        loops: workload
            .loops
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect(),
        ..GroundTruth::default()
    };
    for event in &workload.events {
        match event {
            Event::Call(call) => {
                let enriched = enricher.enrich(call.as_ref().clone(), 0).map_err(|e| {
                    TallyError::Usage(format!("a generated call is invalid: {}", e.0))
                })?;
                let c = &enriched.call;
                truth.calls += 1;
                truth.error_calls +=
                    u64::from(c.status == tally_contract::records::CallStatus::Error);
                truth.input_tokens += i128::from(c.input_tokens);
                truth.output_tokens += i128::from(c.output_tokens);
                truth.cache_read_tokens += i128::from(c.cache_read_tokens);
                truth.cache_write_tokens += i128::from(c.cache_write_tokens);
                truth.reasoning_tokens += i128::from(c.reasoning_tokens);
                let team = truth.by_team.entry(c.team.clone()).or_default();
                team.calls += 1;
                team.input_tokens += i128::from(c.input_tokens);
                team.output_tokens += i128::from(c.output_tokens);
                match enriched.cost_total_nanos {
                    Some(cost) => {
                        truth.priced_calls += 1;
                        truth.cost_nanos += i128::from(cost);
                        team.cost_nanos += i128::from(cost);
                    }
                    None => truth.unpriced_calls += 1,
                }
            }
            Event::Deploy(_) => truth.deploys += 1,
            Event::Ticket(_) => truth.tickets += 1,
        }
    }
    Ok(truth)
}

/// A record as the ingest endpoints take it: times in RFC 3339, no server fields, no nulls.
fn ingest_json<T: Serialize>(record: &T) -> Result<Value, TallyError> {
    let mut value = serde_json::to_value(record)
        .map_err(|e| TallyError::Usage(format!("a generated record does not serialise: {e}")))?;
    let object = value.as_object_mut().expect("records are objects");
    object.remove("received_at");
    object.retain(|_, v| !v.is_null());
    if let Some(at) = object.get("occurred_at").and_then(Value::as_i64) {
        object.insert("occurred_at".into(), Value::String(rfc3339(at)));
    }
    Ok(value)
}

fn ndjson<T: Serialize>(records: &[&T]) -> Result<String, TallyError> {
    let mut body = String::new();
    for record in records {
        body.push_str(&ingest_json(*record)?.to_string());
        body.push('\n');
    }
    Ok(body)
}

/// Runs `tally gen`.
pub async fn run(args: GenArgs) -> Result<(), TallyError> {
    let config = traffic_config(&args)?;
    let started = Instant::now();
    let workload = traffic::generate(&config);
    let truth = ground_truth(&config, &workload)?;
    eprintln!(
        "generated {} calls of {} sessions, {} deploys, {} tickets in {:.1} s (seed {})",
        truth.calls,
        truth.sessions,
        truth.deploys,
        truth.tickets,
        started.elapsed().as_secs_f64(),
        config.seed
    );
    if let Some(path) = &args.out {
        write_files(path, &workload)?;
    } else if args.kafka {
        produce(&args, &workload).await?;
    } else if let Some(target) = &args.target {
        send(&args, target, &workload).await?;
    } else {
        return Err(TallyError::Usage(
            "say where the workload goes: --target URL, --kafka or --out FILE".into(),
        ));
    }
    let text = serde_json::to_string_pretty(&truth)
        .map_err(|e| TallyError::Usage(format!("ground truth: {e}")))?;
    if let Some(path) = &args.truth {
        std::fs::write(path, &text)
            .map_err(|e| TallyError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    println!("{text}");
    Ok(())
}

fn split(workload: &Workload) -> (Vec<&LlmCall>, Vec<&DeployEvent>, Vec<&TicketEvent>) {
    let (mut calls, mut deploys, mut tickets) = (Vec::new(), Vec::new(), Vec::new());
    for event in &workload.events {
        match event {
            Event::Call(c) => calls.push(c.as_ref()),
            Event::Deploy(d) => deploys.push(d),
            Event::Ticket(t) => tickets.push(t),
        }
    }
    (calls, deploys, tickets)
}

fn write_files(path: &Path, workload: &Workload) -> Result<(), TallyError> {
    let (calls, deploys, tickets) = split(workload);
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    for (file, body) in [
        (path.to_path_buf(), ndjson(&calls)?),
        (with(".deploys.ndjson"), ndjson(&deploys)?),
        (with(".tickets.ndjson"), ndjson(&tickets)?),
    ] {
        let mut out = std::fs::File::create(&file)
            .map_err(|e| TallyError::Usage(format!("cannot write {}: {e}", file.display())))?;
        out.write_all(body.as_bytes())
            .map_err(|e| TallyError::Usage(format!("cannot write {}: {e}", file.display())))?;
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Sleeps until `sent` calls are due at `rate` per second since `started`.
async fn pace(started: Instant, sent: usize, rate: u64) {
    let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
    tokio::time::sleep_until(due.into()).await;
}

async fn send(args: &GenArgs, target: &str, workload: &Workload) -> Result<(), TallyError> {
    let key = args.api_key.as_deref().ok_or_else(|| {
        TallyError::Usage("--target needs an API key: --api-key or TALLY_API_KEY".into())
    })?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| TallyError::Usage(format!("HTTP client: {e}")))?;
    let base = target.trim_end_matches('/');
    let (calls, deploys, tickets) = split(workload);
    let bar = progress(calls.len() as u64, "calls");
    let started = Instant::now();
    let mut sent = 0;
    for chunk in calls.chunks(args.batch) {
        pace(started, sent, args.rate).await;
        post(
            &client,
            &format!("{base}/v1/llm-calls"),
            key,
            ndjson(chunk)?,
            chunk.len(),
        )
        .await?;
        sent += chunk.len();
        bar.set_position(sent as u64);
    }
    bar.finish();
    for chunk in deploys.chunks(args.batch) {
        post(
            &client,
            &format!("{base}/v1/deploys"),
            key,
            ndjson(chunk)?,
            chunk.len(),
        )
        .await?;
    }
    for chunk in tickets.chunks(args.batch) {
        post(
            &client,
            &format!("{base}/v1/tickets"),
            key,
            ndjson(chunk)?,
            chunk.len(),
        )
        .await?;
    }
    Ok(())
}

/// POSTs one batch; waits and retries on 429 and 503 (the ingest asks for it with
/// `Retry-After`); any rejected record is an error, since the ground truth would not hold.
async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: String,
    records: usize,
) -> Result<(), TallyError> {
    for attempt in 1..=20 {
        let response = client
            .post(url)
            .bearer_auth(key)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) if attempt < 20 => {
                eprintln!("{url}: {error}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => return Err(TallyError::Usage(format!("{url}: {error}"))),
        };
        let status = response.status().as_u16();
        if status == 429 || status == 503 {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1u64);
            tokio::time::sleep(Duration::from_secs(wait.min(30))).await;
            continue;
        }
        let text = response.text().await.unwrap_or_default();
        if status != 202 {
            // The first problems are enough to act on; a whole batch's list is not.
            let shown: String = text.chars().take(1_000).collect();
            let more = if shown.len() < text.len() { " ..." } else { "" };
            return Err(TallyError::Usage(format!(
                "{url} answered {status} to a batch of {records}: {shown}{more}"
            )));
        }
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let accepted =
            answer["accepted"].as_u64().unwrap_or(0) + answer["duplicates"].as_u64().unwrap_or(0);
        if accepted != records as u64 {
            return Err(TallyError::Usage(format!(
                "{url} accepted {accepted} of {records}: {text}"
            )));
        }
        return Ok(());
    }
    Err(TallyError::Usage(format!("{url} kept asking to wait")))
}

async fn produce(args: &GenArgs, workload: &Workload) -> Result<(), TallyError> {
    let kafka = KafkaConfig {
        topic_prefix: args.topic_prefix.clone(),
        ..tally_contract::config::load::<crate::topics::TopicsConfig>(None)?.kafka
    };
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| TallyError::Usage(format!("Kafka producer: {e}")))?;
    let framing = tally_contract::registry::writer(
        &kafka,
        &[Topic::LlmCalls, Topic::Deploys, Topic::Tickets],
    )?;
    let bar = progress(workload.events.len() as u64, "events");
    let started = Instant::now();
    let mut sent = 0;
    for chunk in workload.events.chunks(args.batch) {
        pace(started, sent, args.rate).await;
        let mut deliveries = Vec::with_capacity(chunk.len());
        for event in chunk {
            let (topic, key, payload) = match event {
                Event::Call(c) => (
                    Topic::LlmCalls,
                    llm_call_key(c),
                    encode_framed(c.as_ref(), &framing)?,
                ),
                Event::Deploy(d) => (Topic::Deploys, deploy_key(d), encode_framed(d, &framing)?),
                Event::Ticket(t) => (Topic::Tickets, ticket_key(t), encode_framed(t, &framing)?),
            };
            let topic = kafka.topic(topic);
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| TallyError::Usage(format!("Kafka did not take an event: {e}")))?;
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(TallyError::Usage(format!(
                        "Kafka did not take an event: {e}"
                    )))
                }
                Err(_) => return Err(TallyError::Usage("the Kafka producer stopped".into())),
            }
        }
        sent += chunk.len();
        bar.set_position(sent as u64);
    }
    bar.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn records_go_out_as_the_ingest_takes_them() {
        let mut call = LlmCall::new(
            "c-1",
            1_795_428_000_123_456,
            "acme",
            "web",
            "openai",
            "gpt-4o",
        );
        call.received_at = 5;
        let value = ingest_json(&call).unwrap();
        assert_eq!(value["occurred_at"], "2026-11-23T10:00:00.123456Z");
        assert!(value.get("received_at").is_none());
        assert!(value.get("session_id").is_none(), "no nulls");
        assert_eq!(value["status"], "ok");
        assert_eq!(value["input_tokens"], 0);
    }

    #[test]
    fn the_ground_truth_adds_up_the_priced_calls_exactly() {
        let config = TrafficConfig {
            seed: 3,
            tenant: "acme".into(),
            teams: 4,
            calls: 20_000,
            start: 1_793_577_600_000_000,
            span: 86_400_000_000,
            mix: Mix::Mixed,
        };
        let workload = traffic::generate(&config);
        let truth = ground_truth(&config, &workload).unwrap();
        assert_eq!(truth.calls, 20_000);
        assert_eq!(truth.priced_calls + truth.unpriced_calls, 20_000);
        assert!(truth.unpriced_calls > 0, "the unknown model is in the mix");
        let by_team: i128 = truth.by_team.values().map(|t| t.cost_nanos).sum();
        assert_eq!(by_team, truth.cost_nanos);
        let calls: u64 = truth.by_team.values().map(|t| t.calls).sum();
        assert_eq!(calls, 20_000);
        // Each call's cost, independently: the enricher's exact figure.
        let config_p = ProcessorConfig::default();
        let enricher =
            Enricher::new(config_p.catalogue().unwrap(), config_p.carbon.clone()).unwrap();
        let total: i128 = workload
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Call(c) => enricher
                    .enrich(c.as_ref().clone(), 0)
                    .unwrap()
                    .cost_total_nanos
                    .map(i128::from),
                _ => None,
            })
            .sum();
        assert_eq!(total, truth.cost_nanos);
    }
}
