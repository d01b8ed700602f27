//! The Confluent wire format against a real schema registry (Apicurio Registry's Confluent
//! API from `scripts/services.sh`, or `TALLY_SCHEMA_REGISTRY_URL`): a writer registers each
//! topic's current schema under `<topic>-value` with BACKWARD compatibility and frames its
//! records with the id it got; readers look ids up there and read both framings; what the
//! registry refuses, or an id of a schema tally does not know, stops a reader with a message
//! that says so; a registry that does not answer is a transient error (waited for, never a
//! dead letter).
use tally_contract::kafka::KafkaConfig;
use tally_contract::records::{Alert, LlmCall};
use tally_contract::registry::{self, SchemaRegistry, COMPATIBILITY};
use tally_contract::schema::record_schemas;
use tally_contract::topics::Topic;
use tally_contract::wire::{confluent_id, Framing, WireFormat};
use tally_contract::{decode, encode, encode_framed, AvroRecord, ContractError};
use tally_tests::{fixture, require_schema_registry, unique_name};

fn confluent(url: &str) -> KafkaConfig {
    KafkaConfig {
        topic_prefix: format!("{}.", unique_name("sr")),
        wire_format: WireFormat::Confluent,
        schema_registry_url: Some(url.to_string()),
        ..KafkaConfig::default()
    }
}

#[test]
fn a_writer_registers_each_topic_backward_and_frames_records_with_the_registrys_id() {
    let url = require_schema_registry();
    let kafka = confluent(&url);
    let framing = registry::writer(&kafka, &[Topic::LlmCalls, Topic::Alerts]).unwrap();
    let Framing::Confluent(ids) = &framing else {
        panic!("confluent framing expected, got {framing:?}");
    };
    let client = SchemaRegistry::new(&url, None);
    for (topic, record) in [(Topic::LlmCalls, "LlmCall"), (Topic::Alerts, "Alert")] {
        let subject = registry::subject(&kafka.topic(topic));
        assert_eq!(client.compatibility(&subject).unwrap(), COMPATIBILITY);
        // What the registry holds under the id is today's schema, by its canonical form.
        let text = client.schema_text(ids[record]).unwrap();
        let registered = apache_avro::Schema::parse_str(&text).unwrap();
        assert_eq!(
            tally_contract::schema::fingerprint(&registered),
            record_schemas(record).unwrap().current.fingerprint,
            "{subject}"
        );
    }
    // Registering again (a restart, another instance) gets the same ids.
    assert_eq!(
        registry::writer(&kafka, &[Topic::LlmCalls, Topic::Alerts]).unwrap(),
        framing
    );

    let call: LlmCall = fixture("LlmCall");
    let bytes = encode_framed(&call, &framing).unwrap();
    assert_eq!(confluent_id(&bytes), Some(ids["LlmCall"]));
    // The body is the same Avro binary as the single-object encoding's.
    assert_eq!(bytes[5..], encode(&call).unwrap()[10..]);
    assert_eq!(decode::<LlmCall>(&bytes).unwrap(), call);
    let alert: Alert = fixture("Alert");
    assert_eq!(
        decode::<Alert>(&encode_framed(&alert, &framing).unwrap()).unwrap(),
        alert
    );
    // A record type the writer was not set up for is refused, naming it.
    let err = encode_framed(
        &fixture::<tally_contract::records::DeadLetter>("DeadLetter"),
        &framing,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("DeadLetter") && err.contains("no schema id"),
        "{err}"
    );
}

/// Services started together (ingest, process, sink) register the same new subjects and set
/// their compatibility at the same moment: the registry's 409 "already exists" to the losers
/// of that race is asked again, and every one of them starts.
#[test]
fn writers_starting_at_once_all_register_the_same_new_subjects() {
    let url = require_schema_registry();
    let kafka = confluent(&url);
    let topics = [Topic::LlmCalls, Topic::Alerts, Topic::DeadLetter];
    let framings: Vec<_> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| registry::writer(&kafka, &topics)))
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let first = framings[0].as_ref().unwrap();
    for framing in &framings {
        assert_eq!(framing.as_ref().unwrap(), first);
    }
    let client = SchemaRegistry::new(&url, None);
    for topic in topics {
        let subject = registry::subject(&kafka.topic(topic));
        assert_eq!(client.compatibility(&subject).unwrap(), COMPATIBILITY);
    }
}

#[test]
fn a_reader_looks_up_an_id_it_has_not_seen_in_the_registry() {
    let url = require_schema_registry();
    let kafka = confluent(&url);
    let client = SchemaRegistry::new(&url, None);
    // Another writer (not this process) registered the schema: the id is new to the reader.
    let subject = registry::subject(&kafka.topic(Topic::LlmCalls));
    let current = &LlmCall::schemas().current;
    // A different spelling of the same schema (no docs, other white space) gets an id of
    // its own in some registries; the reader knows it by its canonical form all the same.
    let spelled_otherwise = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&current.json).unwrap(),
    )
    .unwrap();
    let id = client.register(&subject, &spelled_otherwise).unwrap();
    let call: LlmCall = fixture("LlmCall");
    let mut bytes = tally_contract::wire::confluent_header(id).to_vec();
    bytes.extend_from_slice(&encode(&call).unwrap()[10..]);
    registry::install_reader(&kafka);
    assert_eq!(decode::<LlmCall>(&bytes).unwrap(), call);

    // An earlier version of the schema, registered by an older writer, is read and resolved
    // to today's (the history of the LlmCall schema holds version 1).
    let v1 = &LlmCall::schemas().history[0];
    let old_subject = registry::subject(&unique_name("sr-old"));
    let old_id = client.register(&old_subject, &v1.json).unwrap();
    let golden_v1 = std::fs::read(tally_tests::golden_dir().join("LlmCall.v1.avro")).unwrap();
    let mut old_bytes = tally_contract::wire::confluent_header(old_id).to_vec();
    old_bytes.extend_from_slice(&golden_v1[10..]);
    assert_eq!(
        decode::<LlmCall>(&old_bytes).unwrap(),
        decode::<LlmCall>(&golden_v1).unwrap()
    );
}

#[test]
fn a_schema_tally_does_not_know_stops_the_reader_and_an_incompatible_one_is_refused() {
    let url = require_schema_registry();
    let kafka = confluent(&url);
    let client = SchemaRegistry::new(&url, None);
    registry::install_reader(&kafka);
    let subject = registry::subject(&kafka.topic(Topic::LlmCalls));
    let foreign = r#"{"type":"record","name":"Other","namespace":"elsewhere","fields":[{"name":"a","type":"long"}]}"#;
    let id = client.register(&subject, foreign).unwrap();
    let mut bytes = tally_contract::wire::confluent_header(id).to_vec();
    bytes.push(2);
    let err = decode::<LlmCall>(&bytes).unwrap_err();
    assert!(err.is_unknown_version(), "{err}");
    assert!(err.to_string().contains("LlmCall"), "{err}");

    // BACKWARD: a field added without a default cannot read what the subject holds.
    client.set_compatibility(&subject, COMPATIBILITY).unwrap();
    let incompatible = r#"{"type":"record","name":"Other","namespace":"elsewhere","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
    let err = client.register(&subject, incompatible).unwrap_err();
    let text = err.to_string();
    assert!(!err.is_transient(), "{text}");
    assert!(
        text.contains(&subject) && text.contains("409"),
        "names the subject and the registry's answer: {text}"
    );
    // A writer whose schema the subject refuses does not start, and says why.
    let err = registry::writer(&kafka, &[Topic::LlmCalls])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&subject) && err.contains("409"), "{err}");
}

#[test]
fn a_registry_that_does_not_answer_is_transient_and_none_configured_says_so() {
    let _ = require_schema_registry();
    let port = tally_tests::free_port();
    let down = SchemaRegistry::new(&format!("http://127.0.0.1:{port}"), None);
    let err = down.schema_text(1).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!err.is_unknown_version(), "{err}");

    // Basic-auth credentials never show.
    let with_auth = SchemaRegistry::new("http://127.0.0.1:1", Some("svc:hunter2-secret"));
    assert!(!format!("{with_auth:?}").contains("hunter2"));
    let config = KafkaConfig {
        schema_registry_basic_auth: Some("svc:hunter2-secret".into()),
        ..KafkaConfig::default()
    };
    assert!(!format!("{config:?}").contains("hunter2"));

    // Confluent without a registry is a configuration error that names the key.
    let kafka = KafkaConfig {
        wire_format: WireFormat::Confluent,
        ..KafkaConfig::default()
    };
    let err = registry::writer(&kafka, &[Topic::LlmCalls]).unwrap_err();
    assert!(matches!(err, ContractError::Config(_)), "{err}");
    assert!(
        err.to_string().contains("kafka.schema_registry_url"),
        "{err}"
    );
}

#[test]
fn single_object_writers_register_nothing() {
    let framing = registry::writer(&KafkaConfig::default(), &[Topic::LlmCalls]).unwrap();
    assert_eq!(framing, Framing::SingleObject);
    let call: LlmCall = fixture("LlmCall");
    assert_eq!(
        encode_framed(&call, &framing).unwrap(),
        encode(&call).unwrap()
    );
}
