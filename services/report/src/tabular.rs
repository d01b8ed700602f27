//! `tally report spend | attribution | loops`: reports made of titled tables read from
//! ClickHouse's views and tables as exact text (ClickHouse formats the decimals, so a report
//! shows what the SQL says, to the cent), rendered as a text table, CSV, JSON or a
//! self-contained HTML page with a bar plot per section.
//!
//! The same reports come from `tally up`'s embedded store ([`ReportSource`] with
//! [`Dialect::DataFusion`]): each section's SQL is written here in both dialects, side by
//! side, and the embedded source writes every figure as ClickHouse's text does, so the two
//! stores give the same report byte for byte (a test holds them to it).
use std::fmt::Write;

use serde::Serialize;

use crate::render;
use crate::source::{Dialect, ReportSource, Section};
use crate::{ReportError, Share};

/// A report of sections with notes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub title: String,
    pub sections: Vec<Section>,
    pub notes: Vec<String>,
}

impl Report {
    /// Aligned text tables.
    pub fn table(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for section in &self.sections {
            let rows: Vec<Vec<String>> = section
                .rows
                .iter()
                .map(|r| r.iter().map(|c| render::terminal(c)).collect())
                .collect();
            let widths: Vec<usize> = (0..section.columns.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([section.columns[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| -> String {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let _ = writeln!(out, "\n{}\n{}", section.title, line(&section.columns));
            for row in &rows {
                let _ = writeln!(out, "{}", line(row));
            }
            if rows.is_empty() {
                let _ = writeln!(out, "(none)");
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }

    /// CSV, one block per section preceded by a `# title` line (cells as
    /// [`render::csv_record`] writes them).
    pub fn csv(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            let _ = writeln!(out, "# {}", section.title);
            out.push_str(&render::csv_record(&section.columns));
            for row in &section.rows {
                out.push_str(&render::csv_record(row));
            }
        }
        out
    }

    /// JSON: each section's rows as objects keyed by column.
    pub fn json(&self) -> String {
        let sections: Vec<serde_json::Value> = self
            .sections
            .iter()
            .map(|s| {
                let rows: Vec<serde_json::Value> = s
                    .rows
                    .iter()
                    .map(|r| {
                        serde_json::Value::Object(
                            s.columns
                                .iter()
                                .cloned()
                                .zip(r.iter().cloned().map(serde_json::Value::String))
                                .collect(),
                        )
                    })
                    .collect();
                serde_json::json!({"title": s.title, "rows": rows})
            })
            .collect();
        serde_json::to_string_pretty(
            &serde_json::json!({"title": self.title, "sections": sections, "notes": self.notes}),
        )
        .expect("the report serialises")
    }

    /// A self-contained page (no script, no network) with a bar plot per section.
    pub fn html(&self) -> String {
        let mut body = String::new();
        for section in &self.sections {
            let _ = write!(body, "<h2>{}</h2>", render::html(&section.title));
            if let Some((label, value)) = section.plot {
                let (li, vi) = (
                    section.columns.iter().position(|c| c == label),
                    section.columns.iter().position(|c| c == value),
                );
                if let (Some(li), Some(vi)) = (li, vi) {
                    let points: Vec<(String, f64)> = section
                        .rows
                        .iter()
                        .map(|r| (r[li].clone(), r[vi].parse().unwrap_or(0.0)))
                        .collect();
                    body.push_str(&bar_plot(value, &points));
                }
            }
            let header: String = section
                .columns
                .iter()
                .map(|c| format!("<th>{}</th>", render::html(c)))
                .collect();
            let rows: String = section
                .rows
                .iter()
                .map(|r| {
                    format!(
                        "<tr>{}</tr>",
                        r.iter()
                            .map(|c| format!("<td>{}</td>", render::html(c)))
                            .collect::<String>()
                    )
                })
                .collect();
            let _ = write!(body, "<table><tr>{header}</tr>{rows}</table>");
        }
        let notes: String = self
            .notes
            .iter()
            .map(|n| format!("<li>{}</li>", render::html(n)))
            .collect();
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>body{{font-family:sans-serif;margin:2em;color:#222}}\
             table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head>\
             <body><h1>{title}</h1>{body}<ul>{notes}</ul></body></html>",
            title = render::html(&self.title)
        )
    }
}

fn bar_plot(value_name: &str, points: &[(String, f64)]) -> String {
    let max = points
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut svg = format!(
        "<svg width=\"720\" height=\"{}\"><title>{}</title>",
        20 + points.len() * 24,
        render::html(value_name)
    );
    for (i, (label, value)) in points.iter().enumerate() {
        let width = (value / max * 420.0).max(1.0);
        let y = 5 + i * 24;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"220\" y=\"{y}\" width=\"{width:.1}\" height=\"18\" fill=\"#4e79a7\"/>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{value}</text>",
            y + 14,
            render::html(label),
            225.0 + width,
            y + 14
        );
    }
    svg.push_str("</svg>");
    svg
}

const MONEY_NOTE: &str = "Money is exact: nano-dollars and Decimal(38, 9) dollars, as the SQL views compute them; \
                          calls of unknown models are counted as unpriced and add nothing to cost (never a guessed 0).";

/// Spend per team (and more dimensions), from `llm_calls FINAL`.
pub async fn spend(
    source: &impl ReportSource,
    from: &str,
    to: &str,
    by: &[String],
) -> Result<Report, ReportError> {
    const DIMENSIONS: [&str; 7] = [
        "team",
        "model",
        "provider",
        "user",
        "workflow",
        "region",
        "service_tier",
    ];
    if let Some(bad) = by.iter().find(|d| !DIMENSIONS.contains(&d.as_str())) {
        return Err(ReportError::InvalidArgument(format!(
            "--by: {bad:?} is not one of {}",
            DIMENSIONS.join(", ")
        )));
    }
    // Models are grouped by their canonical name (the call keeps the name as sent).
    let column = |d: &str| match d {
        "model" => "canonical_model".to_string(),
        other => other.to_string(),
    };
    let group = dimensions(by, column);
    let sql = match source.dialect() {
        Dialect::ClickHouse => {
            let dims = dimensions(by, |d| {
                format!("ifNull(toString({}), '') AS {d}", column(d))
            });
            format!(
                "SELECT {dims}, count() AS calls, countIf(unpriced) AS unpriced_calls, sum(toInt128(input_tokens) + output_tokens) AS tokens,
                        sum(toInt128(ifNull(cost_total_nanos, 0))) AS cost_nanos, toString(sum(ifNull(cost_usd, 0))) AS cost_usd
                 FROM llm_calls FINAL WHERE occurred_at >= toDateTime64(?, 6, 'UTC') AND occurred_at < toDateTime64(?, 6, 'UTC')
                 GROUP BY {group} ORDER BY cost_nanos DESC, {group}"
            )
        }
        Dialect::DataFusion => {
            let dims = dimensions(by, |d| {
                format!("coalesce(CAST({} AS VARCHAR), '') AS {d}", column(d))
            });
            format!(
                "SELECT {dims}, count(*) AS calls, sum(CASE WHEN unpriced THEN 1 ELSE 0 END) AS unpriced_calls,
                        sum(CAST(input_tokens + output_tokens AS DECIMAL(38, 0))) AS tokens,
                        sum(CAST(coalesce(cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos,
                        scale9(sum(CAST(coalesce(cost_total_nanos, 0) AS DECIMAL(38, 0)))) AS cost_usd
                 FROM llm_calls WHERE occurred_at >= utc(?) AND occurred_at < utc(?)
                 GROUP BY {group} ORDER BY cost_nanos DESC, {group}"
            )
        }
    };
    let label: &'static str = match by.first().map(String::as_str) {
        Some("model") => "model",
        Some("provider") => "provider",
        Some("user") => "user",
        Some("workflow") => "workflow",
        Some("region") => "region",
        Some("service_tier") => "service_tier",
        _ => "team",
    };
    let section = source
        .section(
            &format!("Spend by {}", by.join(" / ")),
            &sql,
            &[from, to],
            Some((label, "cost_usd")),
        )
        .await?;
    Ok(Report {
        title: format!("LLM spend, {from} to {to}"),
        sections: vec![section],
        notes: vec![MONEY_NOTE.into()],
    })
}

fn dimensions(by: &[String], column: impl Fn(&str) -> String) -> String {
    by.iter().map(|d| column(d)).collect::<Vec<_>>().join(", ")
}

/// The ClickHouse report SQL's twins over `tally up`'s views (`sql/datafusion/`).
const COST_PER_DEPLOY_DATAFUSION: &str = "
    SELECT team, service, environment, deploy_id, coalesce(version, '') AS version, deployed_at,
           team_calls, team_unpriced_calls, team_cost_usd, ticket_cost_usd
    FROM cost_per_deploy WHERE deployed_at >= utc(?) AND deployed_at < utc(?)
    ORDER BY deploy_id";
const COST_PER_TICKET_DATAFUSION: &str = "
    SELECT team, ticket_id, kind, closed_at, attributed_cost_usd, estimate_hours, human_cost_usd
    FROM cost_per_ticket('{share}', {rate}) WHERE closed_at >= utc(?) AND closed_at < utc(?)
    ORDER BY ticket_id";
const TEAM_EFFICIENCY_DATAFUSION: &str = "
    SELECT team, month, tokens, cost_usd, deploys, closed_features, closed_bugs,
           cost_per_feature_usd, cost_per_deploy_usd
    FROM team_efficiency WHERE month >= CAST(? AS DATE) AND month < CAST(? AS DATE)
    ORDER BY team, month";

/// Cost per deploy, per closed ticket and team efficiency, from the views. The share goes to
/// `cost_per_ticket` as its exact decimal text (a `Decimal64(9)` in ClickHouse, a string the
/// DataFusion table function reads in billionths).
pub async fn attribution(
    source: &impl ReportSource,
    from: &str,
    to: &str,
    unattributed_share: Share,
    loaded_hourly_rate_usd: f64,
) -> Result<Report, ReportError> {
    let clickhouse = source.dialect() == Dialect::ClickHouse;
    let deploys_sql = if clickhouse {
        "SELECT team, service, environment, deploy_id, ifNull(version, '') AS version, toString(deployed_at) AS deployed_at,
                team_calls, team_unpriced_calls, toString(team_cost_usd) AS team_cost_usd, toString(ticket_cost_usd) AS ticket_cost_usd
         FROM (SELECT * FROM cost_per_deploy WHERE deployed_at >= toDateTime64(?, 6, 'UTC') AND deployed_at < toDateTime64(?, 6, 'UTC'))
         ORDER BY deploy_id".to_string()
    } else {
        COST_PER_DEPLOY_DATAFUSION.to_string()
    };
    let deploys = source
        .section(
            "Cost per deploy (team spend since the previous deploy of the service; spend tagged with its tickets)",
            &deploys_sql,
            &[from, to],
            Some(("deploy_id", "team_cost_usd")),
        )
        .await?;
    let share = unattributed_share.to_string();
    let rate = loaded_hourly_rate_usd.to_string();
    let tickets_sql = if clickhouse {
        format!(
            "SELECT team, ticket_id, kind, toString(closed_at) AS closed_at, toString(attributed_cost_usd) AS attributed_cost_usd,
                    ifNull(toString(estimate_hours), '') AS estimate_hours, ifNull(toString(human_cost_usd), '') AS human_cost_usd
             FROM (SELECT * FROM cost_per_ticket(unattributed_share = {share}, loaded_hourly_rate_usd = {rate})
                   WHERE closed_at >= toDateTime64(?, 6, 'UTC') AND closed_at < toDateTime64(?, 6, 'UTC'))
             ORDER BY ticket_id"
        )
    } else {
        COST_PER_TICKET_DATAFUSION
            .replace("{share}", &share)
            .replace("{rate}", &format!("{loaded_hourly_rate_usd:?}"))
    };
    let tickets = source
        .section(
            &format!("Cost per closed ticket (tagged spend + {share} of untagged team spend while open; estimate x ${rate}/h)"),
            &tickets_sql,
            &[from, to],
            Some(("ticket_id", "attributed_cost_usd")),
        )
        .await?;
    let efficiency_sql = if clickhouse {
        "SELECT team, toString(month) AS month, tokens, toString(cost_usd) AS cost_usd, deploys, closed_features, closed_bugs,
                ifNull(toString(cost_per_feature_usd), '') AS cost_per_feature_usd, ifNull(toString(cost_per_deploy_usd), '') AS cost_per_deploy_usd
         FROM (SELECT * FROM team_efficiency WHERE month >= toDate(?) AND month < toDate(?)) ORDER BY team, month".to_string()
    } else {
        TEAM_EFFICIENCY_DATAFUSION.to_string()
    };
    let efficiency = source
        .section(
            "Team efficiency per month",
            &efficiency_sql,
            &[from, to],
            Some(("team", "cost_usd")),
        )
        .await?;
    Ok(Report {
        title: format!("What the spend bought, {from} to {to}"),
        sections: vec![deploys, tickets, efficiency],
        notes: vec![MONEY_NOTE.into()],
    })
}

/// Runaway-agent signals, their latest state each, from `loop_signals FINAL`. A signal's
/// latest record is the last emitted, and of records emitted together the later state
/// (open, update, resolved).
pub async fn loops(
    source: &impl ReportSource,
    from: &str,
    to: &str,
) -> Result<Report, ReportError> {
    let sql = match source.dialect() {
        Dialect::ClickHouse => {
            "SELECT team, signal_type,
                    argMax(state, (emitted_at, state_rank)) AS state,
                    argMax(severity, (emitted_at, state_rank)) AS severity,
                    ifNull(any(session_id), '') AS session, max(evidence_calls) AS calls,
                    toString(toDecimal128(max(cost_nanos_burned), 9) / 1000000000) AS cost_usd,
                    toString(toDecimal128(max(co2e_ug_burned), 9) / 1000000000) AS co2e_kg,
                    argMax(explanation, (emitted_at, state_rank)) AS explanation
             FROM (SELECT *, indexOf(['open', 'update', 'resolved'], state) AS state_rank FROM loop_signals FINAL
                   WHERE first_event_at >= toDateTime64(?, 6, 'UTC') AND first_event_at < toDateTime64(?, 6, 'UTC'))
             GROUP BY signal_id, team, signal_type ORDER BY max(cost_nanos_burned) DESC, signal_id"
        }
        Dialect::DataFusion => {
            "SELECT team, signal_type,
                    last_value(state ORDER BY emitted_at, CASE state WHEN 'open' THEN 1 WHEN 'update' THEN 2 ELSE 3 END) AS state,
                    last_value(severity ORDER BY emitted_at, CASE state WHEN 'open' THEN 1 WHEN 'update' THEN 2 ELSE 3 END) AS severity,
                    coalesce(max(session_id), '') AS session, max(evidence_calls) AS calls,
                    scale9(max(cost_nanos_burned)) AS cost_usd, scale9(max(co2e_ug_burned)) AS co2e_kg,
                    last_value(explanation ORDER BY emitted_at, CASE state WHEN 'open' THEN 1 WHEN 'update' THEN 2 ELSE 3 END) AS explanation
             FROM loop_signals WHERE first_event_at >= utc(?) AND first_event_at < utc(?)
             GROUP BY signal_id, team, signal_type ORDER BY max(cost_nanos_burned) DESC, signal_id"
        }
    };
    let signals = source
        .section(
            "Runaway-agent signals (latest state of each)",
            sql,
            &[from, to],
            Some(("session", "cost_usd")),
        )
        .await?;
    Ok(Report {
        title: format!("Runaway agents, {from} to {to}"),
        sections: vec![signals],
        notes: vec![
            "Cost and CO2e are what each loop burned since it began, as the detector counted them."
                .into(),
        ],
    })
}
