//! A serde serializer that writes Rust types as Avro binary while walking today's schema, the
//! writer's half of [`crate::avro_de`].
//!
//! apache-avro's schema-aware serializer finds each struct field by its name in the record
//! schema; that lookup and the per-field dispatch were a third of the enrich stage's time. Here
//! a struct's fields are written by position: serde hands them over in declaration order, and
//! each must be the record schema's next field (its name is compared, so a struct whose order
//! differs from its schema is an error naming both, never bytes under the wrong field). The
//! bytes are the same as apache-avro's (the contract's tests compare them for every record
//! type), except that an array or map is one block however long: apache-avro starts a new
//! block past 1,024 items. Both are valid Avro and every reader reads either.
use apache_avro::schema::{RecordField, Schema, UnionSchema};
use serde::ser::{self, Serialize};

// What could not be written, and where: the reader's error type.
use crate::avro_de::CodecError as EncodeError;

type Result<T> = std::result::Result<T, EncodeError>;

fn mismatch<T>(rust: &str, schema: &Schema) -> Result<T> {
    Err(EncodeError(format!(
        "a Rust {rust} cannot be written as Avro {}",
        schema_name(schema)
    )))
}

fn schema_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(record) => format!("record {}", record.name.name),
        Schema::Enum(e) => format!("enum {}", e.name.name),
        Schema::Union(_) => "union".into(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// Appends `value` as an Avro `long` (zig-zag, variable length).
fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// Writes `value` as `schema` to the end of `out`.
pub fn write<T: Serialize + ?Sized>(schema: &Schema, value: &T, out: &mut Vec<u8>) -> Result<()> {
    value.serialize(AvroSerializer { out, schema })
}

/// Serialises one value of `schema`.
pub struct AvroSerializer<'a> {
    out: &'a mut Vec<u8>,
    schema: &'a Schema,
}

impl<'a> AvroSerializer<'a> {
    /// The branch of a `["null", T]` union that is not null, with its index.
    fn non_null_branch(union: &'a UnionSchema) -> Result<(usize, &'a Schema)> {
        let mut branches = union
            .variants()
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Schema::Null));
        match (branches.next(), branches.next()) {
            (Some(branch), None) => Ok(branch),
            _ => Err(EncodeError(
                "only unions of null and one other type are written".into(),
            )),
        }
    }

    /// The schema a value is written as: the non-null branch of a nullable union (its index
    /// written first), else the schema itself.
    fn resolved(self) -> Result<(&'a mut Vec<u8>, &'a Schema)> {
        match self.schema {
            Schema::Union(union) => {
                let (index, branch) = Self::non_null_branch(union)?;
                write_long(self.out, index as i64);
                Ok((self.out, branch))
            }
            schema => Ok((self.out, schema)),
        }
    }

    fn long(self, value: i64, rust: &str) -> Result<()> {
        let (out, schema) = self.resolved()?;
        match schema {
            Schema::Long
            | Schema::Int
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => {
                let int = matches!(schema, Schema::Int | Schema::Date | Schema::TimeMillis);
                if int && i32::try_from(value).is_err() {
                    return Err(EncodeError(format!("{value} does not fit an Avro int")));
                }
                write_long(out, value);
                Ok(())
            }
            other => mismatch(rust, other),
        }
    }
}

impl<'a> ser::Serializer for AvroSerializer<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Blocks<'a>;
    type SerializeTuple = ser::Impossible<(), EncodeError>;
    type SerializeTupleStruct = ser::Impossible<(), EncodeError>;
    type SerializeTupleVariant = ser::Impossible<(), EncodeError>;
    type SerializeMap = Blocks<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = ser::Impossible<(), EncodeError>;

    fn serialize_bool(self, value: bool) -> Result<()> {
        match self.resolved()? {
            (out, Schema::Boolean) => {
                out.push(u8::from(value));
                Ok(())
            }
            (_, other) => mismatch("bool", other),
        }
    }

    fn serialize_i8(self, value: i8) -> Result<()> {
        self.long(value.into(), "i8")
    }

    fn serialize_i16(self, value: i16) -> Result<()> {
        self.long(value.into(), "i16")
    }

    fn serialize_i32(self, value: i32) -> Result<()> {
        self.long(value.into(), "i32")
    }

    fn serialize_i64(self, value: i64) -> Result<()> {
        self.long(value, "i64")
    }

    fn serialize_u8(self, value: u8) -> Result<()> {
        self.long(value.into(), "u8")
    }

    fn serialize_u16(self, value: u16) -> Result<()> {
        self.long(value.into(), "u16")
    }

    fn serialize_u32(self, value: u32) -> Result<()> {
        self.long(value.into(), "u32")
    }

    fn serialize_u64(self, value: u64) -> Result<()> {
        let value = i64::try_from(value)
            .map_err(|_| EncodeError(format!("{value} does not fit an Avro long")))?;
        self.long(value, "u64")
    }

    fn serialize_f32(self, value: f32) -> Result<()> {
        match self.resolved()? {
            (out, Schema::Float) => {
                out.extend_from_slice(&value.to_le_bytes());
                Ok(())
            }
            (out, Schema::Double) => {
                out.extend_from_slice(&f64::from(value).to_le_bytes());
                Ok(())
            }
            (_, other) => mismatch("f32", other),
        }
    }

    fn serialize_f64(self, value: f64) -> Result<()> {
        match self.resolved()? {
            (out, Schema::Double) => {
                out.extend_from_slice(&value.to_le_bytes());
                Ok(())
            }
            (_, other) => mismatch("f64", other),
        }
    }

    fn serialize_char(self, value: char) -> Result<()> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, value: &str) -> Result<()> {
        match self.resolved()? {
            (out, Schema::String | Schema::Uuid) => {
                write_bytes(out, value.as_bytes());
                Ok(())
            }
            // A Rust enum written as its symbol's text (apache-avro accepts it too).
            (out, Schema::Enum(schema)) => write_symbol(out, &schema.symbols, 0, value),
            (_, other) => mismatch("string", other),
        }
    }

    fn serialize_bytes(self, value: &[u8]) -> Result<()> {
        let (out, schema) = self.resolved()?;
        let inner = match schema {
            Schema::Decimal(decimal) => decimal.inner.as_ref(),
            other => other,
        };
        match inner {
            Schema::Bytes => {
                write_bytes(out, value);
                Ok(())
            }
            Schema::Fixed(fixed) if fixed.size == value.len() => {
                out.extend_from_slice(value);
                Ok(())
            }
            Schema::Fixed(fixed) => Err(EncodeError(format!(
                "{} bytes for a fixed of {}",
                value.len(),
                fixed.size
            ))),
            other => mismatch("byte array", other),
        }
    }

    fn serialize_none(self) -> Result<()> {
        match self.schema {
            Schema::Null => Ok(()),
            Schema::Union(union) => {
                let null = union
                    .variants()
                    .iter()
                    .position(|s| matches!(s, Schema::Null))
                    .ok_or_else(|| EncodeError("None for a union without null".into()))?;
                write_long(self.out, null as i64);
                Ok(())
            }
            other => mismatch("None", other),
        }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        // The union's branch index is written by the value's own call (`resolved`).
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<()> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        variant_index: u32,
        variant: &'static str,
    ) -> Result<()> {
        match self.resolved()? {
            (out, Schema::Enum(schema)) => {
                write_symbol(out, &schema.symbols, variant_index as usize, variant)
            }
            (_, other) => mismatch(&format!("enum variant {variant}"), other),
        }
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<()> {
        Err(EncodeError(format!(
            "enum variant {variant} carries a value, which Avro enums cannot"
        )))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Blocks<'a>> {
        match self.resolved()? {
            (out, Schema::Array(array)) => Ok(Blocks::start(out, &array.items, len)),
            (_, other) => mismatch("sequence", other),
        }
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        mismatch("tuple", self.schema)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        mismatch("tuple struct", self.schema)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        mismatch("tuple variant", self.schema)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Blocks<'a>> {
        match self.resolved()? {
            (out, Schema::Map(map)) => Ok(Blocks::start(out, &map.types, len)),
            (_, other) => mismatch("map", other),
        }
    }

    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Fields<'a>> {
        match self.resolved()? {
            (out, Schema::Record(record)) => Ok(Fields {
                out,
                record: &record.name.name,
                fields: &record.fields,
                next: 0,
            }),
            (_, other) => mismatch(&format!("struct {name}"), other),
        }
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        mismatch(&format!("struct variant {variant}"), self.schema)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Writes the index of `symbol`: the Rust variant's own index when the schema lists it
/// there (tally's enums mirror their schemas), else wherever the schema has it.
fn write_symbol(out: &mut Vec<u8>, symbols: &[String], guess: usize, symbol: &str) -> Result<()> {
    let index = if symbols.get(guess).is_some_and(|s| s == symbol) {
        guess
    } else {
        symbols
            .iter()
            .position(|s| s == symbol)
            .ok_or_else(|| EncodeError(format!("{symbol} is not a symbol of the enum")))?
    };
    write_long(out, index as i64);
    Ok(())
}

/// A record's fields, written in the schema's order.
pub struct Fields<'a> {
    out: &'a mut Vec<u8>,
    record: &'a str,
    fields: &'a [RecordField],
    next: usize,
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        let Some(field) = self.fields.get(self.next).filter(|f| f.name == key) else {
            let expected = self
                .fields
                .get(self.next)
                .map_or("no more fields", |f| f.name.as_str());
            return Err(EncodeError(format!(
                "{}: the Rust struct's field {key} comes where the schema has {expected}",
                self.record
            )));
        };
        self.next += 1;
        value
            .serialize(AvroSerializer {
                out: self.out,
                schema: &field.schema,
            })
            .map_err(|e| EncodeError(format!("{}.{key}: {e}", self.record)))
    }

    fn end(self) -> Result<()> {
        match self.fields.get(self.next) {
            None => Ok(()),
            Some(field) => Err(EncodeError(format!(
                "{}: the Rust struct has no field {} (the schema's next)",
                self.record, field.name
            ))),
        }
    }
}

/// The items of an array or the entries of a map: one block of the known length, then the
/// end marker. Without a length up front each item is a block of its own (valid Avro too).
pub struct Blocks<'a> {
    out: &'a mut Vec<u8>,
    items: &'a Schema,
    counted: bool,
}

impl<'a> Blocks<'a> {
    fn start(out: &'a mut Vec<u8>, items: &'a Schema, len: Option<usize>) -> Blocks<'a> {
        if let Some(len @ 1..) = len {
            write_long(out, len as i64);
        }
        Blocks {
            out,
            items,
            counted: len.is_some(),
        }
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(AvroSerializer {
            out: self.out,
            schema: self.items,
        })
    }

    fn block_of_one(&mut self) {
        if !self.counted {
            write_long(self.out, 1);
        }
    }

    fn finish(self) {
        self.out.push(0);
    }
}

impl ser::SerializeSeq for Blocks<'_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.block_of_one();
        self.item(value)
    }

    fn end(self) -> Result<()> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeMap for Blocks<'_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.block_of_one();
        key.serialize(AvroSerializer {
            out: self.out,
            schema: &Schema::String,
        })
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.item(value)
    }

    fn end(self) -> Result<()> {
        self.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        let cases: [(i64, &[u8]); 7] = [
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (
                i64::MAX,
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            write_long(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
    }

    #[derive(serde::Serialize)]
    struct Swapped {
        b: i64,
        a: i64,
    }

    #[test]
    fn a_struct_in_another_order_than_its_schema_is_an_error_naming_both_fields() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"long"}]}"#,
        )
        .unwrap();
        let err = write(&schema, &Swapped { b: 1, a: 2 }, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "R: the Rust struct's field b comes where the schema has a"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_field_and_both_types() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"Swapped","fields":[{"name":"b","type":"string"},{"name":"a","type":"long"}]}"#,
        )
        .unwrap();
        let err = write(&schema, &Swapped { b: 1, a: 2 }, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Swapped.b: a Rust i64 cannot be written as Avro string"
        );
    }

    #[test]
    fn maps_and_arrays_without_a_length_up_front_are_blocks_of_one() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                use ser::SerializeSeq;
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element(&3i64)?;
                seq.serialize_element(&4i64)?;
                seq.end()
            }
        }
        let schema = Schema::parse_str(r#"{"type":"array","items":"long"}"#).unwrap();
        let mut out = Vec::new();
        write(&schema, &Unsized, &mut out).unwrap();
        assert_eq!(out, [2, 6, 2, 8, 0]);
        let read: Vec<i64> = apache_avro::from_value(
            &apache_avro::from_avro_datum(&schema, &mut &out[..], None).unwrap(),
        )
        .unwrap();
        assert_eq!(read, [3, 4]);
    }
}
