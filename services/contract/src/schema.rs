//! The embedded Avro schemas: parsing, cross-file references, versions and fingerprints.
//!
//! Each record type has one current schema, `schemas/<Name>.avsc`, and any number of earlier
//! versions, `schemas/history/<Name>.v<N>.avsc`. The current version is one more than the
//! newest historical one. A schema may refer to a named type defined in another file by its
//! full name (`"type": "dev.tally.LlmCall"`); the reference is replaced by the definition
//! before parsing, so every parsed schema is self-contained and its fingerprint covers all of
//! it (the Parsing Canonical Form inlines named types at first use). Historical files are
//! stored self-contained (a version's `json`), so a later change to a referenced type does not
//! rewrite history.
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use apache_avro::rabin::Rabin;
use apache_avro::Schema;
use serde_json::Value as Json;

use crate::{ContractError, Result};

include!(concat!(env!("OUT_DIR"), "/schema_files.rs"));

/// Namespace of every tally schema.
pub const NAMESPACE: &str = "dev.tally";

/// An 8-byte CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, in the
/// little-endian byte order the single-object encoding writes.
pub type Fingerprint = [u8; 8];

/// One version of one record type's schema.
#[derive(Debug, Clone)]
pub struct SchemaVersion {
    /// 1 for the first version; the current one has the highest number.
    pub version: u32,
    /// The parsed, self-contained schema.
    pub schema: Schema,
    /// Fingerprint of its Parsing Canonical Form.
    pub fingerprint: Fingerprint,
    /// The self-contained JSON it was parsed from (references inlined).
    pub json: String,
}

/// All versions of one record type.
#[derive(Debug)]
pub struct RecordSchemas {
    /// Record name without namespace, e.g. `LlmCall`.
    pub name: String,
    /// The version writers use now; readers resolve every version to it.
    pub current: SchemaVersion,
    /// Earlier versions, oldest first.
    pub history: Vec<SchemaVersion>,
}

impl RecordSchemas {
    /// The version a writer with this fingerprint used, if it is a known one.
    pub fn writer(&self, fingerprint: &Fingerprint) -> Option<&SchemaVersion> {
        std::iter::once(&self.current)
            .chain(&self.history)
            .find(|v| &v.fingerprint == fingerprint)
    }
}

/// Every record type's schemas, parsed once.
pub fn registry() -> &'static HashMap<String, RecordSchemas> {
    static REGISTRY: OnceLock<HashMap<String, RecordSchemas>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        build_registry(SCHEMA_FILES).unwrap_or_else(|err| {
            // The files are compiled in; a bad one is a defect that every test catches.
            panic!("embedded Avro schemas are invalid: {err}")
        })
    })
}

/// The schemas of one record type by its name (`LlmCall`).
pub fn record_schemas(name: &str) -> Option<&'static RecordSchemas> {
    registry().get(name)
}

/// Parses `(file name, historical, json)` entries into per-record version sets.
pub fn build_registry(files: &[(&str, bool, &str)]) -> Result<HashMap<String, RecordSchemas>> {
    let current: Vec<(&str, Json)> = files
        .iter()
        .filter(|(_, historical, _)| !historical)
        .map(|(file, _, text)| Ok((*file, parse_json(file, text)?)))
        .collect::<Result<_>>()?;
    let library = named_types(current.iter().map(|(_, json)| json));

    let mut histories: HashMap<String, Vec<SchemaVersion>> = HashMap::new();
    for (file, _, text) in files.iter().filter(|(_, historical, _)| *historical) {
        let (name, version) = parse_history_file_name(file)?;
        let parsed = parse_version(file, parse_json(file, text)?, &library, version)?;
        histories.entry(name).or_default().push(parsed);
    }

    let mut registry = HashMap::new();
    for (file, json) in current {
        let name = file.trim_end_matches(".avsc").to_string();
        let mut history = histories.remove(&name).unwrap_or_default();
        history.sort_by_key(|v| v.version);
        check_history_numbering(&name, &history)?;
        let version = history.len() as u32 + 1;
        let current = parse_version(file, json, &library, version)?;
        registry.insert(
            name.clone(),
            RecordSchemas {
                name,
                current,
                history,
            },
        );
    }
    if let Some(orphan) = histories.keys().next() {
        return Err(ContractError::SchemaFile {
            file: format!("history/{orphan}.v*.avsc"),
            reason: format!("no current schema {orphan}.avsc for this history"),
        });
    }
    Ok(registry)
}

fn parse_json(file: &str, text: &str) -> Result<Json> {
    serde_json::from_str(text).map_err(|e| ContractError::SchemaFile {
        file: file.to_string(),
        reason: format!("not JSON: {e}"),
    })
}

fn parse_history_file_name(file: &str) -> Result<(String, u32)> {
    let bad = || ContractError::SchemaFile {
        file: file.to_string(),
        reason: "a historical schema must be named <Record>.v<N>.avsc".to_string(),
    };
    let stem = file.strip_suffix(".avsc").ok_or_else(bad)?;
    let (name, version) = stem.rsplit_once(".v").ok_or_else(bad)?;
    let version = version.parse().map_err(|_| bad())?;
    Ok((name.to_string(), version))
}

fn check_history_numbering(name: &str, history: &[SchemaVersion]) -> Result<()> {
    for (index, version) in history.iter().enumerate() {
        if version.version != index as u32 + 1 {
            return Err(ContractError::SchemaFile {
                file: format!("history/{name}.v{}.avsc", version.version),
                reason: format!("versions of {name} must be numbered 1, 2, 3, ... without gaps"),
            });
        }
    }
    Ok(())
}

fn parse_version(
    file: &str,
    json: Json,
    library: &HashMap<String, Json>,
    version: u32,
) -> Result<SchemaVersion> {
    let mut defined = HashSet::new();
    let inlined = inline_references(json, NAMESPACE, &mut defined, library);
    let text = inlined.to_string();
    let schema = Schema::parse_str(&text).map_err(|e| ContractError::SchemaFile {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    let fingerprint = fingerprint(&schema);
    Ok(SchemaVersion {
        version,
        schema,
        fingerprint,
        json: text,
    })
}

/// The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, little-endian.
pub fn fingerprint(schema: &Schema) -> Fingerprint {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    bytes.try_into().expect("a Rabin fingerprint is 8 bytes")
}

/// Every named type (record, enum, fixed) defined anywhere in the given schemas, by full name.
fn named_types<'a>(schemas: impl Iterator<Item = &'a Json>) -> HashMap<String, Json> {
    let mut out = HashMap::new();
    for schema in schemas {
        collect_named(schema, NAMESPACE, &mut out);
    }
    out
}

fn collect_named(json: &Json, namespace: &str, out: &mut HashMap<String, Json>) {
    match json {
        Json::Array(members) => members
            .iter()
            .for_each(|m| collect_named(m, namespace, out)),
        Json::Object(map) => {
            let namespace = map
                .get("namespace")
                .and_then(Json::as_str)
                .unwrap_or(namespace);
            if let Some(name) = map.get("name").and_then(Json::as_str) {
                out.insert(full_name(name, namespace), json.clone());
            }
            for key in ["items", "values"] {
                if let Some(inner) = map.get(key) {
                    collect_named(inner, namespace, out);
                }
            }
            for field in map
                .get("fields")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = field.get("type") {
                    collect_named(t, namespace, out);
                }
            }
        }
        _ => {}
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// Replaces the first use of a named type defined in another file by its definition.
fn inline_references(
    json: Json,
    namespace: &str,
    defined: &mut HashSet<String>,
    library: &HashMap<String, Json>,
) -> Json {
    match json {
        Json::String(name) => {
            let full = full_name(&name, namespace);
            match library.get(&full) {
                Some(definition) if !defined.contains(&full) => {
                    inline_references(definition.clone(), namespace, defined, library)
                }
                _ => Json::String(name),
            }
        }
        Json::Array(members) => Json::Array(
            members
                .into_iter()
                .map(|m| inline_references(m, namespace, defined, library))
                .collect(),
        ),
        Json::Object(mut map) => {
            let namespace = map
                .get("namespace")
                .and_then(Json::as_str)
                .unwrap_or(namespace)
                .to_string();
            let is_named_type = matches!(
                map.get("type").and_then(Json::as_str),
                Some("record" | "enum" | "fixed")
            );
            if let (true, Some(name)) = (is_named_type, map.get("name").and_then(Json::as_str)) {
                defined.insert(full_name(name, &namespace));
            }
            for key in ["items", "values"] {
                if let Some(inner) = map.remove(key) {
                    let inner = inline_references(inner, &namespace, defined, library);
                    map.insert(key.to_string(), inner);
                }
            }
            if let Some(Json::Array(fields)) = map.remove("fields") {
                let fields = fields
                    .into_iter()
                    .map(|mut field| {
                        if let Some(t) = field.get_mut("type") {
                            let inner = inline_references(t.take(), &namespace, defined, library);
                            *t = inner;
                        }
                        field
                    })
                    .collect();
                map.insert("fields".to_string(), Json::Array(fields));
            }
            Json::Object(map)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-64-AVRO exactly as the Avro specification gives it, to check the library against.
    fn spec_fingerprint64(bytes: &[u8]) -> u64 {
        const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            }
            *slot = fp;
        }
        bytes.iter().fold(EMPTY, |fp, b| {
            (fp >> 8) ^ table[((fp ^ *b as u64) & 0xff) as usize]
        })
    }

    #[test]
    fn every_embedded_schema_parses_and_has_a_doc_per_field() {
        let registry = registry();
        let mut names: Vec<_> = registry.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "Alert",
                "DeadLetter",
                "DeployEvent",
                "EnrichedLlmCall",
                "LlmCall",
                "LoopSignal",
                "SpendWindow",
                "TicketEvent"
            ]
        );
        for (name, schemas) in registry {
            let json: Json = serde_json::from_str(&schemas.current.json).unwrap();
            assert_eq!(json["namespace"], NAMESPACE, "{name}");
            for field in json["fields"].as_array().unwrap() {
                let doc = field["doc"].as_str().unwrap_or_default();
                assert!(!doc.is_empty(), "{name}.{} has no doc", field["name"]);
            }
        }
    }

    #[test]
    fn fingerprints_follow_the_avro_specification() {
        for schemas in registry().values() {
            let canonical = schemas.current.schema.canonical_form();
            let expected = spec_fingerprint64(canonical.as_bytes()).to_le_bytes();
            assert_eq!(schemas.current.fingerprint, expected, "{}", schemas.name);
        }
    }

    #[test]
    fn canonical_form_strips_docs_defaults_and_logical_types() {
        let canonical = registry()["LlmCall"].current.schema.canonical_form();
        assert!(canonical.starts_with(r#"{"name":"dev.tally.LlmCall","type":"record""#));
        for stripped in ["doc", "default", "logicalType"] {
            assert!(
                !canonical.contains(stripped),
                "canonical form keeps {stripped}"
            );
        }
    }

    #[test]
    fn references_to_other_files_are_inlined_once() {
        let enriched = &registry()["EnrichedLlmCall"].current.json;
        assert_eq!(enriched.matches(r#""name":"LlmCall""#).count(), 1);
        let alert = &registry()["Alert"].current.json;
        assert_eq!(alert.matches(r#""name":"Severity""#).count(), 1);
    }

    #[test]
    fn history_versions_are_numbered_and_resolved() {
        let current = r#"{"type":"record","name":"R","namespace":"dev.tally","fields":[
            {"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;
        let v1 = r#"{"type":"record","name":"R","namespace":"dev.tally","fields":[
            {"name":"a","type":"long"}]}"#;
        let registry = build_registry(&[("R.avsc", false, current), ("R.v1.avsc", true, v1)])
            .expect("valid files");
        let r = &registry["R"];
        assert_eq!(r.current.version, 2);
        assert_eq!(r.history.len(), 1);
        assert_eq!(r.writer(&r.history[0].fingerprint).unwrap().version, 1);
        assert_ne!(r.current.fingerprint, r.history[0].fingerprint);

        let err = build_registry(&[("R.avsc", false, current), ("R.v2.avsc", true, v1)])
            .expect_err("a gap in the numbering is refused");
        assert!(err.to_string().contains("without gaps"), "{err}");
        let err = build_registry(&[("R.v1.avsc", true, v1)]).expect_err("orphan history");
        assert!(
            err.to_string().contains("no current schema R.avsc"),
            "{err}"
        );
    }
}
