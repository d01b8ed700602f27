//! tally-report: the read side. Every report a person reads (`tally report spend |
//! attribution | loops | emissions`) is defined here once: its SQL, in ClickHouse's and
//! DataFusion's dialects side by side, what it adds up, and how it is rendered (text table,
//! CSV, JSON, a self-contained HTML page with plots).
//!
//! - [`source`]: the one query trait, [`ReportSource`], behind which a store runs a report's
//!   SQL; [`clickhouse`] is its ClickHouse backend, and `tally-embedded` implements it on
//!   `tally up`'s DataFusion store, so both stores give the same report text.
//! - [`tabular`]: spend, attribution and loops reports, made of titled tables.
//! - [`emissions`]: the emissions report a sustainability officer signs.
//! - [`share`]: the unattributed share of the attribution report, exact in billionths.
//! - [`render`]: escaping of what clients sent, for each reader (browser, spreadsheet,
//!   terminal).
//!
//! What it must not do: write anything. It only reads (the sink writes ClickHouse, the
//! embedded store writes Parquet), and it never formats a figure itself where the store can
//! (decimals are the store's exact text).
pub mod clickhouse;
pub mod emissions;
mod error;
pub mod render;
pub mod share;
pub mod source;
pub mod tabular;

pub use error::ReportError;
pub use share::Share;
pub use source::{Dialect, ReportSource, Section};
