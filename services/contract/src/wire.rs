//! The two framings of an Avro record on tally's topics, and what a reader knows of schema
//! registry ids.
//!
//! - **Single-object** (the default, [`crate::codec::MARKER`]): `C3 01`, the writer schema's
//!   8-byte fingerprint, the body. Needs no registry.
//! - **Confluent** (`kafka.wire_format = "confluent"`): a zero byte, the writer schema's id in
//!   a schema registry (4 bytes, big-endian), the body; what Kafka Connect, Flink, ksqlDB and
//!   ClickHouse's `AvroConfluent` format read.
//!
//! Readers take both, whatever they are configured to write. A Confluent record's id is
//! turned into the fingerprint of a known schema version once per id: from the ids this
//! process registered itself, or by asking the registry (`GET /schemas/ids/{id}`, through the
//! [`Resolve`] installed at start by `crate::registry`) and fingerprinting the answer. Ids
//! never change meaning in a registry, so the answer is kept for the life of the process.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::schema::{fingerprint, Fingerprint};
use crate::ContractError;

/// The byte a Confluent-framed record starts with.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// Magic byte plus the 4-byte schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// How tally's writers frame Avro records on Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// Avro single-object encoding: the schema's fingerprint in every record, no registry.
    #[default]
    SingleObject,
    /// The Confluent wire format: the schema's id in a schema registry in every record.
    Confluent,
}

/// How one writer frames its records: single-object, or Confluent with the registry id of
/// each record type's current schema (record name → id), registered at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Framing {
    #[default]
    SingleObject,
    Confluent(Arc<HashMap<&'static str, u32>>),
}

/// Looks a schema up by its registry id: the schema's JSON text.
pub trait Resolve: Send + Sync {
    /// The schema registered under `id`.
    fn schema(&self, id: u32) -> Result<String, ContractError>;
}

/// What this process knows of registry ids: the fingerprint each id's schema has, and who
/// to ask about an id it has not seen.
#[derive(Default)]
struct Ids {
    known: HashMap<u32, Fingerprint>,
    resolver: Option<Arc<dyn Resolve>>,
}

fn ids() -> &'static RwLock<Ids> {
    static IDS: std::sync::OnceLock<RwLock<Ids>> = std::sync::OnceLock::new();
    IDS.get_or_init(Default::default)
}

/// Installs who answers for ids this process has not seen (the schema registry).
pub fn install_resolver(resolver: Arc<dyn Resolve>) {
    ids()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .resolver = Some(resolver);
}

/// Records that `id` is the registry's id of the schema with this fingerprint.
pub fn learn(id: u32, fingerprint: Fingerprint) {
    ids()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .known
        .insert(id, fingerprint);
}

/// The fingerprint of the schema registered under `id`, asking the registry the first time.
pub fn fingerprint_of(id: u32) -> Result<Fingerprint, ContractError> {
    let resolver = {
        let ids = ids()
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(fingerprint) = ids.known.get(&id) {
            return Ok(*fingerprint);
        }
        ids.resolver.clone()
    };
    let Some(resolver) = resolver else {
        return Err(ContractError::NoSchemaRegistry { id });
    };
    let text = resolver.schema(id)?;
    let schema = apache_avro::Schema::parse_str(&text).map_err(|e| ContractError::Registry {
        operation: format!("read schema id {id}"),
        reason: format!("the registry's schema does not parse as Avro: {e}"),
        transient: false,
    })?;
    let fingerprint = fingerprint(&schema);
    learn(id, fingerprint);
    Ok(fingerprint)
}

/// The schema id of a Confluent-framed record, checking its header.
pub fn confluent_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [CONFLUENT_MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The header of a Confluent-framed record with this schema id.
pub fn confluent_header(id: u32) -> [u8; CONFLUENT_HEADER_LEN] {
    let [a, b, c, d] = id.to_be_bytes();
    [CONFLUENT_MAGIC, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_a_zero_byte_then_the_id_big_endian() {
        assert_eq!(confluent_header(0x0102_0304), [0, 1, 2, 3, 4]);
        assert_eq!(confluent_id(&[0, 0, 0, 1, 44, 9, 9]), Some(300));
        assert_eq!(confluent_id(&[0, 0, 0, 1]), None, "too short");
        assert_eq!(confluent_id(&[0xC3, 1, 0, 0, 0, 0]), None, "single-object");
    }

    #[test]
    fn the_wire_format_is_spelled_in_snake_case() {
        let format: WireFormat = serde_json::from_str("\"confluent\"").unwrap();
        assert_eq!(format, WireFormat::Confluent);
        assert_eq!(
            serde_json::to_string(&WireFormat::SingleObject).unwrap(),
            "\"single_object\""
        );
        assert!(serde_json::from_str::<WireFormat>("\"avro\"").is_err());
    }
}
