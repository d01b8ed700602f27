//! How a state record's value is written in a changelog: a zero byte, then the value in
//! postcard's compact binary form (varints, no field names). Values written before it, JSON,
//! are still read, so a changelog written by an earlier tally restores as it was.
//!
//! The session state of the detectors was JSON before: every session changed in a
//! transaction was written whole, its step history's field names and all (944 bytes a call in
//! the chain bench), and writing it was the detect stage's largest cost. The binary form is a
//! fraction of the size and keeps floats bit for bit. Its fields are read by position, so a
//! state struct's fields and enum variants are only ever appended to, with a new format byte
//! when that is not enough.
use serde::{de::DeserializeOwned, Serialize};

/// The first byte of a binary value. JSON never starts with it.
const BINARY: u8 = 0;

/// The value's bytes in a changelog record.
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let out = vec![BINARY];
    postcard::to_extend(value, out).map_err(|e| e.to_string())
}

/// A value read back from a changelog record, binary or (written earlier) JSON.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&BINARY, body)) => match postcard::take_from_bytes(body) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(format!("binary: {} bytes after the value", rest.len())),
            Err(e) => Err(format!("binary: {e}")),
        },
        _ => serde_json::from_slice(bytes).map_err(|e| format!("JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Piece {
        name: String,
        label: Option<String>,
        sum: i128,
        rate: f64,
        steps: Vec<i64>,
    }

    fn piece() -> Piece {
        Piece {
            name: "acme/platform/s-1".into(),
            label: None,
            sum: i128::MAX - 7,
            rate: 0.1 + 0.2,
            steps: vec![-1, 0, i64::MAX],
        }
    }

    #[test]
    fn binary_values_read_back_bit_for_bit() {
        let bytes = to_bytes(&piece()).unwrap();
        assert_eq!(bytes[0], BINARY);
        let read: Piece = from_bytes(&bytes).unwrap();
        assert_eq!(read, piece());
        assert_eq!(read.rate.to_bits(), (0.1f64 + 0.2).to_bits());
    }

    #[test]
    fn json_written_by_an_earlier_tally_is_read() {
        let json = br#"{"name":"acme/platform/s-1","label":null,"sum":170141183460469231731687303715884105720,"rate":0.30000000000000004,"steps":[-1,0,9223372036854775807]}"#;
        assert_eq!(from_bytes::<Piece>(json).unwrap(), piece());
    }

    #[test]
    fn damaged_values_are_errors_naming_the_format() {
        let mut bytes = to_bytes(&piece()).unwrap();
        bytes.truncate(bytes.len() - 3);
        let err = from_bytes::<Piece>(&bytes).unwrap_err();
        assert!(err.starts_with("binary: "), "{err}");
        let mut padded = to_bytes(&piece()).unwrap();
        padded.push(7);
        let err = from_bytes::<Piece>(&padded).unwrap_err();
        assert_eq!(err, "binary: 1 bytes after the value");
        let err = from_bytes::<Piece>(b"{\"name\":").unwrap_err();
        assert!(err.starts_with("JSON: "), "{err}");
    }
}
