//! The contract's golden bytes and schema evolution. No servers needed.
//!
//! For each record type, `golden/<Record>.json` is a fully populated record and
//! `golden/<Record>.v<N>.avro` its single-object encoding under version N of the schema.
//! - The current version's golden bytes must equal what the codec writes today, so an
//!   accidental schema change fails here.
//! - Every version's golden bytes must decode with today's reader (old writers, new readers),
//!   and every historical schema must be able to read today's schema's data (new writers, old
//!   readers): schemas evolve fully compatibly or get a new topic — except where a sum was
//!   widened to a wide integer (`WIDENED`), which today's readers read by field name.
//!
//! To change a schema on purpose: copy the current self-contained schema to
//! `schemas/history/<Record>.v<N>.avsc`, keep `golden/<Record>.v<N>.avro`, edit the schema
//! and the fixture, then run this test once with `TALLY_BLESS=1` to write the new version's
//! golden bytes.
use std::fmt::Debug;
use std::path::PathBuf;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde_json::Value as Json;
use tally_contract::records::{
    Alert, DeadLetter, DeployEvent, EnrichedLlmCall, LlmCall, LoopSignal, SpendWindow, TicketEvent,
};
use tally_contract::schema::registry;
use tally_contract::{decode, encode, AvroRecord, ContractError};
use tally_tests::{fixture, golden_dir};

fn golden_path(record: &str, version: u32) -> PathBuf {
    golden_dir().join(format!("{record}.v{version}.avro"))
}

fn blessing() -> bool {
    std::env::var("TALLY_BLESS").is_ok_and(|v| v == "1")
}

/// A fixture must exercise every field: no nulls, no empty arrays, maps or strings.
fn assert_fully_populated(path: &str, json: &Json) {
    match json {
        Json::Null => panic!("{path} is null in the fixture; populate it"),
        Json::String(s) if s.is_empty() => panic!("{path} is empty in the fixture"),
        Json::Array(items) => {
            assert!(!items.is_empty(), "{path} is empty in the fixture");
        }
        Json::Object(map) => {
            assert!(!map.is_empty(), "{path} is empty in the fixture");
            for (key, value) in map {
                assert_fully_populated(&format!("{path}.{key}"), value);
            }
        }
        _ => {}
    }
}

fn check_golden<T: AvroRecord + PartialEq + Debug>() {
    let name = T::RECORD_NAME;
    let record: T = fixture(name);
    assert_fully_populated(name, &serde_json::to_value(&record).unwrap());
    let bytes = encode(&record).unwrap_or_else(|e| panic!("encoding the {name} fixture: {e}"));
    assert_eq!(decode::<T>(&bytes).unwrap(), record, "{name} round trip");

    let version = T::schemas().current.version;
    let path = golden_path(name, version);
    if blessing() {
        std::fs::write(&path, &bytes).unwrap();
        eprintln!("blessed {}", path.display());
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "no golden bytes {} ({e}); run with TALLY_BLESS=1 once",
            path.display()
        )
    });
    assert!(
        bytes == golden,
        "{name}: the codec no longer writes the golden bytes of {}. If the schema changed on \
         purpose, keep the old version under schemas/history/ (see this file's doc).",
        path.display()
    );
    assert_eq!(
        decode::<T>(&golden).unwrap(),
        record,
        "{name} golden bytes decode"
    );
}

#[test]
fn golden_bytes_of_every_record_type() {
    check_golden::<LlmCall>();
    check_golden::<DeployEvent>();
    check_golden::<TicketEvent>();
    check_golden::<EnrichedLlmCall>();
    check_golden::<SpendWindow>();
    check_golden::<LoopSignal>();
    check_golden::<Alert>();
    check_golden::<DeadLetter>();
    assert_eq!(
        registry().len(),
        8,
        "a new record type needs a check_golden line here"
    );
}

/// Decodes historical golden bytes with today's reader, for one record type.
fn check_history_decodes<T: AvroRecord>() {
    let schemas = T::schemas();
    for old in &schemas.history {
        let path = golden_path(T::RECORD_NAME, old.version);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("golden bytes of an old version {}: {e}", path.display()));
        decode::<T>(&bytes)
            .unwrap_or_else(|e| panic!("today's reader cannot read {}: {e}", path.display()));
    }
}

/// Versions whose sums became wide integers (`tally_contract::wide`): a `long` that is now a
/// `decimal(38, 0)`. Avro's resolution has no such promotion, so today's reader reads those
/// versions by field name (checked below to give the very values), and readers of those
/// versions cannot read today's records: readers upgrade first (README, "Upgrading").
const WIDENED: &[(&str, u32)] = &[("SpendWindow", 1), ("Alert", 1)];

/// A widened version's golden bytes read today as the fixture they were written from.
fn check_widened_reads_the_same_values<T: AvroRecord + PartialEq + Debug>() {
    for (name, version) in WIDENED.iter().filter(|(n, _)| *n == T::RECORD_NAME) {
        let bytes = std::fs::read(golden_path(name, *version)).unwrap();
        let fixture: T = fixture(name);
        assert_eq!(decode::<T>(&bytes).unwrap(), fixture, "{name} v{version}");
    }
}

#[test]
fn todays_readers_read_every_earlier_version() {
    check_widened_reads_the_same_values::<SpendWindow>();
    check_widened_reads_the_same_values::<Alert>();
    check_history_decodes::<LlmCall>();
    check_history_decodes::<DeployEvent>();
    check_history_decodes::<TicketEvent>();
    check_history_decodes::<EnrichedLlmCall>();
    check_history_decodes::<SpendWindow>();
    check_history_decodes::<LoopSignal>();
    check_history_decodes::<Alert>();
    check_history_decodes::<DeadLetter>();
    for schemas in registry().values() {
        for old in &schemas.history {
            if WIDENED.contains(&(schemas.name.as_str(), old.version)) {
                continue;
            }
            SchemaCompatibility::can_read(&old.schema, &schemas.current.schema).unwrap_or_else(
                |e| {
                    panic!(
                        "{} v{} data is unreadable today: {e}",
                        schemas.name, old.version
                    )
                },
            );
            SchemaCompatibility::can_read(&schemas.current.schema, &old.schema).unwrap_or_else(
                |e| {
                    panic!(
                        "{} v{} readers cannot read today's data: {e}",
                        schemas.name, old.version
                    )
                },
            );
        }
    }
}

/// The compatibility check above is not vacuous: a breaking edit of LlmCall is caught.
#[test]
fn a_breaking_schema_change_is_detected() {
    let current = &registry()["LlmCall"].current;
    let mut json: Json = serde_json::from_str(&current.json).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "cost_center", "type": "string"}));
    let breaking = Schema::parse_str(&json.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(&current.schema, &breaking).is_err());

    json["fields"].as_array_mut().unwrap().pop();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "cost_center", "type": "string", "default": ""}));
    let compatible = Schema::parse_str(&json.to_string()).unwrap();
    SchemaCompatibility::can_read(&current.schema, &compatible).unwrap();
    SchemaCompatibility::can_read(&compatible, &current.schema).unwrap();
}

#[test]
fn bytes_of_another_record_type_are_refused_by_fingerprint() {
    let deploy: DeployEvent = fixture("DeployEvent");
    let bytes = encode(&deploy).unwrap();
    match decode::<LlmCall>(&bytes) {
        Err(ContractError::UnknownFingerprint {
            record: "LlmCall", ..
        }) => {}
        other => panic!("expected an unknown fingerprint error, got {other:?}"),
    }
}
