//! Reading one JSON record into typed fields, collecting every problem with its field path.
//!
//! Each accessor removes the field it reads, so what is left at the end is unknown, and an
//! unknown field (usually a typo such as `input_token`) is an error, not a silent loss.
use serde::Serialize;
use serde_json::{Map, Value};
use tally_contract::records::Micros;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One problem with one field of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field, e.g. `usage.prompt_tokens_details.cached_tokens`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
    /// Whether the API key may not send this (a 403 for the whole request).
    #[serde(skip)]
    pub forbidden: bool,
}

/// A record being read: the fields not read yet, and the problems found so far.
#[derive(Debug)]
pub struct Record {
    fields: Fields,
    prefix: String,
    pub(crate) errors: Vec<FieldError>,
}

impl Record {
    /// Starts reading a record; anything but a JSON object is an error.
    pub fn new(value: Value) -> Result<Record, Vec<FieldError>> {
        match value {
            Value::Object(fields) => Ok(Record {
                fields: Fields::from(fields),
                prefix: String::new(),
                errors: Vec::new(),
            }),
            other => Err(vec![FieldError {
                field: String::new(),
                reason: format!("a record must be a JSON object, not {}", kind(&other)),
                forbidden: false,
            }]),
        }
    }

    /// Reads a nested object as a record of its own, with this field's path as prefix.
    pub fn nested(&mut self, key: &str) -> Option<Record> {
        match self.take(key)? {
            Value::Object(fields) => Some(Record {
                fields: Fields::from(fields),
                prefix: self.path(key) + ".",
                errors: Vec::new(),
            }),
            other => {
                self.wrong_type(key, "an object", &other);
                None
            }
        }
    }

    /// Adds the errors of a nested record to this one.
    pub fn absorb(&mut self, nested: Record) {
        self.errors.extend(nested.errors);
    }

    /// Removes and returns a field, treating JSON null as absent.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.fields.remove(key).filter(|v| !v.is_null())
    }

    /// Puts a field back (or in), to be read by a later accessor.
    pub fn set(&mut self, key: &str, value: Value) {
        self.fields.insert(key, value);
    }

    /// Whether the field is present and not null.
    pub fn has(&self, key: &str) -> bool {
        self.fields.get(key).is_some_and(|v| !v.is_null())
    }

    /// A field's full path.
    pub fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Records a problem with a field.
    pub fn error(&mut self, key: &str, reason: impl Into<String>) {
        let field = self.path(key);
        self.errors.push(FieldError {
            field,
            reason: reason.into(),
            forbidden: false,
        });
    }

    /// Records that the key may not send this field's value.
    pub fn forbidden(&mut self, key: &str, reason: impl Into<String>) {
        let field = self.path(key);
        self.errors.push(FieldError {
            field,
            reason: reason.into(),
            forbidden: true,
        });
    }

    fn wrong_type(&mut self, key: &str, expected: &str, got: &Value) {
        self.error(key, format!("expected {expected}, got {}", kind(got)));
    }

    /// An optional non-empty string.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) if s.trim().is_empty() => {
                self.error(key, "must not be empty");
                None
            }
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(key, "a string", &other);
                None
            }
        }
    }

    /// A required non-empty string.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        if !self.has(key) {
            self.fields.remove(key);
            self.error(key, "is required");
            return None;
        }
        self.string(key)
    }

    /// An optional integer within `min..=max`.
    pub fn integer(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let value = self.take(key)?;
        self.integer_value(key, &value, min, max)
    }

    /// An integer field's value within `min..=max`, or its problem recorded.
    fn integer_value(&mut self, key: &str, value: &Value, min: i64, max: i64) -> Option<i64> {
        match value.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) if n < 0 && min == 0 => {
                self.error(key, format!("must not be negative (got {n})"));
                None
            }
            Some(n) => {
                self.error(key, format!("must be between {min} and {max} (got {n})"));
                None
            }
            None => {
                self.wrong_type(key, "an integer", value);
                None
            }
        }
    }

    /// An optional token count: a non-negative integer, at most
    /// [`MAX_TOKENS_PER_CALL`](tally_contract::records::MAX_TOKENS_PER_CALL).
    pub fn tokens(&mut self, key: &str) -> Option<i64> {
        let limit = tally_contract::records::MAX_TOKENS_PER_CALL;
        let value = self.take(key)?;
        let above = value.as_u64().is_some_and(|n| n > limit as u64)
            || value.as_f64().is_some_and(|n| n > limit as f64);
        if above {
            self.error(key, too_many_tokens(&value));
            return None;
        }
        self.integer_value(key, &value, 0, limit)
    }

    /// An optional non-negative number.
    pub fn non_negative_number(&mut self, key: &str) -> Option<f64> {
        let value = self.take(key)?;
        match value.as_f64() {
            Some(n) if n >= 0.0 && n.is_finite() => Some(n),
            Some(n) => {
                self.error(key, format!("must not be negative (got {n})"));
                None
            }
            None => {
                self.wrong_type(key, "a number", &value);
                None
            }
        }
    }

    /// An optional boolean.
    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Bool(b) => Some(b),
            other => {
                self.wrong_type(key, "true or false", &other);
                None
            }
        }
    }

    /// An optional list of non-empty strings.
    pub fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.take(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) if !s.trim().is_empty() => out.push(s),
                        other => self.error(
                            &format!("{key}[{i}]"),
                            format!("expected a non-empty string, got {}", kind(&other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "an array of strings", &other);
                None
            }
        }
    }

    /// An optional object of string values (tags, labels).
    pub fn string_map(&mut self, key: &str) -> Option<std::collections::BTreeMap<String, String>> {
        match self.take(key)? {
            Value::Object(map) => {
                let mut out = std::collections::BTreeMap::new();
                for (name, value) in map {
                    match value {
                        Value::String(s) => {
                            out.insert(name, s);
                        }
                        // Numbers and booleans are fine as labels; say them as JSON does.
                        Value::Number(_) | Value::Bool(_) => {
                            out.insert(name, value.to_string());
                        }
                        other => self.error(
                            &format!("{key}.{name}"),
                            format!("expected a string, got {}", kind(&other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "an object of strings", &other);
                None
            }
        }
    }

    /// An optional timestamp: RFC 3339 text or epoch milliseconds.
    pub fn timestamp(&mut self, key: &str) -> Option<Micros> {
        let value = self.take(key)?;
        match parse_timestamp(&value) {
            Ok(micros) => Some(micros),
            Err(reason) => {
                self.error(key, reason);
                None
            }
        }
    }

    /// A required timestamp.
    pub fn required_timestamp(&mut self, key: &str) -> Option<Micros> {
        if !self.has(key) {
            self.error(key, "is required (RFC 3339 text or epoch milliseconds)");
            return None;
        }
        self.timestamp(key)
    }

    /// An optional value of a closed set, parsed with `FromStr` (whose error lists the set).
    pub fn symbol<T: std::str::FromStr<Err = String>>(&mut self, key: &str) -> Option<T> {
        let text = self.string(key)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(reason) => {
                self.error(key, reason);
                None
            }
        }
    }

    /// Ends reading: fields never read are errors. Returns the problems found.
    pub fn finish(mut self) -> Vec<FieldError> {
        let unknown = std::mem::take(&mut self.fields).into_sorted_keys();
        for key in unknown {
            self.error(&key, "is not a known field");
        }
        self.errors
    }

    /// Ends reading a nested object whose extra fields are allowed (provider usage objects).
    pub fn finish_lenient(self) -> Vec<FieldError> {
        self.errors
    }

    /// Whether any problem was found so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// The fields of a record not read yet: a short list searched by equality. A record has a
/// few dozen fields at most, and equality rejects most keys on their length alone, where a
/// map's ordered search compared the bytes of several keys per lookup (a fifth of the time
/// spent reading an LLM call).
#[derive(Debug, Default)]
struct Fields(Vec<(String, Value)>);

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Fields {
        Fields(map.into_iter().collect())
    }
}

impl Fields {
    fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(name, _)| name == key)
    }

    fn remove(&mut self, key: &str) -> Option<Value> {
        // The order is restored when it matters, in `into_sorted_keys`.
        self.position(key).map(|i| self.0.swap_remove(i).1)
    }

    fn insert(&mut self, key: &str, value: Value) {
        match self.position(key) {
            Some(i) => self.0[i].1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.0[i].1)
    }

    /// The names left, in the order a JSON object's keys are kept in (sorted by bytes), so
    /// unknown fields are reported in the same order whatever was read before.
    fn into_sorted_keys(self) -> Vec<String> {
        let mut keys: Vec<String> = self.0.into_iter().map(|(name, _)| name).collect();
        keys.sort_unstable();
        keys
    }
}

/// Parses RFC 3339 text or epoch milliseconds into epoch microseconds.
pub fn parse_timestamp(value: &Value) -> Result<Micros, String> {
    match value {
        Value::String(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000) as Micros)
            .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}")),
        Value::Number(n) => match n.as_i64() {
            Some(millis) if (0..=253_402_300_799_999).contains(&millis) => Ok(millis * 1_000),
            _ => Err(format!(
                "{n} is not epoch milliseconds (a non-negative integer before year 10000)"
            )),
        },
        other => Err(format!(
            "expected RFC 3339 text or epoch milliseconds, got {}",
            kind(other)
        )),
    }
}

/// The JSON kind of a value, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The reason a token count above the per-call limit is refused.
pub fn too_many_tokens(n: impl std::fmt::Display) -> String {
    format!(
        "{n} is more than {}, the most tokens one call may count (a limit that keeps every sum exact)",
        tally_contract::records::MAX_TOKENS_PER_CALL
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_named_by_its_path() {
        let mut record = Record::new(json!({
            "team": 5, "input_tokens": -3, "usage": {"prompt_tokens": "many"}, "input_token": 1
        }))
        .unwrap();
        assert_eq!(record.string("team"), None);
        assert_eq!(record.tokens("input_tokens"), None);
        let mut usage = record.nested("usage").unwrap();
        assert_eq!(usage.tokens("prompt_tokens"), None);
        record.absorb(usage);
        assert_eq!(record.required_string("provider"), None);
        let errors = record.finish();
        let described: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.reason))
            .collect();
        assert_eq!(
            described,
            [
                "team: expected a string, got a number",
                "input_tokens: must not be negative (got -3)",
                "usage.prompt_tokens: expected an integer, got a string",
                "provider: is required",
                "input_token: is not a known field",
            ]
        );
    }

    #[test]
    fn timestamps_are_rfc3339_or_epoch_millis() {
        assert_eq!(
            parse_timestamp(&json!("2026-11-23T10:00:00.123456Z")),
            Ok(1_795_428_000_123_456)
        );
        assert_eq!(
            parse_timestamp(&json!("2026-11-23T11:00:00+01:00")),
            Ok(1_795_428_000_000_000)
        );
        assert_eq!(
            parse_timestamp(&json!(1_795_428_000_123i64)),
            Ok(1_795_428_000_123_000)
        );
        assert!(parse_timestamp(&json!("yesterday"))
            .unwrap_err()
            .contains("not an RFC 3339"));
        assert!(parse_timestamp(&json!(-1)).is_err());
        assert!(parse_timestamp(&json!(1.5)).is_err());
    }
}
