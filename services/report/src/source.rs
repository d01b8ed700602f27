//! The one query trait every report reads through, [`ReportSource`]: a store that runs a
//! report's SQL (in its own [`Dialect`]) and gives back text cells written as ClickHouse
//! writes them. Two backends: ClickHouse ([`crate::clickhouse`]) and `tally up`'s
//! DataFusion store (`tally_embedded::reports::EmbeddedSource`).
use std::future::Future;

use serde::Serialize;

use crate::emissions::EmissionsRow;
use crate::ReportError;

/// One titled table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Columns of the bar plot: (label, value), by name.
    #[serde(skip)]
    pub plot: Option<(&'static str, &'static str)>,
}

/// Which SQL a source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    ClickHouse,
    DataFusion,
}

/// Where a report's figures are read from: ClickHouse, or `tally up`'s embedded store.
pub trait ReportSource: Sync {
    /// The SQL it speaks.
    fn dialect(&self) -> Dialect;

    /// Runs `sql` with `binds` (dates, `YYYY-MM-DD`, for its `?`s) and reads the result as
    /// text cells, every figure written as ClickHouse writes it.
    fn section(
        &self,
        title: &str,
        sql: &str,
        binds: &[&str],
        plot: Option<(&'static str, &'static str)>,
    ) -> impl Future<Output = Result<Section, ReportError>> + Send;

    /// The `emissions_monthly` rows of the months from `from` (inclusive) to `to`
    /// (exclusive), both `YYYY-MM-DD`, with exact micro-units.
    fn emissions_rows(
        &self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<Vec<EmissionsRow>, ReportError>> + Send;
}
