//! A serde deserializer that reads Avro binary straight into Rust types while walking the
//! writer schema, for records written with today's schema (the common case).
//!
//! apache-avro's `from_avro_datum` + `from_value` builds a tree of values first, which costs
//! ten times the decoding itself; this reads each field once, borrowing strings where serde
//! allows. Bytes written by an earlier schema version still go through apache-avro's
//! schema resolution ([`crate::codec`]). Every length and count is checked against the bytes
//! left, so corrupt input is an error, never a panic or a huge allocation.
use std::cell::RefCell;

use apache_avro::schema::{RecordField, RecordSchema, Schema, UnionSchema};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// What went wrong reading or writing Avro bytes (serde's error types for
/// [`AvroDeserializer`] and `crate::avro_ser`).
#[derive(Debug)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl de::Error for CodecError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

impl serde::ser::Error for CodecError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, CodecError>;

fn error<T>(message: impl Into<String>) -> Result<T> {
    Err(CodecError(message.into()))
}

/// The bytes still to read.
pub struct Input<'de> {
    bytes: &'de [u8],
}

impl<'de> Input<'de> {
    pub fn new(bytes: &'de [u8]) -> Self {
        Input { bytes }
    }

    /// Bytes not read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.bytes.len() {
            return error(format!("needs {n} more bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn long(&mut self) -> Result<i64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        error("a variable-length integer runs past 10 bytes")
    }

    fn int(&mut self) -> Result<i32> {
        let value = self.long()?;
        i32::try_from(value).or_else(|_| error(format!("{value} does not fit an Avro int")))
    }

    fn length(&mut self) -> Result<usize> {
        let length = self.long()?;
        if length < 0 || length as u64 > self.bytes.len() as u64 {
            return error(format!(
                "length {length} with {} bytes left",
                self.bytes.len()
            ));
        }
        Ok(length as usize)
    }

    fn str(&mut self) -> Result<&'de str> {
        let length = self.length()?;
        std::str::from_utf8(self.take(length)?)
            .or_else(|e| error(format!("a string is not UTF-8: {e}")))
    }

    /// The item count of the next array or map block (0 ends the collection).
    fn block_count(&mut self) -> Result<usize> {
        let count = self.long()?;
        if count < 0 {
            // A negative count is followed by the block's size in bytes, which we do not need.
            self.long()?;
        }
        let count = count.unsigned_abs();
        // Every item takes at least one byte, except null items: bound by what is left + 1.
        if count > self.bytes.len() as u64 + 1 {
            return error(format!(
                "a block of {count} items with {} bytes left",
                self.bytes.len()
            ));
        }
        Ok(count as usize)
    }
}

/// Deserialises one value of `schema` from the input.
pub struct AvroDeserializer<'a, 'de> {
    pub input: &'a mut Input<'de>,
    pub schema: &'a Schema,
    /// Whether `schema` lives as long as the process (the contract's own, parsed once): then
    /// whether a Rust struct's fields are its record's, in order, is checked once and
    /// remembered by address, and its fields are named by position ([`same_order`]).
    pub lasting: bool,
}

impl<'a, 'de> AvroDeserializer<'a, 'de> {
    fn with(&mut self, schema: &'a Schema) -> AvroDeserializer<'_, 'de> {
        AvroDeserializer {
            input: self.input,
            schema,
            lasting: self.lasting,
        }
    }

    fn union_branch(&mut self, union: &'a UnionSchema) -> Result<&'a Schema> {
        let index = self.input.long()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| union.variants().get(i))
            .map_or_else(|| error(format!("union branch {index} does not exist")), Ok)
    }
}

impl<'de> de::Deserializer<'de> for AvroDeserializer<'_, 'de> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Null => visitor.visit_unit(),
            Schema::Boolean => match self.input.take(1)?[0] {
                0 => visitor.visit_bool(false),
                1 => visitor.visit_bool(true),
                other => error(format!("{other} is not a boolean")),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => visitor.visit_i32(self.input.int()?),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => visitor.visit_i64(self.input.long()?),
            Schema::Float => {
                let bytes: [u8; 4] = self.input.take(4)?.try_into().expect("4 bytes");
                visitor.visit_f32(f32::from_le_bytes(bytes))
            }
            Schema::Double => {
                let bytes: [u8; 8] = self.input.take(8)?.try_into().expect("8 bytes");
                visitor.visit_f64(f64::from_le_bytes(bytes))
            }
            Schema::Bytes => {
                let length = self.input.length()?;
                visitor.visit_borrowed_bytes(self.input.take(length)?)
            }
            // Wide integers (`crate::wide`): the unscaled value's bytes.
            Schema::Decimal(decimal) => match decimal.inner.as_ref() {
                Schema::Bytes => {
                    let length = self.input.length()?;
                    visitor.visit_borrowed_bytes(self.input.take(length)?)
                }
                Schema::Fixed(fixed) => visitor.visit_borrowed_bytes(self.input.take(fixed.size)?),
                other => error(format!("a decimal on {other:?}")),
            },
            Schema::String => visitor.visit_borrowed_str(self.input.str()?),
            Schema::Record(record) => visitor.visit_map(RecordAccess {
                input: self.input,
                fields: &record.fields,
                next: 0,
                by_position: false,
                lasting: self.lasting,
            }),
            Schema::Enum(schema) => {
                let symbol = self.enum_symbol(&schema.symbols)?;
                visitor.visit_str(symbol)
            }
            Schema::Union(union) => {
                let branch = self.union_branch(union)?;
                self.with(branch).deserialize_any(visitor)
            }
            Schema::Array(array) => visitor.visit_seq(BlockAccess {
                input: self.input,
                schema: &array.items,
                left: 0,
                done: false,
                lasting: self.lasting,
            }),
            Schema::Map(map) => visitor.visit_map(MapAccess {
                input: self.input,
                schema: &map.types,
                left: 0,
                done: false,
                lasting: self.lasting,
            }),
            other => error(format!("the fast reader does not handle {other:?}")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Union(union) => match self.union_branch(union)? {
                Schema::Null => visitor.visit_none(),
                branch => visitor.visit_some(self.with(branch)),
            },
            Schema::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// A struct's fields are named by position when they are its record's, in order (serde's
    /// derived code then matches an index, not a string, per field: 4–8 % less time per
    /// decode in the codec bench); by name otherwise.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.schema {
            Schema::Record(record) => visitor.visit_map(RecordAccess {
                input: self.input,
                fields: &record.fields,
                next: 0,
                by_position: self.lasting && same_order(record, fields),
                lasting: self.lasting,
            }),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.schema {
            Schema::Enum(schema) => {
                let symbol = self.enum_symbol(&schema.symbols)?;
                visitor.visit_enum(symbol.into_deserializer())
            }
            other => error(format!("a Rust enum needs an Avro enum, not {other:?}")),
        }
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

impl<'a, 'de> AvroDeserializer<'a, 'de> {
    fn enum_symbol(&mut self, symbols: &'a [String]) -> Result<&'a str> {
        let index = self.input.long()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| symbols.get(i))
            .map(String::as_str)
            .map_or_else(|| error(format!("enum index {index} is not a symbol")), Ok)
    }
}

/// Whether `record`'s fields are the struct's `fields`, in order. Asked only for schemas that
/// live as long as the process, so the answer is remembered by both addresses (a handful:
/// one per record type and nested record), per thread, without a lock.
fn same_order(record: &RecordSchema, fields: &'static [&'static str]) -> bool {
    /// Answers kept; past this many, each further pair is checked every time.
    const KEPT: usize = 64;
    thread_local! {
        static CHECKED: RefCell<Vec<(usize, usize, usize, bool)>> = const { RefCell::new(Vec::new()) };
    }
    let key = (
        std::ptr::from_ref(record) as usize,
        fields.as_ptr() as usize,
        fields.len(),
    );
    CHECKED.with(|checked| {
        if let Some(&(.., same)) = checked
            .borrow()
            .iter()
            .find(|(r, f, n, _)| (*r, *f, *n) == key)
        {
            return same;
        }
        let same = record.fields.len() == fields.len()
            && record
                .fields
                .iter()
                .zip(fields)
                .all(|(f, name)| f.name == *name);
        let mut checked = checked.borrow_mut();
        if checked.len() < KEPT {
            checked.push((key.0, key.1, key.2, same));
        }
        same
    })
}

struct RecordAccess<'a, 'de> {
    input: &'a mut Input<'de>,
    fields: &'a [RecordField],
    next: usize,
    /// Name each field by its position (see [`same_order`]).
    by_position: bool,
    lasting: bool,
}

impl<'de> de::MapAccess<'de> for RecordAccess<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.fields.get(self.next) {
            Some(_) if self.by_position => seed
                .deserialize((self.next as u64).into_deserializer())
                .map(Some),
            Some(field) => seed
                .deserialize(field.name.as_str().into_deserializer())
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let field = &self.fields[self.next];
        self.next += 1;
        seed.deserialize(AvroDeserializer {
            input: self.input,
            schema: &field.schema,
            lasting: self.lasting,
        })
    }
}

struct BlockAccess<'a, 'de> {
    input: &'a mut Input<'de>,
    schema: &'a Schema,
    left: usize,
    done: bool,
    lasting: bool,
}

impl<'a, 'de> BlockAccess<'a, 'de> {
    fn advance(input: &mut Input<'de>, left: &mut usize, done: &mut bool) -> Result<bool> {
        if *done {
            return Ok(false);
        }
        if *left == 0 {
            *left = input.block_count()?;
            if *left == 0 {
                *done = true;
                return Ok(false);
            }
        }
        *left -= 1;
        Ok(true)
    }
}

impl<'de> de::SeqAccess<'de> for BlockAccess<'_, 'de> {
    type Error = CodecError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !BlockAccess::advance(self.input, &mut self.left, &mut self.done)? {
            return Ok(None);
        }
        seed.deserialize(AvroDeserializer {
            input: self.input,
            schema: self.schema,
            lasting: self.lasting,
        })
        .map(Some)
    }
}

struct MapAccess<'a, 'de> {
    input: &'a mut Input<'de>,
    schema: &'a Schema,
    left: usize,
    done: bool,
    lasting: bool,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !BlockAccess::advance(self.input, &mut self.left, &mut self.done)? {
            return Ok(None);
        }
        let key = self.input.str()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(AvroDeserializer {
            input: self.input,
            schema: self.schema,
            lasting: self.lasting,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn lasting_schema(json: &str) -> &'static Schema {
        Box::leak(Box::new(Schema::parse_str(json).unwrap()))
    }

    fn read<T: for<'de> Deserialize<'de>>(schema: &'static Schema, bytes: &[u8]) -> T {
        let mut input = Input::new(bytes);
        let value = T::deserialize(AvroDeserializer {
            input: &mut input,
            schema,
            lasting: true,
        })
        .unwrap();
        assert_eq!(input.remaining(), 0);
        value
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Pair {
        a: i64,
        b: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Swapped {
        b: String,
        a: i64,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Wider {
        a: i64,
        b: String,
        #[serde(default)]
        c: Option<i64>,
    }

    /// `a` = 3, `b` = "x": zig-zag 3 is 6, then the string's length (1, zig-zag 2) and byte.
    const BYTES: [u8; 3] = [6, 2, b'x'];
    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;

    #[test]
    fn fields_in_the_schemas_order_are_read_by_position_and_others_by_name() {
        let schema = lasting_schema(SCHEMA);
        let Schema::Record(record) = schema else {
            unreachable!()
        };
        assert!(same_order(record, &["a", "b"]));
        assert!(!same_order(record, &["b", "a"]));
        assert!(!same_order(record, &["a", "b", "c"]));
        // Asked again, remembered: the same answers.
        assert!(same_order(record, &["a", "b"]));
        assert!(!same_order(record, &["b", "a"]));

        let expected = Pair {
            a: 3,
            b: "x".into(),
        };
        assert_eq!(read::<Pair>(schema, &BYTES), expected);
        // Again, now from what was remembered.
        assert_eq!(read::<Pair>(schema, &BYTES), expected);
        assert_eq!(
            read::<Swapped>(schema, &BYTES),
            Swapped {
                b: "x".into(),
                a: 3
            }
        );
        assert_eq!(
            read::<Wider>(schema, &BYTES),
            Wider {
                a: 3,
                b: "x".into(),
                c: None
            }
        );
    }
}
