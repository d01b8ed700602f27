//! Avro `LlmCall`s through a real broker and a real consumer group: keys keep a session on
//! one partition in order, committed offsets are where a restarted consumer resumes.
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tally_contract::records::LlmCall;
use tally_contract::topics::llm_call_key;
use tally_contract::{decode, encode};
use tally_tests::{fixture, kafka_config, unique_name, TestTopic};

const SESSIONS: usize = 4;
const STEPS: usize = 10;

fn calls() -> Vec<LlmCall> {
    let template: LlmCall = fixture("LlmCall");
    let mut calls = Vec::new();
    for session in 0..SESSIONS {
        for step in 0..STEPS {
            let mut call = template.clone();
            call.event_id = format!("call-{session}-{step}");
            call.session_id = Some(format!("sess-{session}"));
            call.step = Some(step as i32);
            call.input_tokens = 1_000 * (step as i64 + 1);
            call.cache_read_tokens = 500 * step as i64;
            call.cache_write_tokens = 0;
            calls.push(call);
        }
    }
    calls
}

fn consumer(group: &str) -> StreamConsumer {
    kafka_config()
        .client_config()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("a consumer")
}

/// Receives `count` messages, decoding each and storing its offset for the next commit.
async fn receive(consumer: &StreamConsumer, count: usize) -> Vec<(i32, LlmCall)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a message within 60 s")
            .expect("a message, not an error");
        let call: LlmCall = decode(message.payload().expect("a payload")).expect("an LlmCall");
        let key = std::str::from_utf8(message.key().expect("a key")).unwrap();
        assert_eq!(
            key,
            llm_call_key(&call),
            "records are keyed tenant/team/session"
        );
        consumer
            .store_offset_from_message(&message)
            .expect("store offset");
        out.push((message.partition(), call));
    }
    out
}

#[tokio::test]
async fn llm_calls_round_trip_and_a_group_resumes_from_committed_offsets() {
    let topic = TestTopic::create("it-llm-calls", 3).await;
    let sent = calls();
    let producer: FutureProducer = kafka_config()
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        .create()
        .expect("a producer");
    for call in &sent {
        let payload = encode(call).unwrap();
        let key = llm_call_key(call);
        producer
            .send(
                FutureRecord::to(&topic.name).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("delivery of {}: {e}", call.event_id));
    }

    let group = unique_name("it-group");
    let half = sent.len() / 2;
    let first = consumer(&group);
    first.subscribe(&[&topic.name]).unwrap();
    let first_half = receive(&first, half).await;
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    drop(first);

    let second = consumer(&group);
    second.subscribe(&[&topic.name]).unwrap();
    let second_half = receive(&second, sent.len() - half).await;
    second
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");

    let received: Vec<(i32, LlmCall)> = first_half.into_iter().chain(second_half).collect();
    let ids: HashSet<&str> = received.iter().map(|(_, c)| c.event_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        sent.len(),
        "every call exactly once across the two consumers"
    );

    // Field for field: what came out is what went in.
    let by_id: BTreeMap<&str, &LlmCall> = received
        .iter()
        .map(|(_, c)| (c.event_id.as_str(), c))
        .collect();
    for call in &sent {
        assert_eq!(by_id[call.event_id.as_str()], call);
    }

    // A session lives on one partition, its steps in order.
    let mut sessions: BTreeMap<String, (HashSet<i32>, Vec<i32>)> = BTreeMap::new();
    for (partition, call) in &received {
        let entry = sessions
            .entry(call.session_id.clone().unwrap())
            .or_default();
        entry.0.insert(*partition);
        entry.1.push(call.step.unwrap());
    }
    assert_eq!(sessions.len(), SESSIONS);
    for (session, (partitions, steps)) in sessions {
        assert_eq!(
            partitions.len(),
            1,
            "{session} spread over partitions {partitions:?}"
        );
        assert_eq!(
            steps,
            (0..STEPS as i32).collect::<Vec<_>>(),
            "{session} out of order"
        );
    }
}
