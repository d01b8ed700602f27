//! Wide integers: sums that must not wrap (a window's or a budget's nano-dollars, micro-watt-
//! hours and micrograms at 1,000 times the seed's volume pass `i64::MAX`). In Rust an `i128`;
//! in Avro the `decimal` logical type of precision 38 and scale 0 on `bytes` (big-endian two's
//! complement, as Kafka Connect, Flink and ClickHouse's `AvroConfluent` read it); in JSON an
//! integer. Use with `#[serde(with = "tally_contract::wide")]` (or `wide::option`).
//!
//! A reader of a record written when the field was an Avro `long` reads it too.
use serde::de::{self, Visitor};
use serde::{Deserializer, Serialize, Serializer};

/// The most digits a wide value has in Avro (`decimal(38, 0)`).
pub const PRECISION: u32 = 38;

/// The shortest big-endian two's complement bytes of `value`.
pub fn to_bytes(value: i128) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let sign = if value < 0 { 0xff } else { 0x00 };
    // Drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < 15 && bytes[start] == sign && (bytes[start + 1] & 0x80) == (sign & 0x80) {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// The value of big-endian two's complement bytes (at most 16).
pub fn from_bytes(bytes: &[u8]) -> Result<i128, String> {
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!("{} bytes is not a decimal(38, 0)", bytes.len()));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Ok(i128::from_be_bytes(full))
}

/// Serialises an `i128`: bytes for Avro, an integer for JSON.
pub fn serialize<S: Serializer>(value: &i128, serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_i128(*value)
    } else {
        serializer.serialize_bytes(&to_bytes(*value))
    }
}

/// Deserialises an `i128` from Avro decimal bytes, an Avro `long`, or a JSON integer.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i128, D::Error> {
    if deserializer.is_human_readable() {
        deserializer.deserialize_i128(WideVisitor)
    } else {
        deserializer.deserialize_any(WideVisitor)
    }
}

struct WideVisitor;

impl<'de> Visitor<'de> for WideVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer, or a decimal(38, 0) as bytes")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<i128, E> {
        Ok(v)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<i128, E> {
        i128::try_from(v).map_err(E::custom)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<i128, E> {
        from_bytes(v).map_err(E::custom)
    }
}

/// The same for `Option<i128>` (an Avro union with null).
pub mod option {
    use super::*;

    struct Wide(i128);

    impl Serialize for Wide {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::serialize(&self.0, serializer)
        }
    }

    pub fn serialize<S: Serializer>(
        value: &Option<i128>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_some(&Wide(*value)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i128>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<i128>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("null or a wide integer")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_are_the_shortest_twos_complement() {
        assert_eq!(to_bytes(0), [0]);
        assert_eq!(to_bytes(127), [0x7f]);
        assert_eq!(to_bytes(128), [0x00, 0x80]);
        assert_eq!(to_bytes(-1), [0xff]);
        assert_eq!(to_bytes(-128), [0x80]);
        assert_eq!(to_bytes(-129), [0xff, 0x7f]);
        assert_eq!(to_bytes(i128::MAX).len(), 16);
    }

    proptest! {
        #[test]
        fn bytes_round_trip(value in any::<i128>()) {
            prop_assert_eq!(from_bytes(&to_bytes(value)).unwrap(), value);
        }
    }
}
