//! Fingerprints of text tally must not keep: prompts, tool arguments, ticket titles. The text
//! is normalised, hashed with SHA-256 and dropped; only `sha256:<hex>` travels on.
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::to_hex;

/// Fingerprint of free text: whitespace runs collapse to one space and the ends are trimmed,
/// so re-wrapped or re-indented copies of one prompt share a fingerprint; case is kept.
pub fn of_text(text: &str) -> String {
    let normalised: Vec<&str> = text.split_whitespace().collect();
    hash(normalised.join(" ").as_bytes())
}

/// Fingerprint of structured content (a message list, tool arguments): strings are hashed as
/// text, anything else as canonical JSON (keys sorted, no insignificant whitespace).
pub fn of_value(value: &Value) -> String {
    match value {
        Value::String(text) => of_text(text),
        other => hash(canonical_json(other).as_bytes()),
    }
}

/// JSON with object keys sorted: serde_json's map is ordered by key unless its
/// `preserve_order` feature is on, which tally does not enable.
pub fn canonical_json(value: &Value) -> String {
    value.to_string()
}

fn hash(bytes: &[u8]) -> String {
    format!("sha256:{}", to_hex(&Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whitespace_does_not_change_a_text_fingerprint_but_words_do() {
        assert_eq!(
            of_text("  Summarise\n the  ticket "),
            of_text("Summarise the ticket")
        );
        assert_ne!(
            of_text("Summarise the ticket"),
            of_text("summarise the ticket")
        );
        assert_eq!(
            of_text("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_order_does_not_change_a_structured_fingerprint() {
        let a: Value = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"content":"hi","role":"user"}"#).unwrap();
        assert_eq!(of_value(&a), of_value(&b));
        assert_ne!(
            of_value(&json!([a])),
            of_value(&json!([{"role":"user","content":"ho"}]))
        );
    }
}
