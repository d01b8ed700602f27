//! tally's shared contract: what every service agrees on.
//!
//! What it must not do: hold logic of any one service. It is the records, their encoding and
//! the names of things; without the default `runtime` feature it has no Kafka client and no
//! tokio, so pure crates (`tally-accounting`) can use the record types alone.
//!
//! - [`records`]: the Rust types of the Avro records in `schemas/*.avsc` (the contract).
//! - [`codec`]: Avro single-object encoding of those records, decoding every known writer
//!   version without a schema registry.
//! - [`schema`]: the embedded schemas, their versions and fingerprints.
//! - [`wire`]: the two framings (single-object, Confluent) and what a reader knows of schema
//!   registry ids; [`registry`]: the schema registry client and a writer's set-up.
//! - [`topics`]: Kafka topic names and record keys.
//! - [`kafka`] / [`clickhouse`]: connection settings, and topic administration.
//! - [`config`]: layered configuration loading (defaults, file, environment).
//! - [`telemetry`]: logging set-up shared by every service; [`shutdown`]: the stop signal.

mod avro_de;
mod avro_ser;
pub mod clickhouse;
pub mod clock;
pub mod codec;
pub mod config;
mod error;
#[cfg(feature = "runtime")]
pub mod kafka;
#[cfg(feature = "runtime")]
pub mod metrics;
pub mod records;
#[cfg(feature = "runtime")]
pub mod registry;
pub mod schema;
#[cfg(feature = "runtime")]
pub mod shutdown;
pub mod telemetry;
pub mod topics;
pub mod wide;
pub mod wire;

pub use codec::{decode, encode, encode_framed, AvroRecord};
pub use error::{ContractError, Result};
