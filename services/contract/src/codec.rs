//! Avro single-object encoding of tally's records, the format of every Kafka value.
//!
//! Layout (Avro specification, "Single-object encoding"): the marker `C3 01`, the writer
//! schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then the Avro binary body. A reader
//! therefore knows the writer schema without a registry: it looks the fingerprint up among the
//! known versions of the expected record type and resolves the body to the current schema.
//! Corrupt bytes or an unknown fingerprint are error values, never panics.
//!
//! Records in the Confluent wire format (a zero byte and a schema registry id, see
//! [`crate::wire`]) are read too, and written by [`encode_framed`] when a writer is set up
//! for it: the id stands for a fingerprint, and the rest is the same.
use apache_avro::{from_avro_datum, from_value};
use serde::{de::DeserializeOwned, Serialize};

use crate::avro_de::{AvroDeserializer, Input};
use crate::avro_ser;
use crate::schema::{record_schemas, Fingerprint, RecordSchemas};
use crate::wire::{confluent_header, confluent_id, fingerprint_of, Framing, CONFLUENT_HEADER_LEN};
use crate::{ContractError, Result};

/// The two bytes every single-object encoded datum starts with.
pub const MARKER: [u8; 2] = [0xC3, 0x01];
/// Marker plus fingerprint.
pub const HEADER_LEN: usize = 10;

/// A Rust type that mirrors one schema under `schemas/`.
pub trait AvroRecord: Serialize + DeserializeOwned {
    /// The record's name in its schema, without namespace (`LlmCall`).
    const RECORD_NAME: &'static str;

    /// All known versions of the record's schema.
    fn schemas() -> &'static RecordSchemas {
        record_schemas(Self::RECORD_NAME)
            .unwrap_or_else(|| panic!("no schema file for record {}", Self::RECORD_NAME))
    }
}

/// Encodes a record with the current schema, single-object framed.
pub fn encode<T: AvroRecord>(record: &T) -> Result<Vec<u8>> {
    let current = &T::schemas().current;
    let mut out = Vec::with_capacity(HEADER_LEN + 256);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&current.fingerprint);
    write_body(record, &mut out)?;
    Ok(out)
}

/// Encodes a record with the current schema, in the writer's framing: single-object, or
/// the Confluent wire format with the id the registry gave the current schema.
pub fn encode_framed<T: AvroRecord>(record: &T, framing: &Framing) -> Result<Vec<u8>> {
    let Framing::Confluent(ids) = framing else {
        return encode(record);
    };
    let id = *ids
        .get(T::RECORD_NAME)
        .ok_or_else(|| ContractError::Encode {
            record: T::RECORD_NAME,
            reason: "this writer registered no schema id for it (not among the topics it was set up to write)".into(),
        })?;
    let mut out = Vec::with_capacity(CONFLUENT_HEADER_LEN + 256);
    out.extend_from_slice(&confluent_header(id));
    write_body(record, &mut out)?;
    Ok(out)
}

/// Appends the record's Avro body, written with the current schema while walking it: no
/// intermediate value tree, fields by position ([`crate::avro_ser`]). The schemas are
/// self-contained (see `schema`), so no named-type lookups are needed.
fn write_body<T: AvroRecord>(record: &T, out: &mut Vec<u8>) -> Result<()> {
    avro_ser::write(&T::schemas().current.schema, record, out).map_err(|e| ContractError::Encode {
        record: T::RECORD_NAME,
        reason: e.to_string(),
    })
}

/// Decodes a record written with any known version of `T`'s schema, single-object encoded
/// or in the Confluent wire format.
pub fn decode<T: AvroRecord>(bytes: &[u8]) -> Result<T> {
    let schemas = T::schemas();
    let (fingerprint, header_len) = match confluent_id(bytes) {
        Some(id) => (fingerprint_of(id)?, CONFLUENT_HEADER_LEN),
        None => (read_header::<T>(bytes)?, HEADER_LEN),
    };
    let writer = schemas
        .writer(&fingerprint)
        .ok_or_else(|| ContractError::UnknownFingerprint {
            record: T::RECORD_NAME,
            fingerprint: hex(&fingerprint),
            known: schemas.current.version,
        })?;
    let decode_error = |reason: String| ContractError::Decode {
        record: T::RECORD_NAME,
        version: writer.version,
        reason,
    };
    let body = &bytes[header_len..];
    if writer.version == schemas.current.version {
        decode_current(body, &writer.schema).map_err(decode_error)
    } else {
        decode_resolved(body, &writer.schema, &schemas.current.schema).map_err(decode_error)
    }
}

/// Reads a body written with an earlier schema, resolving it to today's (apache-avro's
/// schema resolution: defaults for new fields, promotions, ...). A field whose type widened
/// beyond what Avro resolves (a `long` sum that is now a wide `decimal`, see [`crate::wide`])
/// is read by its name with the writer's schema instead.
fn decode_resolved<T: AvroRecord>(
    body: &[u8],
    writer: &apache_avro::Schema,
    reader: &apache_avro::Schema,
) -> Result<T, String> {
    let read = |reader: Option<&apache_avro::Schema>| {
        let mut rest = body;
        let value = from_avro_datum(writer, &mut rest, reader).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!("{} bytes left after the record", rest.len()));
        }
        from_value(&value).map_err(|e| e.to_string())
    };
    read(Some(reader)).or_else(|resolved| read(None).map_err(|_| resolved))
}

/// Reads a body written with today's schema straight into `T` (see [`crate::avro_de`]).
fn decode_current<T: AvroRecord>(
    body: &[u8],
    schema: &'static apache_avro::Schema,
) -> Result<T, String> {
    let mut input = Input::new(body);
    let record = T::deserialize(AvroDeserializer {
        input: &mut input,
        schema,
        // The registry's schemas are parsed once and never dropped.
        lasting: true,
    })
    .map_err(|e| e.to_string())?;
    match input.remaining() {
        0 => Ok(record),
        left => Err(format!("{left} bytes left after the record")),
    }
}

/// The writer fingerprint of single-object encoded bytes, checking the marker.
pub fn read_header<T: AvroRecord>(bytes: &[u8]) -> Result<Fingerprint> {
    let not_single_object = |reason: String| ContractError::NotSingleObject {
        record: T::RECORD_NAME,
        reason,
    };
    if bytes.len() < HEADER_LEN {
        return Err(not_single_object(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if bytes[..2] != MARKER {
        return Err(not_single_object(format!(
            "starts with {}, not the marker c301 (nor a Confluent zero byte)",
            hex(&bytes[..2])
        )));
    }
    Ok(bytes[2..HEADER_LEN].try_into().expect("8 bytes"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{LlmCall, TicketEvent};
    use proptest::prelude::*;

    fn sample_call() -> LlmCall {
        serde_json::from_str(include_str!("../../../tests/golden/LlmCall.json")).unwrap()
    }

    /// The enriched fixture with every optional field empty.
    fn sample_enriched() -> crate::records::EnrichedLlmCall {
        let mut enriched: crate::records::EnrichedLlmCall =
            serde_json::from_str(include_str!("../../../tests/golden/EnrichedLlmCall.json"))
                .unwrap();
        enriched.price_entry = None;
        enriched.cost_input_nanos = None;
        enriched.cost_total_nanos = None;
        enriched
    }

    #[test]
    fn a_call_with_many_tags_and_no_optionals_round_trips() {
        let mut call = sample_call();
        call.tags = (0..20)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        call.user = None;
        call.step = None;
        call.reported_cost_micros = None;
        let bytes = encode(&call).unwrap();
        assert_eq!(bytes[..2], MARKER);
        assert_eq!(bytes[2..10], LlmCall::schemas().current.fingerprint);
        assert_eq!(decode::<LlmCall>(&bytes).unwrap(), call);
    }

    #[test]
    fn short_unmarked_truncated_and_padded_bytes_are_errors() {
        let bytes = encode(&sample_call()).unwrap();
        let err = decode::<LlmCall>(&bytes[..5]).unwrap_err().to_string();
        assert!(
            err.contains("5 bytes, shorter than the 10-byte header"),
            "{err}"
        );

        let mut unmarked = bytes.clone();
        unmarked[0] = 0x7f;
        let err = decode::<LlmCall>(&unmarked).unwrap_err().to_string();
        assert!(
            err.contains("starts with 7f01, not the marker c301 (nor a Confluent zero byte)"),
            "{err}"
        );

        let err = decode::<LlmCall>(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(
            matches!(
                err,
                ContractError::Decode {
                    record: "LlmCall",
                    version: 2,
                    ..
                }
            ),
            "{err}"
        );

        let mut padded = bytes.clone();
        padded.push(0);
        let err = decode::<LlmCall>(&padded).unwrap_err().to_string();
        assert!(err.contains("1 bytes left after the record"), "{err}");
    }

    #[test]
    fn an_unknown_fingerprint_names_the_record_and_fingerprint() {
        let mut bytes = encode(&sample_call()).unwrap();
        bytes[2..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let err = decode::<LlmCall>(&bytes).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown writer schema for LlmCall: fingerprint 0102030405060708 is none of the versions \
             this tally reads (LlmCall 1 to 2); a newer tally wrote it? Upgrade this service: it \
             reads nothing past the record until then"
        );
    }

    #[test]
    fn a_body_of_another_type_under_a_known_fingerprint_is_a_decode_error() {
        let ticket: TicketEvent =
            serde_json::from_str(include_str!("../../../tests/golden/TicketEvent.json")).unwrap();
        let mut bytes = encode(&ticket).unwrap();
        bytes[2..10].copy_from_slice(&LlmCall::schemas().current.fingerprint);
        assert!(matches!(
            decode::<LlmCall>(&bytes),
            Err(ContractError::Decode { .. })
        ));
    }

    prop_compose! {
        fn any_call()(
            event_id in "\\PC{0,40}",
            user in proptest::option::of("\\PC{0,20}"),
            step in proptest::option::of(any::<i32>()),
            tokens in proptest::array::uniform5(any::<i64>()),
            tier in 0..4usize,
            error in any::<bool>(),
            latency_ms in proptest::option::of(any::<i64>()),
            tags in proptest::collection::btree_map("\\PC{0,10}", "\\PC{0,10}", 0..6),
        ) -> LlmCall {
            let mut call = sample_call();
            call.event_id = event_id;
            call.user = user;
            call.step = step;
            [call.input_tokens, call.output_tokens, call.cache_read_tokens, call.cache_write_tokens, call.reasoning_tokens] = tokens;
            call.service_tier = crate::records::ServiceTier::ALL[tier];
            call.status = if error { crate::records::CallStatus::Error } else { crate::records::CallStatus::Ok };
            call.latency_ms = latency_ms;
            call.tags = tags;
            call
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The fast reader and apache-avro's resolving reader agree on every record.
        #[test]
        fn both_readers_agree(call in any_call()) {
            let bytes = encode(&call).unwrap();
            let schema = &LlmCall::schemas().current.schema;
            let fast: LlmCall = decode_current(&bytes[HEADER_LEN..], schema).unwrap();
            let resolved: LlmCall = decode_resolved(&bytes[HEADER_LEN..], schema, schema).unwrap();
            prop_assert_eq!(&fast, &call);
            prop_assert_eq!(&resolved, &call);
        }

        /// The positional writer writes the bytes apache-avro's schema-aware writer does,
        /// nulls and empty maps included.
        #[test]
        fn both_writers_agree(call in any_call()) {
            let schema = &LlmCall::schemas().current.schema;
            let mut theirs = Vec::new();
            apache_avro::write_avro_datum_ref(schema, &call, &mut theirs).unwrap();
            prop_assert_eq!(&encode(&call).unwrap()[HEADER_LEN..], &theirs[..]);
            let enriched = crate::records::EnrichedLlmCall { call, ..sample_enriched() };
            let schema = &crate::records::EnrichedLlmCall::schemas().current.schema;
            let mut theirs = Vec::new();
            apache_avro::write_avro_datum_ref(schema, &enriched, &mut theirs).unwrap();
            prop_assert_eq!(&encode(&enriched).unwrap()[HEADER_LEN..], &theirs[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut framed = MARKER.to_vec();
            framed.extend_from_slice(&LlmCall::schemas().current.fingerprint);
            framed.extend_from_slice(&body);
            let _ = decode::<LlmCall>(&framed);
            let _ = decode::<LlmCall>(&body);
        }

        #[test]
        fn mutated_valid_bytes_never_panic(position in 10usize..200, value in any::<u8>()) {
            let mut bytes = encode(&sample_call()).unwrap();
            let position = position % bytes.len();
            bytes[position] = value;
            let _ = decode::<LlmCall>(&bytes);
        }
    }
}
