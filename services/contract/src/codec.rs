//! Avro single-object encoding of tally's records, the format of every Kafka value.
//!
//! Layout (Avro specification, "Single-object encoding"): the marker `C3 01`, the writer
//! schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then the Avro binary body. A reader
//! therefore knows the writer schema without a registry: it looks the fingerprint up among the
//! known versions of the expected record type and resolves the body to the current schema.
//! Corrupt bytes or an unknown fingerprint are error values, never panics.
use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value};
use serde::{de::DeserializeOwned, Serialize};

use crate::schema::{record_schemas, Fingerprint, RecordSchemas};
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
    let encode_error = |reason: String| ContractError::Encode {
        record: T::RECORD_NAME,
        reason,
    };
    let value = to_value(record).map_err(|e| encode_error(e.to_string()))?;
    // resolve() wraps optional values into their union branch and checks every field.
    let value = value
        .resolve(&current.schema)
        .map_err(|e| encode_error(e.to_string()))?;
    let body = to_avro_datum(&current.schema, value).map_err(|e| encode_error(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&current.fingerprint);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes single-object encoded bytes written with any known version of `T`'s schema.
pub fn decode<T: AvroRecord>(bytes: &[u8]) -> Result<T> {
    let schemas = T::schemas();
    let fingerprint = read_header::<T>(bytes)?;
    let writer = schemas
        .writer(&fingerprint)
        .ok_or_else(|| ContractError::UnknownFingerprint {
            record: T::RECORD_NAME,
            fingerprint: hex(&fingerprint),
        })?;
    let decode_error = |reason: String| ContractError::Decode {
        record: T::RECORD_NAME,
        version: writer.version,
        reason,
    };
    let mut body = &bytes[HEADER_LEN..];
    let value = from_avro_datum(&writer.schema, &mut body, Some(&schemas.current.schema))
        .map_err(|e| decode_error(e.to_string()))?;
    if !body.is_empty() {
        return Err(decode_error(format!(
            "{} bytes left after the record",
            body.len()
        )));
    }
    from_value(&value).map_err(|e| decode_error(e.to_string()))
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
            "starts with {}, not the marker c301",
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
        unmarked[0] = 0x00;
        let err = decode::<LlmCall>(&unmarked).unwrap_err().to_string();
        assert!(err.contains("not the marker c301"), "{err}");

        let err = decode::<LlmCall>(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(
            matches!(
                err,
                ContractError::Decode {
                    record: "LlmCall",
                    version: 1,
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
            "unknown writer schema for LlmCall: fingerprint 0102030405060708 is not a known version of LlmCall"
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

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
