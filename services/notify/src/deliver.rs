//! One destination's HTTP side: a `reqwest::Client` with the request timeout, the POST of a
//! body with its bearer token, and the retry loop that decides from each answer whether to
//! try again ([`crate::retry`]). The URL and the token live only here; every failure text
//! leaving this module has them removed, so a dead letter or a log line cannot leak them.
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tally_contract::records::Alert;

use crate::config::{DestinationConfig, DestinationKind, Endpoint, Secret};
use crate::dedup::rank;
use crate::retry::{classify, Class, RetryPolicy};
use crate::stats::DestinationStats;
use crate::{NotifyError, Stop};

/// Bytes of an error answer's body kept for the dead letter.
const BODY_EXCERPT: usize = 300;

/// A configured destination, ready to send.
pub struct Destination {
    config: DestinationConfig,
    endpoint: Endpoint,
    client: reqwest::Client,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer, at this attempt.
    Delivered { attempts: u32 },
    /// Given up: the retry budget is spent or the answer was final. The reason names the
    /// destination and what went wrong, never the URL or the token.
    Failed { reason: String },
    /// The notifier is stopping; the alert was not delivered and is not finished.
    Stopped,
}

/// What one attempt came to.
#[derive(Debug)]
struct Failure {
    class: Class,
    /// "HTTP 503 Service Unavailable", "timeout", "connection error".
    summary: String,
    /// The answer's body or the transport error, already redacted.
    detail: String,
    /// What the receiver asked for with `Retry-After`.
    retry_after: Option<Duration>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.config.name)
            .field("kind", &self.config.kind)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// A destination with its own client; `timeout` bounds each request from connecting to
    /// the end of the answer.
    pub fn new(
        config: &DestinationConfig,
        endpoint: Endpoint,
        timeout: Duration,
    ) -> Result<Destination, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would resend the body (and maybe the token) somewhere unplanned.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tally-notify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Http {
                destination: config.name.clone(),
                reason: e.without_url().to_string(),
            })?;
        Ok(Destination {
            config: config.clone(),
            endpoint,
            client,
        })
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What it speaks.
    pub fn kind(&self) -> DestinationKind {
        self.config.kind
    }

    /// Its settings.
    pub fn config(&self) -> &DestinationConfig {
        &self.config
    }

    /// Whether the alert passes the destination's severity and kind filters.
    pub fn wants(&self, alert: &Alert) -> bool {
        rank(alert.severity) >= rank(self.config.min_severity)
            && self.config.kinds.contains(&alert.kind)
    }

    /// POSTs `body` until it is accepted, the answer is final, the policy's attempts are
    /// spent, or `stop` is set (an attempt under way is finished; no new one starts).
    pub async fn deliver(
        &self,
        body: &Value,
        policy: &RetryPolicy,
        stats: &DestinationStats,
        stop: &Stop,
    ) -> Delivery {
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(body).await {
                Ok(()) => {
                    stats.attempts_ok.fetch_add(1, Ordering::Relaxed);
                    return Delivery::Delivered { attempts: attempt };
                }
                Err(failure) => failure,
            };
            let retry = failure.class == Class::Retryable && policy.may_retry(attempt);
            if failure.class == Class::Retryable {
                stats.attempts_retryable.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.attempts_rejected.fetch_add(1, Ordering::Relaxed);
            }
            if !retry {
                return Delivery::Failed {
                    reason: self.reason(&failure, attempt),
                };
            }
            let wait = policy.delay(attempt - 1, failure.retry_after, &mut rand::rng());
            tracing::debug!(
                destination = %self.name(),
                attempt,
                failure = %failure.summary,
                retry_in_ms = wait.as_millis() as u64,
                "delivery attempt failed; retrying"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait() => return Delivery::Stopped,
            }
            stats.retries.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
        }
    }

    /// One POST.
    async fn attempt(&self, body: &Value) -> Result<(), Failure> {
        let mut request = self.client.post(self.endpoint.url.expose()).json(body);
        if let Some(token) = &self.endpoint.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let class = classify(status.as_u16());
        if class == Class::Success {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let detail = excerpt(response).await;
        Err(Failure {
            class,
            summary: format!("HTTP {status}"),
            detail: self.redact(&detail),
            retry_after,
        })
    }

    /// A failure without an answer: timeouts and connection errors are worth retrying; a
    /// request that could not even be built is not.
    fn transport(&self, error: reqwest::Error) -> Failure {
        let (class, summary) = if error.is_timeout() {
            (Class::Retryable, "timeout")
        } else if error.is_connect() {
            (Class::Retryable, "connection error")
        } else if error.is_builder() {
            (Class::Rejected, "invalid request")
        } else {
            (Class::Retryable, "request error")
        };
        let error = error.without_url();
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Failure {
            class,
            summary: summary.to_string(),
            detail: self.redact(&detail),
            retry_after: None,
        }
    }

    /// "destination `pager` (alertmanager): HTTP 503 Service Unavailable after 6 attempts: …"
    fn reason(&self, failure: &Failure, attempts: u32) -> String {
        let plural = if attempts == 1 { "" } else { "s" };
        let final_answer = if failure.class == Class::Rejected {
            " (not retryable)"
        } else {
            ""
        };
        let mut reason = format!(
            "destination `{}` ({}): {} after {attempts} attempt{plural}{final_answer}",
            self.config.name,
            self.config.kind.as_str(),
            failure.summary
        );
        if !failure.detail.is_empty() {
            reason.push_str(": ");
            reason.push_str(&failure.detail);
        }
        reason
    }

    /// `text` without the URL, its secret parts, or the token.
    fn redact(&self, text: &str) -> String {
        redact(text, &secrets_of(&self.endpoint))
    }
}

/// The strings of an endpoint that must never be shown: the URL, its path and query (a Slack
/// webhook's secret is its path), its credentials, and the token. Longest first, so a part
/// is never redacted before the whole.
pub fn secrets_of(endpoint: &Endpoint) -> Vec<String> {
    let url = endpoint.url.expose();
    let mut secrets = vec![url.to_string(), url.trim_end_matches('/').to_string()];
    if let Ok(parsed) = reqwest::Url::parse(url) {
        secrets.push(parsed.path().to_string());
        secrets.extend(parsed.query().map(str::to_string));
        secrets.extend(parsed.password().map(str::to_string));
        secrets.push(parsed.username().to_string());
    }
    secrets.extend(
        endpoint
            .token
            .as_ref()
            .map(|t| Secret::expose(t).to_string()),
    );
    secrets.retain(|s| s.len() > 1);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `text` with each of `secrets` replaced by `<redacted>`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |text, secret| {
        text.replace(secret, "<redacted>")
    })
}

/// The first bytes of an error answer's body, on one line.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > BODY_EXCERPT {
        let cut: String = one_line.chars().take(BODY_EXCERPT).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_the_url_its_path_and_the_token() {
        let endpoint = Endpoint {
            url: Secret::new("https://user:pa55word@hooks.example.com/services/T0/B0/xyz?key=abc"),
            token: Some(Secret::new("t0ken-value")),
        };
        let secrets = secrets_of(&endpoint);
        let text = "POST https://user:pa55word@hooks.example.com/services/T0/B0/xyz?key=abc \
                    failed; path /services/T0/B0/xyz; key=abc; bearer t0ken-value; pa55word";
        let redacted = redact(text, &secrets);
        for leak in [
            "hooks.example.com/services",
            "/services/T0",
            "key=abc",
            "t0ken",
            "pa55word",
        ] {
            assert!(!redacted.contains(leak), "{leak} in {redacted}");
        }
        assert!(redacted.starts_with("POST <redacted> failed"), "{redacted}");
    }

    #[test]
    fn a_destination_debugs_without_its_secrets() {
        let config = DestinationConfig {
            name: "pager".into(),
            kind: DestinationKind::Alertmanager,
            url: None,
            url_env: Some("AM_URL".into()),
            token_env: None,
            min_severity: tally_contract::records::Severity::Critical,
            kinds: tally_contract::records::AlertKind::ALL.to_vec(),
            renotify_interval_secs: None,
            hold_secs: None,
        };
        let endpoint = Endpoint {
            url: Secret::new("http://am.internal:9093/api/v2/alerts"),
            token: Some(Secret::new("t0ken")),
        };
        let destination = Destination::new(&config, endpoint, Duration::from_secs(1)).unwrap();
        let text = format!("{destination:?}");
        assert!(text.contains("pager"), "{text}");
        assert!(
            !text.contains("am.internal") && !text.contains("t0ken"),
            "{text}"
        );
    }
}
