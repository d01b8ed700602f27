//! The HTTP server: routes, and the one path every record takes through them.
//!
//! | endpoint | body | answer |
//! | --- | --- | --- |
//! | `POST /v1/llm-calls` | JSON array or NDJSON of LLM calls | 202, 207 (some rejected), 422 (all rejected) |
//! | `POST /v1/traces` | OTLP/HTTP, protobuf or JSON | 200 with `ExportTraceServiceResponse` (partial success) |
//! | gRPC `TraceService/Export` on `otlp_grpc_listen` | OTLP/gRPC, gzip or not | the same response, or a gRPC status ([`crate::otlp_grpc`]) |
//! | `POST /v1/deploys`, `POST /v1/tickets` | native JSON, or a GitHub webhook (`X-GitHub-Event`) | as llm-calls |
//! | `GET /healthz` | | 200 while the process runs |
//! | `GET /readyz` | | 200 when Kafka answers and the producer is not backed up, else 503 |
//! | `GET /metrics` | | Prometheus text |
//!
//! `/metrics` and `/readyz` are served on `metrics_listen` when it is set, else on the main
//! listener to loopback clients and holders of the metrics key only (403 to others).
//!
//! A bearer key is checked from the headers before the body is read: a request without a
//! valid one costs its headers (a GitHub webhook, signed over its body, is read up to
//! `max_body_bytes` first). Bodies may be gzip or zstd (`Content-Encoding`); the size limit
//! applies to the decompressed bytes, read as a stream.
//!
//! Errors for whole requests: 400 malformed (line and column) or not valid gzip/zstd, 401
//! unknown key, 403 a record for a team or tenant the key may not send for, 408 not answered
//! within `http.request_timeout_ms`, 413 body too large, 415 unsupported content type or
//! encoding, 429 rate limit (`Retry-After`), 503 Kafka unavailable or the server at
//! `http.max_concurrent_requests` (`Retry-After`; nothing of the request was acknowledged).
// Handlers return `Result<_, Response>`, axum's idiom: the error is the answer to send.
#![allow(clippy::result_large_err)]
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_contract::clock::now_micros;

use axum::body::{to_bytes, Body};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tally_contract::records::{DeployEvent, LlmCall, Micros, TicketEvent};
use tally_contract::topics::{deploy_key, llm_call_key, ticket_key, Topic};
use tally_contract::wire::Framing;
use tally_contract::{encode_framed, AvroRecord};

/// The topics the ingest writes (their schemas are registered when it writes the Confluent
/// wire format).
const WRITES: [Topic; 3] = [Topic::LlmCalls, Topic::Deploys, Topic::Tickets];

use tokio::net::TcpListener;

use crate::auth::{Authenticator, Principal};
use crate::body::parse_records;
use crate::dedup::DedupWindow;
use crate::events::{deploy_from_json, ticket_from_json};
use crate::github::{deploy_from_github, ticket_from_github, GithubOutcome};
use crate::listener::{self, ConnectionLimits};
use crate::llm_call::{llm_call_from_json, Context, DERIVED_ID_PREFIX};
use crate::metrics::{Metrics, Rejection};
use crate::otlp::{self, SpanRecord};
use crate::producer::{KafkaProducer, Outgoing, Publisher};
use crate::record::FieldError;
use crate::{IngestConfig, IngestError};

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 5;

/// Everything the handlers share.
pub struct App {
    config: IngestConfig,
    auth: Authenticator,
    dedup: Mutex<DedupWindow>,
    producer: Arc<dyn Publisher>,
    metrics: Arc<Metrics>,
    /// SHA-256 of the key that may read `/metrics` and `/readyz` from another host.
    metrics_key: Option<[u8; 32]>,
    /// More Prometheus text after the ingest's own (`tally up`: its stages').
    more_metrics: Option<Box<dyn Fn() -> String + Send + Sync>>,
    /// How records are framed on Kafka (single-object, or the Confluent wire format with
    /// the schema ids registered at start).
    framing: Framing,
}

impl App {
    pub(crate) fn config(&self) -> &IngestConfig {
        &self.config
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The principal of an `Authorization: Bearer` value, or the 401 to answer.
    pub(crate) fn bearer(&self, authorization: Option<&str>) -> Result<Arc<Principal>, Response> {
        self.auth
            .bearer(authorization)
            .ok_or_else(|| self.unauthorized())
    }

    fn unauthorized(&self) -> Response {
        self.metrics.rejected(Rejection::Unauthorized, 1);
        error_response(StatusCode::UNAUTHORIZED, "missing or unknown API key")
    }
}

/// A bound, not yet serving, ingest server.
pub struct Server {
    listener: TcpListener,
    /// OTLP/gRPC's listener, when `otlp_grpc_listen` is set.
    grpc_listener: Option<TcpListener>,
    app: Arc<App>,
}

impl Server {
    /// Validates the configuration, creates the Kafka producer and binds the listen address.
    pub async fn bind(config: IngestConfig) -> Result<Server, IngestError> {
        let producer = Arc::new(KafkaProducer::new(&config)?);
        Server::bind_with(config, producer).await
    }

    /// Like [`Server::bind`], with the records going to `producer`.
    pub async fn bind_with(
        config: IngestConfig,
        producer: Arc<dyn Publisher>,
    ) -> Result<Server, IngestError> {
        config.validate()?;
        let listener = bind(config.listen).await?;
        let grpc_listener = match config.otlp_grpc_listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let kafka = config.kafka.clone();
        let framing =
            tokio::task::spawn_blocking(move || tally_contract::registry::writer(&kafka, &WRITES))
                .await
                .map_err(|e| IngestError::Config(format!("schema registry set-up: {e}")))??;
        let app = App {
            framing,
            auth: Authenticator::new(&config.api_keys),
            dedup: Mutex::new(DedupWindow::new(
                Duration::from_secs(config.dedup_window_secs),
                config.dedup_max_entries,
            )),
            producer,
            metrics: Arc::new(Metrics::default()),
            metrics_key: config
                .metrics_key_sha256
                .as_deref()
                .and_then(crate::auth::decode_hex32),
            more_metrics: None,
            config,
        };
        Ok(Server {
            listener,
            grpc_listener,
            app: Arc::new(app),
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves `render()`'s Prometheus text on `/metrics` after the ingest's own.
    pub fn with_more_metrics(
        mut self,
        render: impl Fn() -> String + Send + Sync + 'static,
    ) -> Server {
        Arc::get_mut(&mut self.app)
            .expect("a server not serving yet is the only holder of its state")
            .more_metrics = Some(Box::new(render));
        self
    }

    /// The address OTLP/gRPC listens on, when `otlp_grpc_listen` is set.
    pub fn grpc_local_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// Serves until `shutdown` completes, then stops accepting, finishes the requests in
    /// flight and flushes the producer. With `metrics_listen`, `/metrics` and `/readyz` are
    /// served there; with `otlp_grpc_listen`, OTLP/gRPC.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), IngestError> {
        let address = self.local_addr().to_string();
        let app = self.app.clone();
        let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        let grpc = self.grpc_listener.map(|grpc_listener| {
            let address = grpc_listener.local_addr().map(|a| a.to_string());
            tracing::info!(address = ?address, "OTLP/gRPC listening");
            tokio::spawn(crate::otlp_grpc::serve(
                grpc_listener,
                app.clone(),
                async move {
                    let _ = grpc_stopped.await;
                },
            ))
        });
        // Both listeners stop accepting when `shutdown` completes, and drain together.
        let shutdown = async move {
            shutdown.await;
            let _ = stop_grpc.send(());
        };
        let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
        let ops = match app.config.metrics_listen {
            Some(ops_address) => {
                let ops_listener =
                    TcpListener::bind(ops_address)
                        .await
                        .map_err(|source| IngestError::Serve {
                            address: ops_address.to_string(),
                            source,
                        })?;
                tracing::info!(address = %ops_address, "metrics and readiness on their own listener");
                Some(tokio::spawn(listener::serve(
                    ops_listener,
                    ops_router(app.clone()),
                    connection_limits(&app.config),
                    app.metrics.clone(),
                    async move {
                        let _ = ops_stopped.await;
                    },
                )))
            }
            None => None,
        };
        listener::serve(
            self.listener,
            router(self.app),
            connection_limits(&app.config),
            app.metrics.clone(),
            shutdown,
        )
        .await
        .map_err(|source| IngestError::Serve { address, source })?;
        let _ = stop_ops.send(());
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        if let Some(grpc) = grpc {
            match grpc.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "OTLP/gRPC ended with an error"),
                Err(error) => tracing::warn!(%error, "OTLP/gRPC task failed"),
            }
        }
        app.producer
            .flush(Duration::from_secs(30))
            .map_err(IngestError::Producer)
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, IngestError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| IngestError::Serve {
            address: address.to_string(),
            source,
        })
}

fn connection_limits(config: &IngestConfig) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: config.http.max_connections,
        header_read_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
    }
}

/// The record endpoints behind the request limits, `/healthz`, and (without
/// `metrics_listen`) `/metrics` and `/readyz` for loopback clients and the metrics key.
fn router(app: Arc<App>) -> Router {
    let limits = &app.config.http;
    let overload = {
        let app = app.clone();
        move |error: tower::BoxError| {
            let app = app.clone();
            async move { overloaded_or_slow(&app, error) }
        }
    };
    let records = Router::new()
        .route("/v1/llm-calls", post(llm_calls))
        .route("/v1/traces", post(traces))
        .route("/v1/deploys", post(deploys))
        .route("/v1/tickets", post(tickets))
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overload))
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::ConcurrencyLimitLayer::new(
                    limits.max_concurrent_requests,
                ))
                .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
                    limits.request_timeout_ms,
                )))
                .layer(
                    tower_http::decompression::RequestDecompressionLayer::new()
                        .gzip(true)
                        .zstd(true),
                ),
        );
    let mut router = records.route("/healthz", get(|| async { "ok\n" }));
    if app.config.metrics_listen.is_none() {
        let guarded = Router::new()
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn_with_state(
                app.clone(),
                loopback_or_metrics_key,
            ));
        router = router.merge(guarded);
    }
    router.with_state(app)
}

/// `/metrics`, `/readyz` and `/healthz` for the listener of `metrics_listen`.
fn ops_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Lets a loopback client, or one with the metrics key, through to `/metrics` and `/readyz`.
async fn loopback_or_metrics_key(
    State(app): State<Arc<App>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let loopback = listener::peer(&request).is_some_and(|peer| peer.ip().is_loopback());
    let keyed = app.metrics_key.is_some_and(|expected| {
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|key| crate::auth::key_matches(key.trim(), &expected))
    });
    if loopback || keyed {
        next.run(request).await
    } else {
        error_response(
            StatusCode::FORBIDDEN,
            "/metrics and /readyz answer loopback clients and the metrics key only; set metrics_listen or metrics_key_sha256",
        )
    }
}

/// 503 for a request over `http.max_concurrent_requests`, 408 for one over
/// `http.request_timeout_ms`; both counted.
fn overloaded_or_slow(app: &App, error: tower::BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        app.metrics.rejected(Rejection::TimedOut, 1);
        let limit = app.config.http.request_timeout_ms;
        return error_response(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request was not complete within http.request_timeout_ms ({limit} ms); send the body faster or in smaller requests"),
        );
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        app.metrics.rejected(Rejection::Overloaded, 1);
        let limit = app.config.http.max_concurrent_requests;
        return with_retry_after(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the server is handling http.max_concurrent_requests ({limit}) requests; retry after the Retry-After seconds"),
            ),
            Duration::from_secs(1),
        );
    }
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the request failed: {error}"),
    )
}

// ------------------------------------------------------------------ records

/// A validated record on its way to Kafka.
#[allow(clippy::large_enum_variant)] // moved a few times per request; boxing would allocate per record
enum Event {
    Call(LlmCall),
    Deploy(DeployEvent),
    Ticket(TicketEvent),
}

impl Event {
    fn tenant_and_id(&self) -> (&str, &str) {
        match self {
            Event::Call(c) => (&c.tenant, &c.event_id),
            Event::Deploy(d) => (&d.tenant, &d.event_id),
            Event::Ticket(t) => (&t.tenant, &t.event_id),
        }
    }

    fn event_id_mut(&mut self) -> &mut String {
        match self {
            Event::Call(c) => &mut c.event_id,
            Event::Deploy(d) => &mut d.event_id,
            Event::Ticket(t) => &mut t.event_id,
        }
    }

    fn outgoing(&self, config: &IngestConfig, framing: &Framing) -> Result<Outgoing, String> {
        fn build<T: AvroRecord>(
            record: &T,
            framing: &Framing,
            topic: String,
            key: String,
        ) -> Result<Outgoing, String> {
            let payload = encode_framed(record, framing).map_err(|e| e.to_string())?;
            Ok(Outgoing {
                topic,
                key,
                payload,
            })
        }
        let topic = |topic| config.kafka.topic(topic);
        match self {
            Event::Call(c) => build(c, framing, topic(Topic::LlmCalls), llm_call_key(c)),
            Event::Deploy(d) => build(d, framing, topic(Topic::Deploys), deploy_key(d)),
            Event::Ticket(t) => build(t, framing, topic(Topic::Tickets), ticket_key(t)),
        }
    }
}

/// Which endpoint, for reading records and for metrics labels.
#[derive(Clone, Copy)]
enum Kind {
    Call,
    Deploy,
    Ticket,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Call => "llm_calls",
            Kind::Deploy => "deploys",
            Kind::Ticket => "tickets",
        }
    }

    fn record(self) -> &'static str {
        match self {
            Kind::Call => "llm_call",
            Kind::Deploy => "deploy",
            Kind::Ticket => "ticket",
        }
    }

    fn read(self, value: Value, context: &Context<'_>) -> Result<Event, Vec<FieldError>> {
        let too_large = context.limits.check(&value);
        if !too_large.is_empty() {
            return Err(too_large);
        }
        match self {
            Kind::Call => llm_call_from_json(value, context).map(Event::Call),
            Kind::Deploy => deploy_from_json(value, context).map(Event::Deploy),
            Kind::Ticket => ticket_from_json(value, context).map(Event::Ticket),
        }
    }
}

/// Identical records without an event id in one request are distinct events (an embeddings
/// batch of equal inputs in one millisecond): the second and later get `-2`, `-3`, ... after
/// their derived id. A retried request has them in the same order, so keeps its ids.
fn number_identical_records(events: &mut [Event]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for event in events {
        let id = event.event_id_mut();
        if !id.starts_with(DERIVED_ID_PREFIX) {
            continue;
        }
        let count = seen.entry(id.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            id.push_str(&format!("-{count}"));
        }
    }
}

/// One refused record of a request.
#[derive(Debug, Serialize)]
struct Rejected {
    index: usize,
    errors: Vec<FieldError>,
}

/// What publishing a request's records came to.
struct Published {
    accepted: usize,
    duplicates: usize,
    /// Positions (in the events handed to publish) of the records Kafka did not acknowledge,
    /// and why; empty when every record is in.
    failed: Vec<usize>,
    reason: Option<String>,
}

impl App {
    fn context<'a>(&'a self, principal: &'a Principal) -> Context<'a> {
        let received_at = now_micros();
        Context {
            principal,
            limits: &self.config.limits,
            received_at,
            latest_occurred_at: received_at
                + self.config.max_future_skew_secs as Micros * 1_000_000,
        }
    }

    /// Drops duplicates, produces the rest and waits for Kafka; remembers what Kafka took.
    async fn publish(&self, events: Vec<Event>) -> Result<Published, String> {
        let now = Instant::now();
        let total = events.len();
        let mut fresh = Vec::with_capacity(events.len());
        let mut keys = Vec::with_capacity(events.len());
        let mut positions = Vec::with_capacity(events.len());
        let mut in_request = HashSet::new();
        {
            let mut dedup = self.dedup.lock().expect("dedup lock");
            for (position, event) in events.into_iter().enumerate() {
                let (tenant, id) = event.tenant_and_id();
                let key = DedupWindow::key(tenant, id);
                if in_request.insert(key) && !dedup.contains(&key, now) {
                    fresh.push(event);
                    keys.push(key);
                    positions.push(position);
                }
            }
        }
        let duplicates = total - fresh.len();
        let outgoing = fresh
            .iter()
            .map(|event| event.outgoing(&self.config, &self.framing))
            .collect::<Result<Vec<_>, String>>()?;
        let started = Instant::now();
        let results = self.producer.send_all(&outgoing).await;
        self.metrics.produce_latency(started.elapsed());
        let mut published = Published {
            accepted: 0,
            duplicates,
            failed: Vec::new(),
            reason: None,
        };
        {
            // What Kafka took is remembered: a retry of the request counts it once.
            // One clock reading for the request's records: they were acknowledged together.
            let acknowledged = Instant::now();
            let mut dedup = self.dedup.lock().expect("dedup lock");
            for ((key, result), position) in keys.into_iter().zip(&results).zip(positions) {
                match result {
                    Ok(()) => {
                        dedup.insert(key, acknowledged);
                        published.accepted += 1;
                    }
                    Err(reason) => {
                        published.failed.push(position);
                        published.reason.get_or_insert_with(|| reason.clone());
                    }
                }
            }
        }
        Ok(published)
    }
}

// ------------------------------------------------------------------ answers

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn unavailable(destination: &str, reason: &str) -> Response {
    with_retry_after(
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{destination} did not acknowledge the request's records, so none was accepted; retry the whole request: {reason}"),
        ),
        Duration::from_secs(RETRY_AFTER_UNAVAILABLE_SECS),
    )
}

/// 503 for a request of which Kafka acknowledged only some records: it says which (by the
/// request's indices) and that a retry of the whole request counts the others once.
fn partly_unavailable(
    destination: &str,
    published: &Published,
    indices: &[usize],
    reason: &str,
) -> Response {
    let failed: Vec<usize> = published.failed.iter().map(|p| indices[*p]).collect();
    let body = json!({
        "error": format!(
            "{destination} did not acknowledge {} of the request's records ({reason}); retry the whole \
             request: the {} accepted count once",
            failed.len(),
            published.accepted
        ),
        "accepted": published.accepted,
        "duplicates": published.duplicates,
        "failed": failed,
    });
    with_retry_after(
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
        Duration::from_secs(RETRY_AFTER_UNAVAILABLE_SECS),
    )
}

/// Reads the (decompressed) body up to the size limit.
async fn read_body(
    app: &App,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<bytes::Bytes, Response> {
    let limit = app.config.max_body_bytes;
    let too_large = || {
        app.metrics.rejected(Rejection::TooLarge, 1);
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than max_body_bytes ({limit} bytes, after decompression)"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    to_bytes(body, limit).await.map_err(|error| {
        if is_length_limit(&error) {
            too_large()
        } else {
            app.metrics.rejected(Rejection::Malformed, 1);
            error_response(
                StatusCode::BAD_REQUEST,
                format!("the body could not be read (not valid for its Content-Encoding, or cut off): {error}"),
            )
        }
    })
}

/// Whether a body read failed on the size limit (not on the bytes or the connection).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Who sends the request: a bearer key is checked from the headers alone, before the body
/// is read; a GitHub webhook (no bearer key, an `X-Hub-Signature-256`) has its body read
/// within the size limit and its signature checked. Anything else is 401 at once.
async fn authenticate(
    app: &App,
    request: Request,
) -> Result<(axum::http::request::Parts, bytes::Bytes, Arc<Principal>), Response> {
    let (parts, body) = request.into_parts();
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(principal) = app.auth.bearer(bearer) {
        let bytes = read_body(app, &parts, body).await?;
        return Ok((parts, bytes, principal));
    }
    let Some(signature) = parts
        .headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return Err(app.unauthorized());
    };
    let bytes = read_body(app, &parts, body).await?;
    match app.auth.github_signature(Some(&signature), &bytes) {
        Some(principal) => Ok((parts, bytes, principal)),
        None => Err(app.unauthorized()),
    }
}

fn admit(app: &App, principal: &Principal, events: usize) -> Result<(), Response> {
    principal
        .admit(events, Instant::now())
        .map_err(|wait| {
            with_retry_after(
                error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "API key {} is over its rate limit; retry after the Retry-After seconds",
                        principal.name
                    ),
                ),
                wait,
            )
        })
        .inspect_err(|_| app.metrics.rejected(Rejection::RateLimited, events))
}

fn forbidden(rejected: &[Rejected]) -> Option<Response> {
    let forbidden: Vec<Value> = rejected
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .filter(|e| e.forbidden)
                .map(move |e| json!({"index": r.index, "field": e.field, "reason": e.reason}))
        })
        .collect();
    (!forbidden.is_empty()).then(|| {
        (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "the API key may not send some of these records; none was accepted", "forbidden": forbidden})),
        )
            .into_response()
    })
}

// ------------------------------------------------------------------ handlers

async fn llm_calls(State(app): State<Arc<App>>, request: Request) -> Response {
    detached(async move { json_records(&app, Kind::Call, request).await }).await
}

async fn deploys(State(app): State<Arc<App>>, request: Request) -> Response {
    detached(async move { json_records(&app, Kind::Deploy, request).await }).await
}

async fn tickets(State(app): State<Arc<App>>, request: Request) -> Response {
    detached(async move { json_records(&app, Kind::Ticket, request).await }).await
}

/// Runs a request's work on a task of its own, to its end. A handler's future is dropped
/// when the client hangs up or the request times out; dropped between producing and Kafka's
/// acknowledgement, the records would still reach Kafka while ingest forgot them: not
/// counted in `tally_ingest_events_accepted_total` and not remembered, so a retry of the
/// request would be taken again. On its own task the work finishes whoever still listens.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(work).await {
        Ok(answer) => answer,
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    }
}

async fn json_records(app: &App, kind: Kind, request: Request) -> Response {
    let response = json_records_inner(app, kind, request)
        .await
        .unwrap_or_else(|r| r);
    app.metrics
        .request(kind.endpoint(), response.status().as_u16());
    response
}

async fn json_records_inner(app: &App, kind: Kind, request: Request) -> Result<Response, Response> {
    let (parts, body, principal) = authenticate(app, request).await?;
    let headers = &parts.headers;
    if let Some(event) = headers.get("x-github-event").and_then(|v| v.to_str().ok()) {
        return github(app, kind, event, &principal, &body).await;
    }
    let records = parse_records(&body).map_err(|e| {
        app.metrics.rejected(Rejection::Malformed, 1);
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string(), "line": e.line, "column": e.column})),
        )
            .into_response()
    })?;
    admit(app, &principal, records.len())?;

    let context = app.context(&principal);
    let mut events = Vec::with_capacity(records.len());
    let mut indices = Vec::with_capacity(records.len());
    let mut rejected = Vec::new();
    for (index, value) in records.into_iter().enumerate() {
        match kind.read(value, &context) {
            Ok(event) => {
                events.push(event);
                indices.push(index);
            }
            Err(errors) => rejected.push(Rejected { index, errors }),
        }
    }
    if let Some(response) = forbidden(&rejected) {
        app.metrics
            .rejected(Rejection::Forbidden, events.len() + rejected.len());
        return Err(response);
    }
    number_identical_records(&mut events);
    app.metrics.rejected(Rejection::Invalid, rejected.len());
    let published = publish(app, kind, events, &indices).await?;
    let status = match (
        rejected.is_empty(),
        published.accepted + published.duplicates,
    ) {
        (true, _) => StatusCode::ACCEPTED,
        (false, 0) => StatusCode::UNPROCESSABLE_ENTITY,
        (false, _) => StatusCode::MULTI_STATUS,
    };
    Ok((
        status,
        Json(json!({"accepted": published.accepted, "duplicates": published.duplicates, "rejected": rejected})),
    )
        .into_response())
}

/// Publishes `events`, of which `indices` are the positions in the request (for the answer).
async fn publish(
    app: &App,
    kind: Kind,
    events: Vec<Event>,
    indices: &[usize],
) -> Result<Published, Response> {
    let count = events.len();
    let destination = app.producer.destination();
    match app.publish(events).await {
        Ok(published) => {
            app.metrics.accepted(kind.record(), published.accepted);
            app.metrics.duplicates(published.duplicates);
            match &published.reason {
                None => Ok(published),
                Some(reason) => {
                    tracing::warn!(records = count, failed = published.failed.len(), %reason, destination, "not every record was taken; answering 503");
                    app.metrics
                        .rejected(Rejection::KafkaUnavailable, published.failed.len());
                    Err(partly_unavailable(destination, &published, indices, reason))
                }
            }
        }
        Err(reason) => {
            tracing::warn!(records = count, %reason, destination, "records not taken; answering 503");
            app.metrics.rejected(Rejection::KafkaUnavailable, count);
            Err(unavailable(destination, &reason))
        }
    }
}

async fn github(
    app: &App,
    kind: Kind,
    event: &str,
    principal: &Principal,
    body: &[u8],
) -> Result<Response, Response> {
    let expected = match kind {
        Kind::Deploy => "deployment_status",
        Kind::Ticket => "issues",
        Kind::Call => {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "GitHub webhooks go to /v1/deploys or /v1/tickets",
            ))
        }
    };
    if event == "ping" {
        return Ok((StatusCode::OK, Json(json!({"ignored": "ping"}))).into_response());
    }
    if event != expected {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            format!("X-GitHub-Event {event} is not accepted here; this endpoint takes {expected}"),
        ));
    }
    let payload: Value = serde_json::from_slice(body).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    admit(app, principal, 1)?;
    let context = app.context(principal);
    let outcome = match kind {
        Kind::Deploy => {
            deploy_from_github(&payload, &context).map(|o| map_outcome(o, Event::Deploy))
        }
        _ => ticket_from_github(&payload, &context).map(|o| map_outcome(o, Event::Ticket)),
    };
    let event = match outcome {
        Ok(GithubOutcome::Record(event)) => event,
        Ok(GithubOutcome::Ignored(reason)) => {
            return Ok((StatusCode::OK, Json(json!({"ignored": reason}))).into_response())
        }
        Err(errors) => {
            let rejected = [Rejected { index: 0, errors }];
            if let Some(response) = forbidden(&rejected) {
                return Err(response);
            }
            app.metrics.rejected(Rejection::Invalid, 1);
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"accepted": 0, "duplicates": 0, "rejected": rejected})),
            )
                .into_response());
        }
    };
    let published = publish(app, kind, vec![event], &[0]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": published.accepted, "duplicates": published.duplicates, "rejected": []}))).into_response())
}

fn map_outcome<T>(
    outcome: GithubOutcome<T>,
    wrap: impl FnOnce(T) -> Event,
) -> GithubOutcome<Event> {
    match outcome {
        GithubOutcome::Record(record) => GithubOutcome::Record(wrap(record)),
        GithubOutcome::Ignored(reason) => GithubOutcome::Ignored(reason),
    }
}

/// How an OTLP request was encoded, which is also how it is answered.
#[derive(Clone, Copy)]
enum OtlpEncoding {
    Protobuf,
    Json,
}

async fn traces(State(app): State<Arc<App>>, request: Request) -> Response {
    detached(async move {
        let response = traces_inner(&app, request).await.unwrap_or_else(|r| r);
        app.metrics.request("traces", response.status().as_u16());
        response
    })
    .await
}

async fn traces_inner(app: &App, request: Request) -> Result<Response, Response> {
    let (parts, body, principal) = authenticate(app, request).await?;
    let headers = &parts.headers;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => OtlpEncoding::Protobuf,
        "application/json" => OtlpEncoding::Json,
        other => {
            return Err(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {other:?} is not OTLP; send application/x-protobuf or application/json"),
            ))
        }
    };
    let resources = match encoding {
        OtlpEncoding::Protobuf => otlp::decode_protobuf(&body),
        OtlpEncoding::Json => otlp::decode_json(&body),
    }
    .map_err(|reason| {
        app.metrics.rejected(Rejection::Malformed, 1);
        error_response(StatusCode::BAD_REQUEST, reason)
    })?;

    let exported = export_spans(app, &principal, &resources).await?;
    Ok(match encoding {
        OtlpEncoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            otlp::encode_response_protobuf(exported.rejected_spans, &exported.message),
        )
            .into_response(),
        OtlpEncoding::Json => (
            StatusCode::OK,
            Json(otlp::encode_response_json(
                exported.rejected_spans,
                &exported.message,
            )),
        )
            .into_response(),
    })
}

/// What an OTLP export came to: the spans refused and why (the partial success).
pub(crate) struct Exported {
    pub rejected_spans: i64,
    pub message: String,
}

/// The path every OTLP export takes after it was decoded, whichever the transport (HTTP or
/// gRPC): GenAI spans → records → limits and validation → Kafka, acknowledged.
pub(crate) async fn export_spans(
    app: &App,
    principal: &Principal,
    resources: &[otlp::ResourceSpans],
) -> Result<Exported, Response> {
    let mut records = Vec::new();
    let mut skipped = 0;
    for resource in resources {
        for span in &resource.spans {
            match otlp::span_to_record(&resource.attributes, span, &app.config.otlp_team_attribute)
            {
                SpanRecord::Call(record) => records.push(record),
                SpanRecord::NotGenAi => skipped += 1,
            }
        }
    }
    app.metrics.spans_skipped(skipped);
    admit(app, principal, records.len())?;
    let context = app.context(principal);
    let mut events = Vec::with_capacity(records.len());
    let mut indices = Vec::with_capacity(records.len());
    let mut rejected = Vec::new();
    for (index, record) in records.into_iter().enumerate() {
        let too_large = context.limits.check(&record);
        if !too_large.is_empty() {
            rejected.push(Rejected {
                index,
                errors: too_large,
            });
            continue;
        }
        match llm_call_from_json(record, &context) {
            Ok(call) => {
                events.push(Event::Call(call));
                indices.push(index);
            }
            Err(errors) => rejected.push(Rejected { index, errors }),
        }
    }
    if let Some(response) = forbidden(&rejected) {
        return Err(response);
    }
    app.metrics.rejected(Rejection::Invalid, rejected.len());
    publish(app, Kind::Call, events, &indices).await?;
    let message = rejected
        .iter()
        .take(10)
        .map(|r| {
            let reasons: Vec<String> = r
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.reason))
                .collect();
            format!("GenAI span {}: {}", r.index, reasons.join("; "))
        })
        .collect::<Vec<_>>()
        .join(" | ");
    Ok(Exported {
        rejected_spans: rejected.len() as i64,
        message,
    })
}
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let in_flight = app.producer.in_flight();
    if in_flight > app.config.max_in_flight {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the producer is backed up: {in_flight} records wait for Kafka (max_in_flight {})",
                app.config.max_in_flight
            ),
        );
    }
    match app.producer.reachable(Duration::from_secs(2)).await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"ready": true, "in_flight": in_flight})),
        )
            .into_response(),
        Err(reason) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Kafka is not reachable: {reason}"),
        ),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let dedup_entries = app.dedup.lock().expect("dedup lock").len();
    let mut text = app.metrics.render(app.producer.in_flight(), dedup_entries);
    if let Some(more) = &app.more_metrics {
        text.push_str(&more());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
