//! `POST /v1/deploys` and `/v1/tickets`: native JSON and GitHub webhooks.
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tally_contract::records::{DeployEvent, DeployStatus, TicketEvent, TicketKind, TicketStatus};
use tally_contract::topics::Topic;
use tally_ingest::fingerprint;

use crate::harness::{Harness, GITHUB_SECRET};

fn signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

async fn github(
    ingest: &Harness,
    path: &str,
    event: &str,
    body: &serde_json::Value,
    sign: bool,
) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let mut request = ingest
        .http
        .post(format!("{}{path}", ingest.url))
        .header("content-type", "application/json")
        .header("x-github-event", event);
    if sign {
        request = request.header("x-hub-signature-256", signature(&body));
    }
    let response = request.body(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn native_deploys_and_tickets_and_github_webhooks_reach_kafka() {
    let ingest = Harness::start().await;
    let (status, _) = ingest
        .post_json(
            "/v1/deploys",
            &json!([{"event_id": "d-1", "occurred_at": "2026-11-23T10:00:00Z", "service": "checkout",
                     "environment": "production", "status": "succeeded", "ticket_ids": ["PAY-1"]}]),
        )
        .await;
    assert_eq!(status, 202);
    let deployment_status = json!({
        "action": "created",
        "deployment_status": {"id": 4242, "state": "failure", "created_at": "2026-11-23T11:00:00Z",
                              "target_url": "https://github.com/acme/checkout/actions/runs/1"},
        "deployment": {"id": 1, "sha": "abc123", "ref": "v2", "environment": "staging", "payload": {}},
        "repository": {"name": "checkout", "full_name": "acme/checkout"}
    });
    assert_eq!(
        github(
            &ingest,
            "/v1/deploys",
            "deployment_status",
            &deployment_status,
            false
        )
        .await
        .0,
        401
    );
    let (status, answer) = github(
        &ingest,
        "/v1/deploys",
        "deployment_status",
        &deployment_status,
        true,
    )
    .await;
    assert_eq!((status, answer["accepted"].clone()), (202, json!(1)));
    let (status, answer) =
        github(&ingest, "/v1/deploys", "ping", &json!({"zen": "hi"}), true).await;
    assert_eq!((status, answer), (200, json!({"ignored": "ping"})));
    let (status, answer) = github(&ingest, "/v1/deploys", "issues", &json!({}), true).await;
    assert_eq!(status, 400, "{answer}");

    let deploys = ingest
        .read_by_id::<DeployEvent>(Topic::Deploys, 2, |d| d.event_id.clone())
        .await;
    let native = &deploys["d-1"];
    assert_eq!(
        (
            native.tenant.as_str(),
            native.team.as_str(),
            native.service.as_str()
        ),
        ("acme", "payments", "checkout")
    );
    assert_eq!(
        (native.status, native.ticket_ids.clone()),
        (DeployStatus::Succeeded, vec!["PAY-1".to_string()])
    );
    let from_github = &deploys["github-deployment-status-4242"];
    assert_eq!(from_github.status, DeployStatus::Failed);
    assert_eq!(from_github.environment, "staging");
    assert_eq!(from_github.commit_sha.as_deref(), Some("abc123"));
    assert_eq!(from_github.occurred_at, 1_795_431_600_000_000);

    let (status, _) = ingest
        .post_json(
            "/v1/tickets",
            &json!({"event_id": "t-1", "occurred_at": "2026-11-23T10:00:00Z", "ticket_id": "PAY-1",
                    "kind": "feature", "status": "closed", "title": "One-click refunds", "estimate_hours": 16}),
        )
        .await;
    assert_eq!(status, 202);
    let issue = json!({
        "action": "reopened",
        "issue": {"id": 99, "number": 7, "title": "Crash on empty cart", "labels": [{"name": "bug"}],
                  "updated_at": "2026-11-23T12:00:00Z", "html_url": "https://github.com/acme/checkout/issues/7"},
        "repository": {"full_name": "acme/checkout"}
    });
    let (status, _) = github(&ingest, "/v1/tickets", "issues", &issue, true).await;
    assert_eq!(status, 202);
    let tickets = ingest
        .read_by_id::<TicketEvent>(Topic::Tickets, 2, |t| t.ticket_id.clone())
        .await;
    let native = &tickets["PAY-1"];
    assert_eq!(
        (native.kind, native.status, native.estimate_hours),
        (TicketKind::Feature, TicketStatus::Closed, Some(16.0))
    );
    assert_eq!(
        native.title_fingerprint,
        Some(fingerprint::of_text("One-click refunds"))
    );
    let from_github = &tickets["acme/checkout#7"];
    assert_eq!(
        (from_github.kind, from_github.status),
        (TicketKind::Bug, TicketStatus::Reopened)
    );
    assert_eq!(
        from_github.url.as_deref(),
        Some("https://github.com/acme/checkout/issues/7")
    );
    ingest.stop().await;
}
