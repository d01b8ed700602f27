//! Fingerprints of text tally must not keep: prompts, tool arguments, ticket titles. The text
//! is normalised, hashed with SHA-256 and dropped; only `sha256:<hex>` travels on.
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::to_hex;

/// Fingerprint of free text: whitespace runs collapse to one space and the ends are trimmed,
/// so re-wrapped or re-indented copies of one prompt share a fingerprint; case is kept.
pub fn of_text(text: &str) -> String {
    // The words are hashed as they are found, with one space between: the same bytes as
    // hashing the joined text, without making it.
    let mut hasher = Sha256::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            hasher.update(b" ");
        }
        hasher.update(word.as_bytes());
    }
    finish(hasher)
}

/// Fingerprint of structured content (a message list, tool arguments): strings are hashed as
/// text, anything else as canonical JSON (keys sorted, no insignificant whitespace).
pub fn of_value(value: &Value) -> String {
    match value {
        Value::String(text) => of_text(text),
        other => {
            // Printed straight into the hash: the bytes of `canonical_json`, never held whole.
            let mut hasher = HashWriter(Sha256::new());
            serde_json::to_writer(&mut hasher, other)
                .expect("a JSON value prints, and hashing cannot fail");
            finish(hasher.0)
        }
    }
}

/// JSON with object keys sorted: serde_json's map is ordered by key unless its
/// `preserve_order` feature is on, which tally does not enable.
pub fn canonical_json(value: &Value) -> String {
    value.to_string()
}

/// Bytes written to it are hashed.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn finish(hasher: Sha256) -> String {
    format!("sha256:{}", to_hex(&hasher.finalize()))
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
    fn fingerprints_hash_the_normalised_text_and_the_canonical_json() {
        let digest = |bytes: &[u8]| format!("sha256:{}", to_hex(&Sha256::digest(bytes)));
        assert_eq!(of_text(" a\tb \n c "), digest(b"a b c"));
        assert_eq!(of_text(" \n "), digest(b""));
        let value: Value = serde_json::from_str(r#"[{"z":"\u00e9\n","a":[1,2.5,null]}]"#).unwrap();
        assert_eq!(of_value(&value), digest(canonical_json(&value).as_bytes()));
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
