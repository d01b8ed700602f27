//! OTLP/gRPC traces: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
//! `otlp_grpc_listen` (4317 is OTLP's gRPC port), served by tonic beside OTLP/HTTP.
//!
//! A request, gzip-compressed or not, is decoded into the same protobuf messages as
//! `POST /v1/traces` and takes the same path (`server::export_spans`): the bearer key
//! from the `authorization` metadata, the key's rate limit, the record limits, and Kafka's
//! acknowledgement before the answer. Spans refused one by one come back as the response's
//! partial success, as over HTTP. A whole request refused becomes the gRPC status OTLP
//! exporters act on: `UNAUTHENTICATED`, `PERMISSION_DENIED` and `INVALID_ARGUMENT` are not
//! retried; `RESOURCE_EXHAUSTED` (rate limit) and `UNAVAILABLE` (Kafka did not acknowledge)
//! are, after the delay in the `google.rpc.retryinfo-bin` trailer.
// The shared path answers `Result<_, Response>`, axum's idiom (see server.rs).
#![allow(clippy::result_large_err)]
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::http::{header, StatusCode};
use axum::response::Response;
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::otlp::{self, proto};
use crate::server::{export_spans, App};

/// The one method served.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The endpoint label of this listener's requests in `tally_ingest_requests_total`.
const ENDPOINT: &str = "traces_grpc";

/// Serves OTLP/gRPC on `listener` until `shutdown` completes, then lets the calls in
/// flight finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let limits = app.config().http.clone();
    let service = tower::service_fn(move |request: axum::http::Request<tonic::body::Body>| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(route(app, request).await) }
    });
    tonic::transport::Server::builder()
        .timeout(Duration::from_millis(limits.request_timeout_ms))
        .concurrency_limit_per_connection(limits.max_concurrent_requests)
        .serve_with_incoming_shutdown(service, TcpIncoming::from(listener), shutdown)
        .await
}

async fn route(
    app: Arc<App>,
    request: axum::http::Request<tonic::body::Body>,
) -> axum::http::Response<tonic::body::Body> {
    let path = request.uri().path();
    if path != EXPORT_PATH {
        return Status::unimplemented(format!(
            "{path} is not served here; this listener serves {EXPORT_PATH}"
        ))
        .into_http();
    }
    let mut grpc = tonic::server::Grpc::new(ProstCodec::default())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(app.config().max_body_bytes);
    let export = tower::service_fn(move |request| {
        let app = app.clone();
        crate::server::detached(async move { export(&app, request).await })
    });
    grpc.unary(export, request).await
}

async fn export(
    app: &App,
    request: tonic::Request<proto::ExportTraceServiceRequest>,
) -> Result<tonic::Response<proto::ExportTraceServiceResponse>, Status> {
    match export_or_refuse(app, request).await {
        Ok(exported) => {
            app.metrics().request(ENDPOINT, StatusCode::OK.as_u16());
            Ok(tonic::Response::new(otlp::response_proto(
                exported.rejected_spans,
                &exported.message,
            )))
        }
        Err(refusal) => {
            app.metrics().request(ENDPOINT, refusal.status().as_u16());
            Err(status_of(refusal).await)
        }
    }
}

async fn export_or_refuse(
    app: &App,
    request: tonic::Request<proto::ExportTraceServiceRequest>,
) -> Result<crate::server::Exported, Response> {
    let bearer = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    let principal = app.bearer(bearer)?;
    let resources = otlp::from_proto(request.into_inner());
    export_spans(app, &principal, &resources).await
}

/// The gRPC status for the HTTP answer the shared path gave, with its message, and for the
/// retryable ones the wait of its `Retry-After` as a `google.rpc.RetryInfo` trailer.
async fn status_of(refusal: Response) -> Status {
    let code = match refusal.status() {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    };
    let retry_after_secs = refusal
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.parse::<i64>().ok());
    let body = to_bytes(refusal.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|answer| Some(answer.get("error")?.as_str()?.to_owned()))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let mut status = Status::new(code, message);
    if let Some(seconds) = retry_after_secs {
        let retry_info = RetryInfo {
            retry_delay: Some(ProtoDuration { seconds, nanos: 0 }),
        };
        status.metadata_mut().insert_bin(
            "google.rpc.retryinfo-bin",
            MetadataValue::from_bytes(&retry_info.encode_to_vec()),
        );
    }
    status
}

/// `google.rpc.RetryInfo`: how long a client should wait before it retries.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn a_rate_limited_export_is_resource_exhausted_with_the_wait_as_retry_info() {
        let refusal = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "3")],
            axum::Json(serde_json::json!({"error": "API key k is over its rate limit"})),
        )
            .into_response();
        let status = status_of(refusal).await;
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "API key k is over its rate limit");
        let trailer = status
            .metadata()
            .get_bin("google.rpc.retryinfo-bin")
            .expect("a RetryInfo trailer")
            .to_bytes()
            .unwrap();
        let retry = RetryInfo::decode(trailer.as_ref()).unwrap();
        assert_eq!(retry.retry_delay.unwrap().seconds, 3);
    }

    #[tokio::test]
    async fn an_unknown_key_is_unauthenticated_and_not_retried() {
        let refusal = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "missing or unknown API key"})),
        )
            .into_response();
        let status = status_of(refusal).await;
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unauthenticated, "missing or unknown API key")
        );
        assert!(status
            .metadata()
            .get_bin("google.rpc.retryinfo-bin")
            .is_none());
    }
}
