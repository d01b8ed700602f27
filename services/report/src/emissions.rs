//! `tally report emissions`: the report a sustainability officer hands on, read from the
//! `emissions_monthly` view (so it agrees with the SQL by construction): totals low / central /
//! high, a breakdown, the method and data versions, the assumptions in words, and — as HTML —
//! a self-contained page with plots (inline SVG, no script, no network).
use std::collections::BTreeMap;
use std::fmt::Write;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::source::ReportSource;
use crate::{render, ReportError};

/// What to report on.
#[derive(Debug, Clone)]
pub struct EmissionsQuery {
    /// First month (its first day, `YYYY-MM-DD`), inclusive.
    pub from: String,
    /// End (`YYYY-MM-DD`), exclusive: months that start before it.
    pub to: String,
    /// Breakdown dimensions, of team, model, provider, region, month.
    pub by: Vec<String>,
}

const DIMENSIONS: [&str; 5] = ["team", "model", "provider", "region", "month"];

/// One row of the view, as the report reads it (decimals as exact text).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct EmissionsRow {
    pub month: String,
    pub team: String,
    pub model: String,
    pub provider: String,
    pub region: String,
    pub calls: u64,
    pub tokens: i128,
    /// Low, central, high.
    pub energy_uwh: Vec<i128>,
    /// Low, central, high.
    pub co2e_ug: Vec<i128>,
    pub carbon_method_versions: Vec<String>,
    pub grid_dataset_versions: Vec<String>,
    pub grid_sources: Vec<String>,
}

/// The report, ready to print in any format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmissionsReport {
    pub from: String,
    pub to: String,
    pub by: Vec<String>,
    pub totals: Totals,
    pub breakdown: Vec<(Vec<String>, Totals)>,
    pub by_month_and_team: BTreeMap<String, BTreeMap<String, i128>>,
    pub carbon_method_versions: Vec<String>,
    pub grid_dataset_versions: Vec<String>,
    pub grid_sources: Vec<String>,
    pub assumptions: Vec<String>,
}

/// Calls, tokens, energy (µWh) and CO2e (µg), low / central / high.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub calls: u64,
    pub tokens: i128,
    pub energy_uwh: [i128; 3],
    pub co2e_ug: [i128; 3],
}

impl Totals {
    fn add(&mut self, row: &EmissionsRow) {
        self.calls += row.calls;
        self.tokens += row.tokens;
        for i in 0..3 {
            self.energy_uwh[i] += row.energy_uwh.get(i).copied().unwrap_or(0);
            self.co2e_ug[i] += row.co2e_ug.get(i).copied().unwrap_or(0);
        }
    }
}

/// Reads the view's rows for the query's months from `source` and builds the report.
pub async fn emissions(
    source: &impl ReportSource,
    query: &EmissionsQuery,
) -> Result<EmissionsReport, ReportError> {
    check_dimensions(&query.by)?;
    let rows = source.emissions_rows(&query.from, &query.to).await?;
    Ok(build(query, &rows))
}

/// The rows [`emissions`] reads, from ClickHouse's `emissions_monthly` view. The view keeps
/// kWh and kg as exact decimals; micro-units as integers keep them exact here.
pub const EMISSIONS_ROWS_CLICKHOUSE: &str = "SELECT toString(month) AS month, team, model, provider, region, calls, tokens,
            [toInt128(energy_kwh_low * 1000000000), toInt128(energy_kwh_central * 1000000000), toInt128(energy_kwh_high * 1000000000)] AS energy_uwh,
            [toInt128(co2e_kg_low * 1000000000), toInt128(co2e_kg_central * 1000000000), toInt128(co2e_kg_high * 1000000000)] AS co2e_ug,
            carbon_method_versions, grid_dataset_versions, grid_sources
     FROM (SELECT * FROM emissions_monthly WHERE month >= toDate(?) AND month < toDate(?))
     ORDER BY month, team, model, provider, region, tenant";

/// The rows [`emissions`] reads, from `tally up`'s `emissions_monthly` view
/// (`sql/datafusion/views.sql`), in DataFusion's dialect.
pub const EMISSIONS_ROWS_DATAFUSION: &str = "
    SELECT month, team, model, provider, region, calls, tokens,
           make_array(CAST(energy_kwh_low * 1000000000 AS DECIMAL(38, 0)), CAST(energy_kwh_central * 1000000000 AS DECIMAL(38, 0)),
                      CAST(energy_kwh_high * 1000000000 AS DECIMAL(38, 0))) AS energy_uwh,
           make_array(CAST(co2e_kg_low * 1000000000 AS DECIMAL(38, 0)), CAST(co2e_kg_central * 1000000000 AS DECIMAL(38, 0)),
                      CAST(co2e_kg_high * 1000000000 AS DECIMAL(38, 0))) AS co2e_ug,
           carbon_method_versions, grid_dataset_versions, grid_sources
    FROM emissions_monthly WHERE month >= CAST(? AS DATE) AND month < CAST(? AS DATE)
    ORDER BY month, team, model, provider, region, tenant";

/// Checks the breakdown dimensions.
pub fn check_dimensions(by: &[String]) -> Result<(), ReportError> {
    match by.iter().find(|d| !DIMENSIONS.contains(&d.as_str())) {
        Some(bad) => Err(ReportError::InvalidArgument(format!(
            "--by: {bad:?} is not one of {}",
            DIMENSIONS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Builds the report from the view's rows (pure).
pub fn build(query: &EmissionsQuery, rows: &[EmissionsRow]) -> EmissionsReport {
    let mut totals = Totals::default();
    let mut breakdown: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
    let mut by_month_and_team: BTreeMap<String, BTreeMap<String, i128>> = BTreeMap::new();
    let (mut methods, mut datasets, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        totals.add(row);
        let key = query
            .by
            .iter()
            .map(|d| match d.as_str() {
                "team" => row.team.clone(),
                "model" => row.model.clone(),
                "provider" => row.provider.clone(),
                "region" => row.region.clone(),
                _ => row.month.clone(),
            })
            .collect();
        breakdown.entry(key).or_default().add(row);
        *by_month_and_team
            .entry(row.month.clone())
            .or_default()
            .entry(row.team.clone())
            .or_default() += row.co2e_ug.get(1).copied().unwrap_or(0);
        methods.extend(row.carbon_method_versions.iter().cloned());
        datasets.extend(row.grid_dataset_versions.iter().cloned());
        sources.extend(row.grid_sources.iter().cloned());
    }
    for list in [&mut methods, &mut datasets, &mut sources] {
        list.sort();
        list.dedup();
    }
    let mut breakdown: Vec<(Vec<String>, Totals)> = breakdown.into_iter().collect();
    breakdown.sort_by(|a, b| b.1.co2e_ug[1].cmp(&a.1.co2e_ug[1]).then(a.0.cmp(&b.0)));
    EmissionsReport {
        from: query.from.clone(),
        to: query.to.clone(),
        by: query.by.clone(),
        totals,
        breakdown,
        by_month_and_team,
        assumptions: assumptions(&methods, &datasets, &sources),
        carbon_method_versions: methods,
        grid_dataset_versions: datasets,
        grid_sources: sources,
    }
}

fn assumptions(methods: &[String], datasets: &[String], sources: &[String]) -> Vec<String> {
    let mut out = vec![
        "Energy per call = (input tokens × Wh per input token + output tokens × Wh per output token) × PUE (method simple), \
         or EcoLogits 0.11's request model on output tokens (method ecologits). Low / central / high follow the \
         model-size uncertainty of EcoLogits' parameter estimates."
            .to_string(),
        "Wh per output token per model is derived from EcoLogits 0.11.3 (GPU energy regression on active parameters, \
         GPU count from model memory, server share over generation time); an input token counts as 2% / 5% / 10% \
         of an output token (tally's stated assumption); PUE per provider from EcoLogits (OpenAI 1.20, Anthropic \
         1.09–1.14, Google 1.09, Mistral 1.16, others 1.20)."
            .to_string(),
        "CO2e = energy × grid carbon intensity of the call's region (lifecycle, g CO2e/kWh): the hourly feed when \
         configured, else the region's annual mean (Our World in Data / Ember via codecarbon 3.3.2, mostly 2023 data, \
         CC-BY 4.0; Google Cloud's published region factors), else the world mean (480.6 g/kWh)."
            .to_string(),
        "Money is not part of this report; calls of unknown models still have energy and CO2e (size-class estimate)."
            .to_string(),
    ];
    out.push(format!(
        "Carbon methods in this period: {}.",
        join_or_none(methods)
    ));
    out.push(format!(
        "Grid datasets in this period: {}.",
        join_or_none(datasets)
    ));
    out.push(format!(
        "Grid intensity sources used: {}.",
        join_or_none(sources)
    ));
    out
}

fn join_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none (no calls)".to_string()
    } else {
        items.join(", ")
    }
}

/// Micro-units to a fixed decimal with `decimals` digits (exact, no float).
fn micro_to(value: i128, scale_digits: u32, decimals: usize) -> String {
    let divisor = 10i128.pow(scale_digits);
    let whole = value / divisor;
    let fraction = (value % divisor).abs();
    let fraction = format!("{fraction:0width$}", width = scale_digits as usize);
    format!("{whole}.{}", &fraction[..decimals.min(fraction.len())])
}

/// kWh from µWh, and kg from µg: both are 10^9.
fn kilo(value: i128) -> String {
    micro_to(value, 9, 6)
}

impl EmissionsReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Emissions {} to {} (months starting in the range)",
            self.from, self.to
        );
        let t = &self.totals;
        let _ = writeln!(out, "calls {}  tokens {}", t.calls, t.tokens);
        let _ = writeln!(
            out,
            "energy kWh  low {}  central {}  high {}",
            kilo(t.energy_uwh[0]),
            kilo(t.energy_uwh[1]),
            kilo(t.energy_uwh[2])
        );
        let _ = writeln!(
            out,
            "CO2e kg     low {}  central {}  high {}",
            kilo(t.co2e_ug[0]),
            kilo(t.co2e_ug[1]),
            kilo(t.co2e_ug[2])
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<40} {:>10} {:>14} {:>14} {:>14}",
            self.by.join(" / "),
            "calls",
            "kWh central",
            "kg CO2e low",
            "kg CO2e central"
        );
        for (key, totals) in &self.breakdown {
            let _ = writeln!(
                out,
                "{:<40} {:>10} {:>14} {:>14} {:>14}",
                render::terminal(&key.join(" / ")),
                totals.calls,
                kilo(totals.energy_uwh[1]),
                kilo(totals.co2e_ug[0]),
                kilo(totals.co2e_ug[1])
            );
        }
        let _ = writeln!(out);
        for line in &self.assumptions {
            let _ = writeln!(out, "- {line}");
        }
        out
    }

    /// CSV of the breakdown, with the totals as the last row.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{},calls,tokens,energy_kwh_low,energy_kwh_central,energy_kwh_high,co2e_kg_low,co2e_kg_central,co2e_kg_high", self.by.join(","));
        let row = |out: &mut String, key: &[String], t: &Totals| {
            let quoted = render::csv_record(key);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                quoted.trim_end_matches('\n'),
                t.calls,
                t.tokens,
                kilo(t.energy_uwh[0]),
                kilo(t.energy_uwh[1]),
                kilo(t.energy_uwh[2]),
                kilo(t.co2e_ug[0]),
                kilo(t.co2e_ug[1]),
                kilo(t.co2e_ug[2])
            );
        };
        for (key, totals) in &self.breakdown {
            row(&mut out, key, totals);
        }
        let total_key: Vec<String> = self.by.iter().map(|_| "TOTAL".to_string()).collect();
        row(&mut out, &total_key, &self.totals);
        out
    }

    /// JSON, with exact micro-units and the versions.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises")
    }

    /// A self-contained HTML page with the figures and three plots.
    pub fn html(&self) -> String {
        let t = &self.totals;
        let mut rows = String::new();
        for (key, totals) in &self.breakdown {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                render::html(&key.join(" / ")),
                totals.calls,
                kilo(totals.energy_uwh[1]),
                kilo(totals.co2e_ug[0]),
                kilo(totals.co2e_ug[1]),
                kilo(totals.co2e_ug[2])
            );
        }
        let by_dimension = |index: usize| -> Vec<(String, i128)> {
            let mut sums: BTreeMap<String, i128> = BTreeMap::new();
            for (key, totals) in &self.breakdown {
                if let Some(label) = key.get(index) {
                    *sums.entry(label.clone()).or_default() += totals.co2e_ug[1];
                }
            }
            let mut sums: Vec<(String, i128)> = sums.into_iter().collect();
            sums.sort_by_key(|(_, value)| std::cmp::Reverse(*value));
            sums
        };
        let mut plots = String::new();
        plots.push_str(&stacked_bars(
            "CO2e by team over time (kg, central)",
            &self.by_month_and_team,
        ));
        for (index, dimension) in self.by.iter().enumerate() {
            if dimension != "team" && dimension != "month" {
                plots.push_str(&bars(
                    &format!("CO2e by {dimension} (kg, central)"),
                    &by_dimension(index),
                ));
            }
        }
        let assumptions: String = self
            .assumptions
            .iter()
            .map(|a| format!("<li>{}</li>", render::html(a)))
            .collect();
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>tally emissions {from} to {to}</title>\
             <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}\
             .big{{font-size:1.4em}}</style></head><body>\
             <h1>LLM emissions, {from} to {to}</h1>\
             <p class=\"big\">CO2e <b>{co2_central} kg</b> (low {co2_low}, high {co2_high}); energy <b>{kwh_central} kWh</b> \
             (low {kwh_low}, high {kwh_high}); {calls} calls, {tokens} tokens.</p>\
             {plots}<h2>Breakdown by {by}</h2><table><tr><th>{by}</th><th>calls</th><th>kWh central</th><th>kg CO2e low</th>\
             <th>kg CO2e central</th><th>kg CO2e high</th></tr>{rows}</table>\
             <h2>Method, data and assumptions</h2><ul>{assumptions}</ul></body></html>",
            from = render::html(&self.from),
            to = render::html(&self.to),
            co2_central = kilo(t.co2e_ug[1]),
            co2_low = kilo(t.co2e_ug[0]),
            co2_high = kilo(t.co2e_ug[2]),
            kwh_central = kilo(t.energy_uwh[1]),
            kwh_low = kilo(t.energy_uwh[0]),
            kwh_high = kilo(t.energy_uwh[2]),
            calls = t.calls,
            tokens = t.tokens,
            by = render::html(&self.by.join(" / ")),
        )
    }
}

const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

fn bars(title: &str, values: &[(String, i128)]) -> String {
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let height = 30 + values.len() * 26;
    let mut svg = format!(
        "<h2>{}</h2><svg width=\"720\" height=\"{height}\">",
        render::html(title)
    );
    for (i, (label, value)) in values.iter().enumerate() {
        let width = (*value as f64 / max * 440.0).max(1.0);
        let y = 10 + i * 26;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text><rect x=\"200\" y=\"{y}\" width=\"{width:.1}\" height=\"20\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 15,
            render::html(label),
            PALETTE[i % PALETTE.len()],
            205.0 + width,
            y + 15,
            kilo(*value)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn stacked_bars(title: &str, months: &BTreeMap<String, BTreeMap<String, i128>>) -> String {
    let teams: Vec<String> = {
        let mut teams: Vec<String> = months.values().flat_map(|m| m.keys().cloned()).collect();
        teams.sort();
        teams.dedup();
        teams
    };
    let max = months
        .values()
        .map(|m| m.values().sum::<i128>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let width = 80 + months.len() * 70;
    let mut svg = format!(
        "<h2>{}</h2><svg width=\"{}\" height=\"300\">",
        render::html(title),
        width.max(400)
    );
    for (i, (month, by_team)) in months.iter().enumerate() {
        let x = 60 + i * 70;
        let mut top = 250.0;
        for (team, value) in by_team {
            let h = *value as f64 / max * 220.0;
            top -= h;
            let colour = PALETTE[teams.iter().position(|t| t == team).unwrap_or(0) % PALETTE.len()];
            let _ = write!(svg, "<rect x=\"{x}\" y=\"{top:.1}\" width=\"50\" height=\"{h:.1}\" fill=\"{colour}\"><title>{} {}: {} kg</title></rect>", render::html(team), render::html(month), kilo(*value));
        }
        let _ = write!(
            svg,
            "<text x=\"{x}\" y=\"268\" font-size=\"11\">{}</text>",
            render::html(&month[..7.min(month.len())])
        );
    }
    for (i, team) in teams.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"282\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"291\" font-size=\"11\">{}</text>",
            60 + i * 110,
            PALETTE[i % PALETTE.len()],
            74 + i * 110,
            render::html(team)
        );
    }
    svg.push_str("</svg>");
    svg
}
