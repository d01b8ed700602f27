//! The ClickHouse backend of [`ReportSource`]: a report's SQL run with bound parameters,
//! its result read as `JSONCompactEachRowWithNames` text (ClickHouse formats the decimals).
use std::future::Future;

use clickhouse::Client;

use crate::emissions::{EmissionsRow, EMISSIONS_ROWS_CLICKHOUSE};
use crate::source::{Dialect, ReportSource, Section};
use crate::ReportError;

const STORE: &str = "ClickHouse";

fn query_error(e: impl std::fmt::Display) -> ReportError {
    ReportError::Query {
        store: STORE,
        message: e.to_string(),
    }
}

impl ReportSource for Client {
    fn dialect(&self) -> Dialect {
        Dialect::ClickHouse
    }

    fn section(
        &self,
        title: &str,
        sql: &str,
        binds: &[&str],
        plot: Option<(&'static str, &'static str)>,
    ) -> impl Future<Output = Result<Section, ReportError>> + Send {
        section(self, title, sql, binds, plot)
    }

    async fn emissions_rows(&self, from: &str, to: &str) -> Result<Vec<EmissionsRow>, ReportError> {
        self.query(EMISSIONS_ROWS_CLICKHOUSE)
            .bind(from)
            .bind(to)
            .fetch_all()
            .await
            .map_err(query_error)
    }
}

/// Runs a query and reads its result as text cells (`JSONCompactEachRowWithNames`).
async fn section(
    client: &Client,
    title: &str,
    sql: &str,
    binds: &[&str],
    plot: Option<(&'static str, &'static str)>,
) -> Result<Section, ReportError> {
    let mut query = client.query(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let bytes = query
        .fetch_bytes("JSONCompactEachRowWithNames")
        .map_err(query_error)?
        .collect()
        .await
        .map_err(query_error)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines().map(|line| {
        serde_json::from_str::<Vec<serde_json::Value>>(line)
            .map(|cells| cells.iter().map(cell).collect::<Vec<String>>())
            .map_err(|e| query_error(format!("unexpected report row {line:?}: {e}")))
    });
    let columns = lines.next().transpose()?.unwrap_or_default();
    let rows = lines.collect::<Result<Vec<_>, _>>()?;
    Ok(Section {
        title: title.to_string(),
        columns,
        rows,
        plot,
    })
}

fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
