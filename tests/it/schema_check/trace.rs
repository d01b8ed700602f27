//! The shape of a Rust type as serde sees it: a `Deserializer` that answers every request with
//! a placeholder value and writes down what was asked for (a string, an `i64`, an option of
//! ...). Derived `Deserialize` impls ask for exactly the types of their fields, so tracing a
//! record or row type gives its field names and types without a value of it, and without
//! trusting a fixture to have filled every field.
//!
//! Rust cannot tell a timestamp from other `i64`s (`Micros` is an alias): such fields trace as
//! `int64`, and the comparison expects them so (see `Place::sees`).
use serde::de::value::{BorrowedStrDeserializer, Error};
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, Error as _, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::{Column, Ty};

/// The fields of the struct `T`. `human_readable` is what the tracer tells the type: a record
/// is traced as JSON reads it (a wide integer is then an `i128`; for Avro it asks for "any"),
/// a row as RowBinary writes it (its `Wide` asks for an `i128`, as text only for Arrow).
pub fn struct_fields<T: DeserializeOwned>(human_readable: bool) -> Vec<Column> {
    let mut ty = untraced();
    let result = T::deserialize(Tracer {
        out: &mut ty,
        human_readable,
    });
    let name = std::any::type_name::<T>();
    match (result, ty) {
        (Ok(_), Ty::Record(columns)) => columns,
        (Ok(_), other) => panic!("{name} is not a struct: it traces as {other}"),
        (Err(e), _) => panic!("cannot trace {name}: {e}"),
    }
}

fn untraced() -> Ty {
    Ty::Other("untraced".to_string())
}

/// Records the type asked for into `out` and hands the visitor a placeholder.
struct Tracer<'a> {
    out: &'a mut Ty,
    human_readable: bool,
}

impl Tracer<'_> {
    /// A tracer for a part of this value (an option's content, an element, a field).
    fn part<'b>(&self, out: &'b mut Ty) -> Tracer<'b> {
        Tracer {
            out,
            human_readable: self.human_readable,
        }
    }

    /// A request the vocabulary has no word for: written down as such, and an error, since
    /// no placeholder fits every visitor.
    fn unsupported<T>(self, what: &str) -> Result<T, Error> {
        *self.out = Ty::Other(what.to_string());
        Err(Error::custom(format!("the tracer does not support {what}")))
    }
}

/// `fn deserialize_x` that records `$ty` and visits `$value`.
macro_rules! scalar {
    ($($method:ident => $ty:expr, $visit:ident($value:expr);)+) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            *self.out = $ty;
            visitor.$visit($value)
        })+
    };
}

/// `fn deserialize_x` for types no tally record or row has.
macro_rules! unsupported {
    ($($method:ident),+) => {
        $(fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
            self.unsupported(stringify!($method))
        })+
    };
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    fn is_human_readable(&self) -> bool {
        self.human_readable
    }

    scalar! {
        deserialize_bool => Ty::Bool, visit_bool(false);
        deserialize_i32 => Ty::Int32, visit_i32(0);
        deserialize_i64 => Ty::Int64, visit_i64(0);
        deserialize_i128 => Ty::Int128, visit_i128(0);
        deserialize_f64 => Ty::Float64, visit_f64(0.0);
        deserialize_str => Ty::String, visit_str("");
        deserialize_string => Ty::String, visit_str("");
        deserialize_bytes => Ty::Bytes, visit_bytes(&[]);
        deserialize_byte_buf => Ty::Bytes, visit_bytes(&[]);
    }

    unsupported!(
        deserialize_any,
        deserialize_i8,
        deserialize_i16,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_char,
        deserialize_unit,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut inner = untraced();
        let value = visitor.visit_some(self.part(&mut inner));
        *self.out = Ty::Nullable(Box::new(inner));
        value
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut item = untraced();
        let value = visitor.visit_seq(OneElement {
            tracer: Some(self.part(&mut item)),
        });
        *self.out = Ty::Array(Box::new(item));
        value
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (mut key, mut value) = (untraced(), untraced());
        let result = visitor.visit_map(OneEntry {
            key: Some(self.part(&mut key)),
            value: Some(self.part(&mut value)),
        });
        *self.out = Ty::Map(Box::new(key), Box::new(value));
        result
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut columns = Vec::new();
        let value = visitor.visit_map(Fields {
            names: fields,
            columns: &mut columns,
            human_readable: self.human_readable,
        });
        *self.out = Ty::Record(columns);
        value
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // The variants as serialised, i.e. after `rename`: the symbols.
        *self.out = Ty::Enum(variants.iter().map(|v| v.to_string()).collect());
        match variants.first() {
            Some(first) => visitor.visit_enum(UnitVariant(first)),
            None => Err(Error::custom("an enum without variants")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        self.unsupported("deserialize_unit_struct")
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        self.unsupported("deserialize_tuple")
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        self.unsupported("deserialize_tuple_struct")
    }
}

/// A sequence of one element, traced.
struct OneElement<'a> {
    tracer: Option<Tracer<'a>>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.tracer.take().map(|t| seed.deserialize(t)).transpose()
    }
}

/// A map of one entry, its key and value traced.
struct OneEntry<'a> {
    key: Option<Tracer<'a>>,
    value: Option<Tracer<'a>>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        self.key.take().map(|t| seed.deserialize(t)).transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(tracer) => seed.deserialize(tracer),
            None => Err(Error::custom("a value asked for twice")),
        }
    }
}

/// A struct's fields as map entries, each value traced into a column.
struct Fields<'a> {
    names: &'static [&'static str],
    columns: &'a mut Vec<Column>,
    human_readable: bool,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.names.get(self.columns.len()) {
            Some(name) => seed
                .deserialize(BorrowedStrDeserializer::<Error>::new(name))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self.names[self.columns.len()];
        let mut ty = untraced();
        let value = seed.deserialize(Tracer {
            out: &mut ty,
            human_readable: self.human_readable,
        });
        self.columns.push(Column::new(name, ty));
        value
    }
}

/// The first variant of an enum, which must be a unit variant (tally's enums all are).
struct UnitVariant(&'static str);

impl<'de> EnumAccess<'de> for UnitVariant {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let value = seed.deserialize(BorrowedStrDeserializer::<Error>::new(self.0))?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for UnitVariant {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, Error> {
        Err(Error::custom("the tracer supports unit variants only"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Error> {
        Err(Error::custom("the tracer supports unit variants only"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(Error::custom("the tracer supports unit variants only"))
    }
}
