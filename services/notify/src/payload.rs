//! The body each kind of destination receives for an alert: pure, no I/O.
//!
//! - [`webhook`]: the `Alert` record as JSON — its fields as `schemas/Alert.avsc` names them,
//!   enums as their symbols, money in nano-dollars, timestamps in epoch microseconds — plus
//!   `occurred_at_rfc3339` and `emitted_at_rfc3339`.
//! - [`slack`]: a Slack incoming-webhook message, `text` (the notification and fallback) and
//!   `blocks` (header, message, fields, context). Firing alerts lead with their severity's
//!   emoji; resolved ones with `:white_check_mark: RESOLVED`.
//! - [`alertmanager`]: a one-element array for Alertmanager's `POST /api/v2/alerts`, labelled
//!   by `alert_id` so the firing and the resolve are one Alertmanager alert.
use std::collections::BTreeMap;
use std::time::Duration;
use tally_contract::clock::rfc3339;

use serde_json::{json, Map, Value};
use tally_contract::records::{Alert, AlertKind, AlertState, Micros, Severity};

use crate::config::DestinationKind;

/// Longest Slack header text (Slack refuses longer ones).
const SLACK_HEADER_MAX: usize = 150;
/// Longest Slack section text we send (Slack's limit is 3000).
const SLACK_SECTION_MAX: usize = 2_900;

/// The body for a destination of `kind`. `now` (epoch microseconds) and `hold` only matter to
/// Alertmanager: a firing alert ends at `now + hold` unless renewed or resolved.
pub fn body(kind: DestinationKind, alert: &Alert, now: Micros, hold: Duration) -> Value {
    match kind {
        DestinationKind::Webhook => webhook(alert),
        DestinationKind::Slack => slack(alert),
        DestinationKind::Alertmanager => alertmanager(alert, now, hold),
    }
}

/// The generic webhook body: the record's fields and two RFC 3339 timestamps.
pub fn webhook(alert: &Alert) -> Value {
    let mut body = serde_json::to_value(alert).unwrap_or_else(|_| json!({}));
    if let Value::Object(fields) = &mut body {
        fields.insert(
            "occurred_at_rfc3339".into(),
            rfc3339(alert.occurred_at).into(),
        );
        fields.insert(
            "emitted_at_rfc3339".into(),
            rfc3339(alert.emitted_at).into(),
        );
    }
    body
}

/// A Slack incoming-webhook message.
pub fn slack(alert: &Alert) -> Value {
    let (emoji, label) = match alert.state {
        AlertState::Resolved => (":white_check_mark:", "RESOLVED"),
        AlertState::Firing => severity_badge(alert.severity),
    };
    let headline = format!("{emoji} {label}: {}", alert.title);
    let about = about_line(alert);
    let text = format!(
        "{emoji} *{label}*: {}\n{}\n{}",
        slack_escape(&alert.title),
        slack_escape(&about),
        slack_escape(&alert.message)
    );
    let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", slack_escape(value))});
    let mut fields = vec![field("Tenant", &alert.tenant)];
    if let Some(team) = &alert.team {
        fields.push(field("Team", team));
    }
    fields.push(field("Subject", &alert.subject));
    fields.push(field(
        "Severity",
        &format!("{} ({})", alert.severity, alert.state),
    ));
    json!({
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&headline, SLACK_HEADER_MAX), "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&slack_escape(&alert.message), SLACK_SECTION_MAX)}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                "{} · alert `{}` · {} {}",
                alert.kind,
                slack_escape(&alert.alert_id),
                if alert.state == AlertState::Resolved { "resolved" } else { "since" },
                rfc3339(alert.occurred_at)
            )}]}
        ]
    })
}

/// The Alertmanager v2 body: one alert, identified by its labels.
pub fn alertmanager(alert: &Alert, now: Micros, hold: Duration) -> Value {
    let ends_at = match alert.state {
        // Alertmanager resolves an alert whose endsAt has passed: hold it that long, so only
        // the resolve (or a silence of the detectors this long) ends it.
        AlertState::Firing => now.saturating_add(hold.as_micros() as i64),
        AlertState::Resolved => alert.occurred_at,
    };
    let mut annotations = Map::new();
    annotations.insert("summary".into(), alert.title.clone().into());
    annotations.insert("description".into(), alert.message.clone().into());
    annotations.insert("subject".into(), alert.subject.clone().into());
    if let Some(source_id) = &alert.source_id {
        annotations.insert("source_id".into(), source_id.clone().into());
    }
    json!([{
        "labels": alertmanager_labels(alert),
        "annotations": annotations,
        // Alertmanager keeps the earliest startsAt of an alert it merges, so the resolve may
        // carry its own time: the alert's start stays the firing's.
        "startsAt": rfc3339(alert.occurred_at),
        "endsAt": rfc3339(ends_at),
    }])
}

/// Alertmanager's `alertname` for an alert kind.
pub fn alertname(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::BudgetThreshold => "TallyBudgetThreshold",
        AlertKind::BudgetBurnRate => "TallyBudgetBurnRate",
        AlertKind::UsageReview => "TallyUsageReview",
        AlertKind::LoopSignal => "TallyLoopSignal",
    }
}

/// The labels of the Alertmanager alert: tally's own, then the alert's (names sanitised;
/// tally's win a clash, and of two that sanitise alike the first in name order wins).
/// Empty values are left out: Alertmanager treats them as absent.
pub fn alertmanager_labels(alert: &Alert) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".into(), alertname(alert.kind).into());
    labels.insert("alert_id".into(), alert.alert_id.clone());
    labels.insert("severity".into(), alert.severity.to_string());
    labels.insert("tenant".into(), alert.tenant.clone());
    if let Some(team) = &alert.team {
        labels.insert("team".into(), team.clone());
    }
    labels.insert("kind".into(), alert.kind.to_string());
    for (name, value) in &alert.labels {
        if let Some(name) = label_name(name) {
            labels.entry(name).or_insert_with(|| value.clone());
        }
    }
    labels.retain(|_, value| !value.is_empty());
    labels
}

/// A valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`) for `raw`: other characters
/// become `_`, and a leading digit gets a `_` before it. None for an empty name.
pub fn label_name(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let mut name: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    Some(name)
}

fn severity_badge(severity: Severity) -> (&'static str, &'static str) {
    match severity {
        Severity::Critical => (":rotating_light:", "CRITICAL"),
        Severity::Warning => (":warning:", "WARNING"),
        Severity::Info => (":information_source:", "INFO"),
    }
}

/// "Team payments · payments monthly budget" (the tenant when there is no team).
fn about_line(alert: &Alert) -> String {
    match &alert.team {
        Some(team) => format!("Team {team} · {}", alert.subject),
        None => format!("Tenant {} · {}", alert.tenant, alert.subject),
    }
}

/// Slack's mrkdwn escapes: `&`, `<` and `>` (so a subject cannot become a link or mention).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, the last an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T10:00:00.123456Z
    const OCCURRED: Micros = 1_795_428_000_123_456;
    const NOW: Micros = 1_795_428_060_000_000;

    fn budget_alert(state: AlertState) -> Alert {
        Alert {
            alert_id: "budget_threshold/acme/payments/monthly/1795046400000000/80".into(),
            kind: AlertKind::BudgetThreshold,
            state,
            severity: Severity::Warning,
            tenant: "acme".into(),
            team: Some("payments".into()),
            subject: "monthly".into(),
            title: "payments reached 80% of budget monthly (2026-11)".into(),
            message: "Spent $40,012.34 of $50,000.00 (80.0%).".into(),
            source_id: Some("budget/acme/payments/monthly".into()),
            amount_nanos: Some(40_012_340_000_000),
            limit_nanos: Some(50_000_000_000_000),
            labels: [
                ("budget".to_string(), "monthly".to_string()),
                ("period".to_string(), "2026-11".to_string()),
            ]
            .into(),
            occurred_at: OCCURRED,
            emitted_at: OCCURRED + 1_000_000,
        }
    }

    fn loop_alert(state: AlertState) -> Alert {
        Alert {
            alert_id: "loop_signal/retry_storm/acme/run-42".into(),
            kind: AlertKind::LoopSignal,
            state,
            severity: Severity::Critical,
            tenant: "acme".into(),
            team: None,
            subject: "session run-42 <agent planner>".into(),
            title: "Retry storm in session run-42".into(),
            message: "31 calls & $12.40 in 5 minutes.".into(),
            source_id: None,
            amount_nanos: None,
            limit_nanos: None,
            labels: [
                ("signal-type".to_string(), "retry_storm".to_string()),
                ("9lives".to_string(), "x".to_string()),
                ("severity".to_string(), "ignored".to_string()),
                ("workflow".to_string(), String::new()),
            ]
            .into(),
            occurred_at: OCCURRED,
            emitted_at: OCCURRED,
        }
    }

    #[test]
    fn webhook_is_the_record_with_readable_times() {
        assert_eq!(
            webhook(&budget_alert(AlertState::Firing)),
            json!({
                "alert_id": "budget_threshold/acme/payments/monthly/1795046400000000/80",
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
                "labels": {"budget": "monthly", "period": "2026-11"},
                "occurred_at": 1_795_428_000_123_456i64,
                "emitted_at": 1_795_428_001_123_456i64,
                "occurred_at_rfc3339": "2026-11-23T10:00:00.123456Z",
                "emitted_at_rfc3339": "2026-11-23T10:00:01.123456Z"
            })
        );
        assert_eq!(
            webhook(&loop_alert(AlertState::Resolved)),
            json!({
                "alert_id": "loop_signal/retry_storm/acme/run-42",
                "kind": "loop_signal",
                "state": "resolved",
                "severity": "critical",
                "tenant": "acme",
                "team": null,
                "subject": "session run-42 <agent planner>",
                "title": "Retry storm in session run-42",
                "message": "31 calls & $12.40 in 5 minutes.",
                "source_id": null,
                "amount_nanos": null,
                "limit_nanos": null,
                "labels": {"signal-type": "retry_storm", "9lives": "x", "severity": "ignored", "workflow": ""},
                "occurred_at": 1_795_428_000_123_456i64,
                "emitted_at": 1_795_428_000_123_456i64,
                "occurred_at_rfc3339": "2026-11-23T10:00:00.123456Z",
                "emitted_at_rfc3339": "2026-11-23T10:00:00.123456Z"
            })
        );
    }

    #[test]
    fn slack_firing_leads_with_severity() {
        assert_eq!(
            slack(&budget_alert(AlertState::Firing)),
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
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "budget_threshold · alert `budget_threshold/acme/payments/monthly/1795046400000000/80` · since 2026-11-23T10:00:00.123456Z"}]}
                ]
            })
        );
    }

    #[test]
    fn slack_resolved_is_marked_and_text_is_escaped() {
        assert_eq!(
            slack(&loop_alert(AlertState::Resolved)),
            json!({
                "text": ":white_check_mark: *RESOLVED*: Retry storm in session run-42\nTenant acme · session run-42 &lt;agent planner&gt;\n31 calls &amp; $12.40 in 5 minutes.",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": ":white_check_mark: RESOLVED: Retry storm in session run-42", "emoji": true}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "31 calls &amp; $12.40 in 5 minutes."}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Tenant*\nacme"},
                        {"type": "mrkdwn", "text": "*Subject*\nsession run-42 &lt;agent planner&gt;"},
                        {"type": "mrkdwn", "text": "*Severity*\ncritical (resolved)"}
                    ]},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "loop_signal · alert `loop_signal/retry_storm/acme/run-42` · resolved 2026-11-23T10:00:00.123456Z"}]}
                ]
            })
        );
        let firing = slack(&loop_alert(AlertState::Firing));
        assert!(firing["text"]
            .as_str()
            .unwrap()
            .starts_with(":rotating_light: *CRITICAL*: Retry storm"));
    }

    #[test]
    fn slack_cuts_a_long_title_to_the_header_limit() {
        let mut alert = budget_alert(AlertState::Firing);
        alert.title = "x".repeat(400);
        let header = slack(&alert)["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(header.chars().count(), 150);
        assert!(header.ends_with('…'));
    }

    #[test]
    fn alertmanager_firing_is_held_and_labelled_by_alert_id() {
        let hold = Duration::from_secs(86_400);
        assert_eq!(
            alertmanager(&budget_alert(AlertState::Firing), NOW, hold),
            json!([{
                "labels": {
                    "alertname": "TallyBudgetThreshold",
                    "alert_id": "budget_threshold/acme/payments/monthly/1795046400000000/80",
                    "severity": "warning",
                    "tenant": "acme",
                    "team": "payments",
                    "kind": "budget_threshold",
                    "budget": "monthly",
                    "period": "2026-11"
                },
                "annotations": {
                    "summary": "payments reached 80% of budget monthly (2026-11)",
                    "description": "Spent $40,012.34 of $50,000.00 (80.0%).",
                    "subject": "monthly",
                    "source_id": "budget/acme/payments/monthly"
                },
                "startsAt": "2026-11-23T10:00:00.123456Z",
                "endsAt": "2026-11-24T10:01:00Z"
            }])
        );
    }

    #[test]
    fn alertmanager_resolved_ends_at_the_resolve_with_sanitised_labels() {
        let mut resolved = loop_alert(AlertState::Resolved);
        resolved.occurred_at = OCCURRED + 600_000_000;
        assert_eq!(
            alertmanager(&resolved, NOW, Duration::from_secs(86_400)),
            json!([{
                "labels": {
                    "alertname": "TallyLoopSignal",
                    "alert_id": "loop_signal/retry_storm/acme/run-42",
                    "severity": "critical",
                    "tenant": "acme",
                    "kind": "loop_signal",
                    "signal_type": "retry_storm",
                    "_9lives": "x"
                },
                "annotations": {
                    "summary": "Retry storm in session run-42",
                    "description": "31 calls & $12.40 in 5 minutes.",
                    "subject": "session run-42 <agent planner>"
                },
                "startsAt": "2026-11-23T10:10:00.123456Z",
                "endsAt": "2026-11-23T10:10:00.123456Z"
            }])
        );
    }

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(label_name("signal.type").as_deref(), Some("signal_type"));
        assert_eq!(label_name("1st").as_deref(), Some("_1st"));
        assert_eq!(label_name("ok_Name9").as_deref(), Some("ok_Name9"));
        assert_eq!(label_name("é").as_deref(), Some("_"));
        assert_eq!(label_name(""), None);
    }

    #[test]
    fn every_kind_has_an_alertname() {
        let names: Vec<&str> = AlertKind::ALL.iter().map(|k| alertname(*k)).collect();
        assert_eq!(
            names,
            [
                "TallyBudgetThreshold",
                "TallyBudgetBurnRate",
                "TallyUsageReview",
                "TallyLoopSignal"
            ]
        );
    }

    #[test]
    fn body_picks_the_shape_of_the_destination() {
        let alert = budget_alert(AlertState::Firing);
        let hold = Duration::from_secs(60);
        assert_eq!(
            body(DestinationKind::Webhook, &alert, NOW, hold),
            webhook(&alert)
        );
        assert_eq!(
            body(DestinationKind::Slack, &alert, NOW, hold),
            slack(&alert)
        );
        assert_eq!(
            body(DestinationKind::Alertmanager, &alert, NOW, hold),
            alertmanager(&alert, NOW, hold)
        );
    }
}
