//! GitHub webhooks → deploys and tickets, chosen by the `X-GitHub-Event` header:
//!
//! - `deployment_status`: `success` → succeeded, `failure` / `error` → failed; other states
//!   (pending, queued, in_progress, inactive) are acknowledged and ignored: they are not the
//!   end of a deploy. Service = repository name (or `deployment.payload.service`), version =
//!   `deployment.ref`, tickets = `deployment.payload.ticket_ids`.
//! - `issues`: `opened`, `closed`, `reopened` become ticket events (`owner/repo#number`);
//!   other actions are ignored. Kind from labels: `bug` → bug, `incident` → incident,
//!   `chore` / `maintenance` / `dependencies` → chore, otherwise feature. The title is
//!   fingerprinted, never kept.
//! - `ping` is answered and ignored.
//!
//! The team is the API key's, or `deployment.payload.team` / a `team:<name>` label for keys
//! that may set it.
use serde_json::Value;
use tally_contract::records::{DeployEvent, DeployStatus, TicketEvent, TicketKind, TicketStatus};

use crate::auth::TeamError;
use crate::fingerprint;
use crate::llm_call::Context;
use crate::record::{parse_timestamp, FieldError};

/// What a webhook delivery became.
#[derive(Debug, PartialEq)]
pub enum GithubOutcome<T> {
    /// A record to produce.
    Record(T),
    /// Acknowledged and not recorded, with the reason.
    Ignored(String),
}

/// A `deployment_status` delivery as a deploy.
pub fn deploy_from_github(
    payload: &Value,
    context: &Context<'_>,
) -> Result<GithubOutcome<DeployEvent>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let state = text(payload, "/deployment_status/state", &mut errors);
    let status = match state.as_deref() {
        Some("success") => DeployStatus::Succeeded,
        Some("failure" | "error") => DeployStatus::Failed,
        Some(other) => {
            return Ok(GithubOutcome::Ignored(format!(
                "deployment_status {other} is not the end of a deploy"
            )))
        }
        None => return Err(errors),
    };
    let status_id = number(payload, "/deployment_status/id", &mut errors);
    let occurred_at = timestamp(
        payload,
        &[
            "/deployment_status/updated_at",
            "/deployment_status/created_at",
        ],
        &mut errors,
    );
    let service = optional(payload, "/deployment/payload/service")
        .or_else(|| text(payload, "/repository/name", &mut errors));
    let environment = optional(payload, "/deployment_status/environment")
        .or_else(|| text(payload, "/deployment/environment", &mut errors));
    let team = team(
        optional(payload, "/deployment/payload/team"),
        context,
        &mut errors,
    );
    let ticket_ids = payload
        .pointer("/deployment/payload/ticket_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(GithubOutcome::Record(DeployEvent {
        event_id: format!("github-deployment-status-{}", status_id.unwrap_or_default()),
        occurred_at: occurred_at.unwrap_or_default(),
        received_at: context.received_at,
        tenant: context.principal.tenant.clone(),
        team: team.unwrap_or_default(),
        service: service.unwrap_or_default(),
        environment: environment.unwrap_or_default(),
        version: optional(payload, "/deployment/ref"),
        commit_sha: optional(payload, "/deployment/sha"),
        status,
        ticket_ids,
        url: optional(payload, "/deployment_status/target_url")
            .or_else(|| optional(payload, "/deployment_status/log_url")),
    }))
}

/// An `issues` delivery as a ticket event.
pub fn ticket_from_github(
    payload: &Value,
    context: &Context<'_>,
) -> Result<GithubOutcome<TicketEvent>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let action = text(payload, "/action", &mut errors);
    let status = match action.as_deref() {
        Some("opened") => TicketStatus::Opened,
        Some("closed") => TicketStatus::Closed,
        Some("reopened") => TicketStatus::Reopened,
        Some(other) => {
            return Ok(GithubOutcome::Ignored(format!(
                "issues action {other} is not a status change tally records"
            )))
        }
        None => return Err(errors),
    };
    let repository = text(payload, "/repository/full_name", &mut errors);
    let issue_number = number(payload, "/issue/number", &mut errors);
    let issue_id = number(payload, "/issue/id", &mut errors);
    let occurred_at = match status {
        TicketStatus::Closed => timestamp(
            payload,
            &["/issue/closed_at", "/issue/updated_at"],
            &mut errors,
        ),
        _ => timestamp(
            payload,
            &["/issue/updated_at", "/issue/created_at"],
            &mut errors,
        ),
    };
    let labels: Vec<String> = payload
        .pointer("/issue/labels")
        .and_then(Value::as_array)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|l| l.get("name")?.as_str())
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let team_label = labels
        .iter()
        .find_map(|l| l.strip_prefix("team:"))
        .map(String::from);
    let team = team(team_label, context, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(GithubOutcome::Record(TicketEvent {
        event_id: format!(
            "github-issue-{}-{}-{}",
            issue_id.unwrap_or_default(),
            action.unwrap_or_default(),
            occurred_at.unwrap_or_default()
        ),
        occurred_at: occurred_at.unwrap_or_default(),
        received_at: context.received_at,
        tenant: context.principal.tenant.clone(),
        ticket_id: format!(
            "{}#{}",
            repository.unwrap_or_default(),
            issue_number.unwrap_or_default()
        ),
        team: team.unwrap_or_default(),
        kind: kind_from_labels(&labels),
        status,
        title_fingerprint: payload
            .pointer("/issue/title")
            .filter(|t| !t.is_null())
            .map(fingerprint::of_value),
        estimate_hours: None,
        url: optional(payload, "/issue/html_url"),
    }))
}

fn kind_from_labels(labels: &[String]) -> TicketKind {
    let has = |names: &[&str]| labels.iter().any(|l| names.contains(&l.as_str()));
    if has(&["bug"]) {
        TicketKind::Bug
    } else if has(&["incident"]) {
        TicketKind::Incident
    } else if has(&["chore", "maintenance", "dependencies"]) {
        TicketKind::Chore
    } else {
        TicketKind::Feature
    }
}

fn team(
    requested: Option<String>,
    context: &Context<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match context.principal.resolve_team(requested.as_deref()) {
        Ok(team) => Some(team),
        Err(TeamError::Missing) => {
            errors.push(error(
                "team",
                "the API key has no team and the payload names none".into(),
                false,
            ));
            None
        }
        Err(TeamError::Forbidden { requested }) => {
            errors.push(error(
                "team",
                format!("this API key may not send events for team {requested:?}"),
                true,
            ));
            None
        }
    }
}

fn path_name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

fn error(field: &str, reason: String, forbidden: bool) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason,
        forbidden,
    }
}

fn optional(payload: &Value, pointer: &str) -> Option<String> {
    payload
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn text(payload: &Value, pointer: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let value = optional(payload, pointer);
    if value.is_none() {
        errors.push(error(
            &path_name(pointer),
            "is required in this GitHub payload".into(),
            false,
        ));
    }
    value
}

fn number(payload: &Value, pointer: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let value = payload.pointer(pointer).and_then(Value::as_i64);
    if value.is_none() {
        errors.push(error(
            &path_name(pointer),
            "is required in this GitHub payload (a number)".into(),
            false,
        ));
    }
    value
}

fn timestamp(payload: &Value, pointers: &[&str], errors: &mut Vec<FieldError>) -> Option<i64> {
    for pointer in pointers {
        if let Some(value) = payload.pointer(pointer).filter(|v| !v.is_null()) {
            return match parse_timestamp(value) {
                Ok(micros) => Some(micros),
                Err(reason) => {
                    errors.push(error(&path_name(pointer), reason, false));
                    None
                }
            };
        }
    }
    errors.push(error(
        &path_name(pointers[0]),
        "is required in this GitHub payload".into(),
        false,
    ));
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_key, Authenticator};
    use crate::config::ApiKeyConfig;
    use serde_json::json;

    fn with_context<T>(f: impl FnOnce(&Context<'_>) -> T) -> T {
        let auth = Authenticator::new(&[ApiKeyConfig {
            name: "gh".into(),
            sha256: hash_key("k"),
            tenant: "acme".into(),
            team: Some("payments".into()),
            any_team: false,
            rate_limit_per_sec: 10,
            github_webhook_secret: None,
        }]);
        let principal = auth.bearer(Some("Bearer k")).unwrap();
        f(&Context {
            principal: &principal,
            limits: &crate::limits::RecordLimits::default(),
            received_at: 7,
            latest_occurred_at: i64::MAX,
        })
    }

    fn deployment_status(state: &str) -> Value {
        json!({
            "action": "created",
            "deployment_status": {"id": 991, "state": state, "environment": "production",
                "target_url": "https://github.com/acme/checkout/actions/runs/5",
                "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:05:00Z"},
            "deployment": {"id": 77, "sha": "3f78", "ref": "v2.14.0", "environment": "production",
                "payload": {"ticket_ids": ["PAY-1", "PAY-2"]}},
            "repository": {"name": "checkout", "full_name": "acme/checkout"}
        })
    }

    #[test]
    fn a_successful_deployment_status_is_a_succeeded_deploy() {
        let outcome =
            with_context(|c| deploy_from_github(&deployment_status("success"), c)).unwrap();
        let GithubOutcome::Record(deploy) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(deploy.event_id, "github-deployment-status-991");
        assert_eq!(deploy.occurred_at, 1_795_428_300_000_000);
        assert_eq!(
            (deploy.service.as_str(), deploy.environment.as_str()),
            ("checkout", "production")
        );
        assert_eq!(deploy.status, DeployStatus::Succeeded);
        assert_eq!(deploy.version.as_deref(), Some("v2.14.0"));
        assert_eq!(deploy.ticket_ids, ["PAY-1", "PAY-2"]);
        assert_eq!(deploy.team, "payments");
    }

    #[test]
    fn unfinished_deployment_states_are_ignored_and_errors_named() {
        let outcome =
            with_context(|c| deploy_from_github(&deployment_status("in_progress"), c)).unwrap();
        assert!(matches!(outcome, GithubOutcome::Ignored(_)));
        let failed = with_context(|c| deploy_from_github(&deployment_status("error"), c)).unwrap();
        assert!(matches!(
            failed,
            GithubOutcome::Record(DeployEvent {
                status: DeployStatus::Failed,
                ..
            })
        ));
        let mut broken = deployment_status("success");
        broken["deployment_status"]
            .as_object_mut()
            .unwrap()
            .remove("id");
        let errors = with_context(|c| deploy_from_github(&broken, c)).unwrap_err();
        assert_eq!(errors[0].field, "deployment_status.id");
    }

    #[test]
    fn a_closed_bug_issue_is_a_closed_bug_ticket() {
        let payload = json!({
            "action": "closed",
            "issue": {"id": 123456, "number": 45, "title": "Refunds fail", "html_url": "https://github.com/acme/checkout/issues/45",
                "labels": [{"name": "Bug"}], "created_at": "2026-11-20T10:00:00Z",
                "updated_at": "2026-11-23T10:00:00Z", "closed_at": "2026-11-23T09:00:00Z"},
            "repository": {"full_name": "acme/checkout"}
        });
        let GithubOutcome::Record(ticket) =
            with_context(|c| ticket_from_github(&payload, c)).unwrap()
        else {
            panic!()
        };
        assert_eq!(ticket.ticket_id, "acme/checkout#45");
        assert_eq!(
            (ticket.kind, ticket.status),
            (TicketKind::Bug, TicketStatus::Closed)
        );
        assert_eq!(ticket.occurred_at, 1_795_424_400_000_000);
        assert_eq!(
            ticket.title_fingerprint,
            Some(fingerprint::of_text("Refunds fail"))
        );
        let labelled = json!({"action": "labeled"});
        assert!(matches!(
            with_context(|c| ticket_from_github(&labelled, c)).unwrap(),
            GithubOutcome::Ignored(_)
        ));
    }
}
