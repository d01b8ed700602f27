//! Request bodies of the JSON endpoints: a JSON array of records, one JSON object, or NDJSON
//! (one object per line). Malformed JSON is an error with its line and column; so is an
//! object that names a key twice (parsers disagree on which one wins, so none is chosen).
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// Why a body is not JSON records; the endpoint answers 400 with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedBody {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// What is wrong there.
    pub reason: String,
}

impl std::fmt::Display for MalformedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed JSON at line {}, column {}: {}",
            self.line, self.column, self.reason
        )
    }
}

/// Splits a body into its records.
pub fn parse_records(body: &[u8]) -> Result<Vec<Value>, MalformedBody> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let (line, column) = position(&body[..e.valid_up_to()]);
        MalformedBody {
            line,
            column,
            reason: "not UTF-8".into(),
        }
    })?;
    match text.trim_start().as_bytes().first() {
        None => Err(MalformedBody {
            line: 1,
            column: 1,
            reason: "the body is empty".into(),
        }),
        Some(b'[') => match serde_json::from_str::<Strict>(text) {
            Ok(Strict(Value::Array(records))) => Ok(records),
            Ok(_) => unreachable!("a JSON text starting with [ is an array"),
            Err(e) => Err(from_serde(&e, 0)),
        },
        Some(_) => parse_ndjson(text),
    }
}

/// NDJSON, or any sequence of JSON objects separated by whitespace: one object written over
/// several lines (as `curl -d` examples are) is one record. Positions are of the whole body.
fn parse_ndjson(text: &str) -> Result<Vec<Value>, MalformedBody> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Strict>()
        .map(|value| value.map(|v| v.0).map_err(|e| from_serde(&e, 0)))
        .collect()
}

/// A JSON value read like `serde_json::Value`, except that an object naming a key twice is
/// an error (`duplicate key "input_tokens"`), with the position of the second.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON numbers are finite: serde_json refuses the others before this.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Strict::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One search of the map per key: the entry found is where the value goes.
            match object.entry(key) {
                Entry::Occupied(twice) => {
                    return Err(de::Error::custom(format!(
                        "duplicate key {:?} in one object",
                        twice.key()
                    )));
                }
                Entry::Vacant(slot) => {
                    let Strict(value) = map.next_value()?;
                    slot.insert(value);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

fn from_serde(error: &serde_json::Error, line_offset: usize) -> MalformedBody {
    let reason = error.to_string();
    // serde_json appends " at line L column C"; the position is given separately.
    let reason = reason
        .split(" at line ")
        .next()
        .unwrap_or(&reason)
        .to_string();
    MalformedBody {
        line: error.line() + line_offset,
        column: error.column(),
        reason,
    }
}

fn position(prefix: &[u8]) -> (usize, usize) {
    let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
    let column = prefix.len()
        - prefix
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_named_twice_is_malformed_with_its_position() {
        let err = parse_records(b"{\"input_tokens\": 1,\n \"input_tokens\": 2}").unwrap_err();
        assert_eq!(err.reason, "duplicate key \"input_tokens\" in one object");
        assert_eq!(err.line, 2);
        let err = parse_records(b"[{\"a\": {\"b\": 1, \"b\": 1}}]").unwrap_err();
        assert_eq!(err.reason, "duplicate key \"b\" in one object");
        // The same key in two objects is fine.
        let records = parse_records(b"{\"a\": 1}\n{\"a\": 2}").unwrap();
        assert_eq!(
            records,
            [serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]
        );
    }

    #[test]
    fn nesting_deeper_than_serde_json_allows_is_malformed_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse_records(deep.as_bytes()).unwrap_err();
        assert_eq!(err.reason, "recursion limit exceeded");
        let deep = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
        let err = parse_records(deep.as_bytes()).unwrap_err();
        assert_eq!(err.reason, "recursion limit exceeded");
    }
    use proptest::prelude::*;

    #[test]
    fn arrays_single_objects_and_ndjson() {
        assert_eq!(parse_records(br#"[{"a":1},{"a":2}]"#).unwrap().len(), 2);
        assert_eq!(parse_records(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(
            parse_records(b"{\"a\":1}\n\n{\"a\":2}\r\n{\"a\":3}\n")
                .unwrap()
                .len(),
            3
        );
        // One object over several lines, as the README's curl examples send it.
        let pretty = b"{\"occurred_at\": \"2026-11-23T10:00:00Z\",\n  \"service\": \"checkout\"}\n";
        assert_eq!(parse_records(pretty).unwrap().len(), 1);
        assert_eq!(parse_records(b"{\"a\":\n1}\n{\"a\":\n2}").unwrap().len(), 2);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let err = parse_records(b"{\"a\":1}\n{\"a\":}\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 6), "{err}");
        assert_eq!(
            err.to_string(),
            "malformed JSON at line 2, column 6: expected value"
        );
        let err = parse_records(b"[\n {\"a\": 1},\n {\"a\" 2}\n]").unwrap_err();
        assert_eq!((err.line, err.column), (3, 7), "{err}");
        let err = parse_records(b"  \n").unwrap_err();
        assert_eq!(err.reason, "the body is empty");
        let err = parse_records(b"{\"a\":\"\xff\"}").unwrap_err();
        assert_eq!(
            (err.line, err.column, err.reason.as_str()),
            (1, 7, "not UTF-8")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_records(&body);
        }
    }
}
