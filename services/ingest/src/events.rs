//! Native JSON deploys and tickets (field names of the `DeployEvent` and `TicketEvent`
//! schemas) → validated records. A ticket's `title`, if sent, becomes `title_fingerprint`.
use serde_json::Value;
use tally_contract::records::{DeployEvent, DeployStatus, TicketEvent, TicketKind, TicketStatus};

use crate::fingerprint;
use crate::llm_call::{derived_event_id, resolve_team, Context};
use crate::record::{FieldError, Record};

/// Reads one native deploy record.
pub fn deploy_from_json(
    value: Value,
    context: &Context<'_>,
) -> Result<DeployEvent, Vec<FieldError>> {
    let content = fingerprint::canonical_json(&value);
    let mut r = Record::new(value)?;
    let event_id = r.string("event_id");
    r.take("received_at");
    check_tenant(&mut r, context);
    let deploy = DeployEvent {
        event_id: String::new(),
        occurred_at: r.required_timestamp("occurred_at").unwrap_or_default(),
        received_at: context.received_at,
        tenant: context.principal.tenant.clone(),
        team: resolve_team(&mut r, context.principal).unwrap_or_default(),
        service: r.required_string("service").unwrap_or_default(),
        environment: r.required_string("environment").unwrap_or_default(),
        version: r.string("version"),
        commit_sha: r.string("commit_sha"),
        status: required_symbol(&mut r, "status").unwrap_or(DeployStatus::Succeeded),
        ticket_ids: r.strings("ticket_ids").unwrap_or_default(),
        url: r.string("url"),
    };
    finish(r, deploy, event_id, context, &content, |d, id| {
        d.event_id = id
    })
}

/// Reads one native ticket record.
pub fn ticket_from_json(
    value: Value,
    context: &Context<'_>,
) -> Result<TicketEvent, Vec<FieldError>> {
    let mut value = value;
    let title_fingerprint = value
        .as_object_mut()
        .and_then(|map| map.remove("title"))
        .filter(|title| !title.is_null())
        .map(|title| fingerprint::of_value(&title));
    let content = fingerprint::canonical_json(&value) + title_fingerprint.as_deref().unwrap_or("");
    let mut r = Record::new(value)?;
    let event_id = r.string("event_id");
    r.take("received_at");
    check_tenant(&mut r, context);
    let ticket = TicketEvent {
        event_id: String::new(),
        occurred_at: r.required_timestamp("occurred_at").unwrap_or_default(),
        received_at: context.received_at,
        tenant: context.principal.tenant.clone(),
        ticket_id: r.required_string("ticket_id").unwrap_or_default(),
        team: resolve_team(&mut r, context.principal).unwrap_or_default(),
        kind: required_symbol(&mut r, "kind").unwrap_or(TicketKind::Feature),
        status: required_symbol(&mut r, "status").unwrap_or(TicketStatus::Opened),
        title_fingerprint: r.string("title_fingerprint").or(title_fingerprint),
        estimate_hours: r.non_negative_number("estimate_hours"),
        url: r.string("url"),
    };
    finish(r, ticket, event_id, context, &content, |t, id| {
        t.event_id = id
    })
}

fn check_tenant(r: &mut Record, context: &Context<'_>) {
    if let Some(tenant) = r.string("tenant") {
        if tenant != context.principal.tenant {
            r.forbidden("tenant", format!("{tenant:?} is not the API key's tenant"));
        }
    }
}

fn required_symbol<T: std::str::FromStr<Err = String>>(r: &mut Record, key: &str) -> Option<T> {
    if !r.has(key) {
        r.error(key, "is required");
        return None;
    }
    r.symbol(key)
}

fn finish<T>(
    r: Record,
    mut record: T,
    event_id: Option<String>,
    context: &Context<'_>,
    content: &str,
    set_id: impl FnOnce(&mut T, String),
) -> Result<T, Vec<FieldError>> {
    let errors = r.finish();
    if !errors.is_empty() {
        return Err(errors);
    }
    let id = event_id.unwrap_or_else(|| derived_event_id(&context.principal.tenant, content));
    set_id(&mut record, id);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_key, Authenticator};
    use crate::config::ApiKeyConfig;
    use serde_json::json;

    fn with_context<T>(f: impl FnOnce(&Context<'_>) -> T) -> T {
        let auth = Authenticator::new(&[ApiKeyConfig {
            name: "ci".into(),
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
            received_at: 5,
            latest_occurred_at: i64::MAX,
        })
    }

    #[test]
    fn a_native_deploy_is_read_field_by_field() {
        let deploy = with_context(|c| {
            deploy_from_json(
                json!({"event_id": "d1", "occurred_at": 1_763_892_000_000i64, "service": "checkout",
                       "environment": "production", "version": "v2", "commit_sha": "abc",
                       "status": "rolled_back", "ticket_ids": ["PAY-1"], "url": "https://ci/1"}),
                c,
            )
        })
        .unwrap();
        assert_eq!(
            deploy,
            DeployEvent {
                event_id: "d1".into(),
                occurred_at: 1_763_892_000_000_000,
                received_at: 5,
                tenant: "acme".into(),
                team: "payments".into(),
                service: "checkout".into(),
                environment: "production".into(),
                version: Some("v2".into()),
                commit_sha: Some("abc".into()),
                status: DeployStatus::RolledBack,
                ticket_ids: vec!["PAY-1".into()],
                url: Some("https://ci/1".into()),
            }
        );
    }

    #[test]
    fn a_ticket_title_is_fingerprinted_and_required_fields_are_named() {
        let ticket = with_context(|c| {
            ticket_from_json(
                json!({"occurred_at": "2026-11-23T10:00:00Z", "ticket_id": "PAY-1", "kind": "bug",
                       "status": "closed", "title": "Refunds fail for EUR", "estimate_hours": 6}),
                c,
            )
        })
        .unwrap();
        assert_eq!(
            ticket.title_fingerprint,
            Some(fingerprint::of_text("Refunds fail for EUR"))
        );
        assert_eq!(
            (ticket.kind, ticket.status),
            (TicketKind::Bug, TicketStatus::Closed)
        );
        assert_eq!(ticket.estimate_hours, Some(6.0));
        assert!(ticket.event_id.starts_with("derived-"));

        let errors =
            with_context(|c| ticket_from_json(json!({"ticket_id": "PAY-1", "kind": "epic"}), c))
                .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["occurred_at", "kind", "status"]);
    }
}
