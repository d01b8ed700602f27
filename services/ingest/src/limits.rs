//! Size limits of one record, so that no record is larger than a Kafka message can be: a
//! record the broker would refuse would make a client retry its whole request forever. Raw
//! prompt, completion, tool-argument and ticket-title text is fingerprinted and never stored,
//! so it is not limited here (only by the body limit).
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::FieldError;

/// Fields whose text is fingerprinted, never stored.
const FINGERPRINTED: [&str; 8] = [
    "prompt",
    "messages",
    "gen_ai.input.messages",
    "completion",
    "output",
    "gen_ai.output.messages",
    "tool_args",
    "title",
];
/// A bound on the fields of the largest record type (LlmCall has 33), for the size check.
const MAX_FIELDS: usize = 40;

/// Record size limits (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLimits {
    /// Longest string field, bytes (event ids, names, models, regions, URLs, ...).
    #[serde(default = "default_max_string_bytes")]
    pub max_string_bytes: usize,
    /// Most tags on one record.
    #[serde(default = "default_max_tags")]
    pub max_tags: usize,
    /// Longest tag key or value, bytes.
    #[serde(default = "default_max_tag_bytes")]
    pub max_tag_bytes: usize,
    /// Most items of a list field (a deploy's `ticket_ids`).
    #[serde(default = "default_max_list_items")]
    pub max_list_items: usize,
}

fn default_max_string_bytes() -> usize {
    2_048
}
fn default_max_tags() -> usize {
    64
}
fn default_max_tag_bytes() -> usize {
    256
}
fn default_max_list_items() -> usize {
    100
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max_string_bytes: default_max_string_bytes(),
            max_tags: default_max_tags(),
            max_tag_bytes: default_max_tag_bytes(),
            max_list_items: default_max_list_items(),
        }
    }
}

impl RecordLimits {
    /// The most bytes of text a record within these limits holds: with the encoding's
    /// overhead, below this plus a few kilobytes.
    pub fn largest_record_bytes(&self) -> usize {
        MAX_FIELDS * self.max_string_bytes
            + self.max_tags * 2 * self.max_tag_bytes
            + self.max_list_items * self.max_string_bytes
    }

    /// Every field of `record` above a limit, named.
    pub fn check(&self, record: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let Value::Object(fields) = record else {
            return errors;
        };
        // One path buffer for the record, grown and cut back on the way down: a path is
        // printed only for a field above a limit.
        let mut path = String::new();
        for (key, value) in fields {
            if FINGERPRINTED.contains(&key.as_str()) {
                continue;
            }
            match (key.as_str(), value) {
                ("tags", Value::Object(tags)) => self.check_tags(tags, &mut errors),
                (_, value) => {
                    path.clear();
                    path.push_str(key);
                    self.check_value(&mut path, value, &mut errors);
                }
            }
        }
        errors
    }

    fn check_tags(&self, tags: &serde_json::Map<String, Value>, errors: &mut Vec<FieldError>) {
        if tags.len() > self.max_tags {
            errors.push(error(
                "tags",
                format!(
                    "{} tags, more than max_tags ({})",
                    tags.len(),
                    self.max_tags
                ),
            ));
            return;
        }
        for (key, value) in tags {
            let text = value.as_str().map_or(0, str::len);
            if key.len() > self.max_tag_bytes || text > self.max_tag_bytes {
                let name: String = key.chars().take(40).collect();
                errors.push(error(
                    &format!("tags.{name}"),
                    format!(
                        "a tag key or value of {} bytes, more than max_tag_bytes ({})",
                        key.len().max(text),
                        self.max_tag_bytes
                    ),
                ));
            }
        }
    }

    fn check_value(&self, path: &mut String, value: &Value, errors: &mut Vec<FieldError>) {
        match value {
            Value::String(text) if text.len() > self.max_string_bytes => errors.push(error(
                path,
                format!(
                    "{} bytes, more than max_string_bytes ({})",
                    text.len(),
                    self.max_string_bytes
                ),
            )),
            Value::Array(items) if items.len() > self.max_list_items => errors.push(error(
                path,
                format!(
                    "{} items, more than max_list_items ({})",
                    items.len(),
                    self.max_list_items
                ),
            )),
            Value::Array(items) => {
                let parent = path.len();
                for (i, item) in items.iter().enumerate() {
                    write!(path, "[{i}]").expect("writing to a String cannot fail");
                    self.check_value(path, item, errors);
                    path.truncate(parent);
                }
            }
            Value::Object(fields) => {
                let parent = path.len();
                for (key, value) in fields {
                    path.push('.');
                    path.push_str(key);
                    self.check_value(path, value, errors);
                    path.truncate(parent);
                }
            }
            _ => {}
        }
    }
}

fn error(field: &str, reason: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason,
        forbidden: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_above_the_limits_are_named_and_fingerprinted_text_is_not_limited() {
        let limits = RecordLimits::default();
        let long = "x".repeat(3_000);
        let tags: serde_json::Map<String, Value> =
            (0..70).map(|i| (format!("k{i}"), json!("v"))).collect();
        let record = json!({"model": long, "prompt": long, "tags": tags,
                            "usage": {"nested": long}, "ticket_ids": vec!["a"; 101]});
        let fields: Vec<String> = limits.check(&record).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["model", "tags", "ticket_ids", "usage.nested"]);
        let one_big_tag = json!({"tags": {"k": "y".repeat(300)}});
        assert_eq!(limits.check(&one_big_tag)[0].field, "tags.k");
        assert!(limits
            .check(&json!({"model": "gpt-4o", "tags": {"a": "b"}}))
            .is_empty());
    }
}
