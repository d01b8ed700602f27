//! Reading each place into columns of the common vocabulary: the Avro schema JSON, the Rust
//! record and row types (traced), ClickHouse's `system.columns` type names, and Arrow schemas.
use std::collections::{BTreeMap, HashMap};

use clickhouse::Row;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::Deserialize;
use serde_json::Value as Json;

use super::trace::struct_fields;
use super::{Column, Ty};

/// Columns of each table or view, by name.
pub type Relations = BTreeMap<String, Vec<Column>>;

// ---- Avro -------------------------------------------------------------------------------

/// The fields of an Avro record schema (self-contained JSON, as the registry holds it).
pub fn avro_fields(schema: &Json) -> Vec<Column> {
    match avro_type(schema, &mut HashMap::new()) {
        Ty::Record(columns) => columns,
        other => panic!("not an Avro record schema: {other}"),
    }
}

/// `names` holds the named types (records, enums) defined so far: a later use of one is a
/// reference by name.
fn avro_type(schema: &Json, names: &mut HashMap<String, Ty>) -> Ty {
    match schema {
        Json::String(name) => avro_named(name, names),
        Json::Array(branches) => avro_union(branches, names),
        Json::Object(object) => match object.get("logicalType").and_then(Json::as_str) {
            Some(logical) => avro_logical(logical, schema),
            None => avro_complex(schema, names),
        },
        other => Ty::Other(other.to_string()),
    }
}

fn avro_named(name: &str, names: &HashMap<String, Ty>) -> Ty {
    match name {
        "string" => Ty::String,
        "bytes" => Ty::Bytes,
        "boolean" => Ty::Bool,
        "int" => Ty::Int32,
        "long" => Ty::Int64,
        "double" => Ty::Float64,
        reference => names
            .get(reference)
            .cloned()
            .unwrap_or_else(|| Ty::Other(reference.to_string())),
    }
}

/// `["null", T]` is a nullable `T`; other unions have no column type.
fn avro_union(branches: &[Json], names: &mut HashMap<String, Ty>) -> Ty {
    let null = Json::String("null".to_string());
    match branches {
        [first, other] | [other, first] if *first == null => {
            Ty::Nullable(Box::new(avro_type(other, names)))
        }
        _ => Ty::Other(Json::Array(branches.to_vec()).to_string()),
    }
}

fn avro_logical(logical: &str, schema: &Json) -> Ty {
    let number = |key: &str| schema.get(key).and_then(Json::as_u64);
    match (logical, schema["type"].as_str()) {
        ("timestamp-micros", Some("long")) => Ty::TimestampMicros,
        ("decimal", Some("bytes")) => decimal(
            number("precision").unwrap_or(0) as u8,
            number("scale").unwrap_or(0) as i8,
        ),
        _ => Ty::Other(schema.to_string()),
    }
}

fn avro_complex(schema: &Json, names: &mut HashMap<String, Ty>) -> Ty {
    let ty = match schema["type"].as_str() {
        Some("record") => Ty::Record(
            schema["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    Column::new(
                        f["name"].as_str().unwrap_or("?"),
                        avro_type(&f["type"], names),
                    )
                })
                .collect(),
        ),
        Some("enum") => Ty::Enum(
            schema["symbols"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
        ),
        Some("array") => Ty::Array(Box::new(avro_type(&schema["items"], names))),
        Some("map") => Ty::Map(
            Box::new(Ty::String),
            Box::new(avro_type(&schema["values"], names)),
        ),
        // `{"type": "long"}` and the like: a primitive written as an object.
        Some(primitive) => avro_named(primitive, names),
        None => Ty::Other(schema.to_string()),
    };
    remember_name(schema, &ty, names);
    ty
}

/// A named type can be referred to by its full name or, in its namespace, by its name.
fn remember_name(schema: &Json, ty: &Ty, names: &mut HashMap<String, Ty>) {
    let Some(name) = schema["name"].as_str() else {
        return;
    };
    if let Some(namespace) = schema["namespace"].as_str() {
        names.insert(format!("{namespace}.{name}"), ty.clone());
    }
    names.insert(
        format!("{}.{name}", tally_contract::schema::NAMESPACE),
        ty.clone(),
    );
    names.insert(name.to_string(), ty.clone());
}

/// `decimal(38, 0)` is how the contract writes a wide integer (see `tally_contract::wide`).
fn decimal(precision: u8, scale: i8) -> Ty {
    match (precision, scale) {
        (38, 0) => Ty::Int128,
        _ => Ty::Decimal(precision, scale),
    }
}

// ---- Rust -------------------------------------------------------------------------------

/// The fields of a contract record type, as its `Deserialize` asks for them.
pub fn record_fields<T: serde::de::DeserializeOwned>() -> Vec<Column> {
    struct_fields::<T>(true)
}

/// The fields of a sink row type: traced, under the names RowBinary inserts
/// (`Row::COLUMN_NAMES`, which the derive takes from the same struct).
pub fn row_fields<R: Row + serde::de::DeserializeOwned>() -> Vec<Column> {
    let traced = struct_fields::<R>(false);
    let traced_names: Vec<&str> = traced.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        traced_names,
        R::COLUMN_NAMES,
        "{}: serde's fields are not the columns it inserts",
        std::any::type_name::<R>()
    );
    traced
}

// ---- ClickHouse -------------------------------------------------------------------------

#[derive(Debug, Row, Deserialize)]
struct SystemColumn {
    table: String,
    name: String,
    column_type: String,
}

/// Every table's and view's columns in `database`, from `system.columns`.
pub async fn clickhouse_relations(client: &clickhouse::Client, database: &str) -> Relations {
    let rows: Vec<SystemColumn> = client
        .query(
            "SELECT table, name, type AS column_type FROM system.columns \
             WHERE database = ? ORDER BY table, position",
        )
        .bind(database)
        .fetch_all()
        .await
        .expect("system.columns");
    let mut relations = Relations::new();
    for row in rows {
        relations
            .entry(row.table)
            .or_default()
            .push(Column::new(&row.name, clickhouse_type(&row.column_type)));
    }
    // A parameterised view has no columns until called: described with parameters.
    for (view, call) in PARAMETERISED_VIEWS {
        relations.insert(view.to_string(), describe(client, call).await);
    }
    relations
}

/// ClickHouse's parameterised views, each with a call of it.
const PARAMETERISED_VIEWS: [(&str, &str); 1] = [(
    "cost_per_ticket",
    "cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 120)",
)];

/// The columns `DESCRIBE` gives: all of them, since the client checks a row has every column,
/// though only the name and type are read.
#[derive(Debug, Row, Deserialize)]
#[allow(dead_code)]
struct Described {
    name: String,
    #[serde(rename = "type")]
    column_type: String,
    default_type: String,
    default_expression: String,
    comment: String,
    codec_expression: String,
    ttl_expression: String,
}

async fn describe(client: &clickhouse::Client, call: &str) -> Vec<Column> {
    let rows: Vec<Described> = client
        .query(&format!("DESCRIBE (SELECT * FROM {call})"))
        .fetch_all()
        .await
        .unwrap_or_else(|e| panic!("DESCRIBE {call}: {e}"));
    rows.iter()
        .map(|row| Column::new(&row.name, clickhouse_type(&row.column_type)))
        .collect()
}

/// A ClickHouse type name (`LowCardinality(Nullable(String))`, `DateTime64(6, 'UTC')`, ...)
/// in the vocabulary. `LowCardinality` is storage only, so it is dropped.
pub fn clickhouse_type(text: &str) -> Ty {
    let (name, args) = split_type(text.trim());
    let parse = |i: usize| Box::new(clickhouse_type(args[i]));
    match (name, args.len()) {
        ("LowCardinality", 1) => clickhouse_type(args[0]),
        ("Nullable", 1) => Ty::Nullable(parse(0)),
        ("Array", 1) => Ty::Array(parse(0)),
        ("Map", 2) => Ty::Map(parse(0), parse(1)),
        ("DateTime64", 2) if args == ["6", "'UTC'"] => Ty::TimestampMicros,
        ("Decimal", 2) => match (args[0].parse(), args[1].parse()) {
            (Ok(precision), Ok(scale)) => Ty::Decimal(precision, scale),
            _ => Ty::Other(text.to_string()),
        },
        ("String", 0) => Ty::String,
        ("Bool", 0) => Ty::Bool,
        ("Int32", 0) => Ty::Int32,
        ("Int64", 0) => Ty::Int64,
        ("Int128", 0) => Ty::Int128,
        ("Float64", 0) => Ty::Float64,
        _ => Ty::Other(text.to_string()),
    }
}

/// `Name(a, B(c, d))` → `("Name", ["a", "B(c, d)"])`: the arguments split at top-level commas.
fn split_type(text: &str) -> (&str, Vec<&str>) {
    let Some((name, rest)) = text.split_once('(') else {
        return (text, Vec::new());
    };
    let inner = rest.strip_suffix(')').unwrap_or(rest);
    let (mut args, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                args.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(inner[start..].trim());
    (name, args)
}

// ---- Arrow (DataFusion) -----------------------------------------------------------------

/// The columns of an Arrow schema.
pub fn arrow_columns(schema: &Schema) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column::new(f.name(), arrow_field(f)))
        .collect()
}

fn arrow_field(field: &Field) -> Ty {
    let ty = arrow_type(field.data_type());
    match field.is_nullable() {
        true => Ty::Nullable(Box::new(ty)),
        false => ty,
    }
}

fn arrow_type(data_type: &DataType) -> Ty {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ty::String,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Ty::Bytes,
        DataType::Boolean => Ty::Bool,
        DataType::Int32 => Ty::Int32,
        DataType::Int64 => Ty::Int64,
        DataType::Float64 => Ty::Float64,
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
            Ty::TimestampMicros
        }
        // The store's wide integers (`tally_embedded::store::TableSpec::wide`).
        DataType::Decimal128(precision, scale) => decimal(*precision, *scale),
        DataType::List(item) | DataType::LargeList(item) => Ty::Array(Box::new(arrow_field(item))),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                Ty::Map(Box::new(arrow_field(&kv[0])), Box::new(arrow_field(&kv[1])))
            }
            other => Ty::Other(format!("map of {other}")),
        },
        DataType::Dictionary(_, values) => arrow_type(values),
        other => Ty::Other(other.to_string()),
    }
}
