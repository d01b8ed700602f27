//! `tally up`: the whole pipeline in one process, for a first look without Kafka or
//! ClickHouse — the same ingest server, processor stages and sink tables as production, with
//! Kafka swapped for a durable local [`journal`] and ClickHouse for Parquet files queried by
//! DataFusion ([`store`], [`query`]).
//!
//! - [`journal`]: the log between stages; a frame (an ingest request, or a stage transaction
//!   with the input position it consumed up to) is written and fsynced whole.
//! - [`runner`]: runs a processor [`tally_processor::pipeline::Stage`] over the journal, one
//!   frame per transaction, exactly once across crashes.
//! - [`store`]: the sink's tables as Parquet files, partitioned by day, small files compacted.
//! - [`query`]: DataFusion over the store, with ClickHouse's table names and columns.
//! - [`reports`]: `tally report` over the store, the same text as from ClickHouse.
//! - [`mirror`]: with Kafka as the transport, copies the derived topics into the journal.
//! - [`up`]: wires them together behind the ingest HTTP server.
//!
//! What it must not do: have logic of its own where production has it. Ingest, the stages,
//! the row conversion and the reports are the production crates'; this crate swaps only the
//! transport (the journal, `tally-journal`) and the store.
pub mod error;
pub use tally_journal as journal;
pub mod mirror;
pub mod query;
pub mod reports;
pub mod runner;
pub mod store;
pub mod up;

pub use error::EmbeddedError;
