//! The dead-letter topic: an alert no destination accepted after its retry budget (or that
//! did not decode) is written there with the reason, byte for byte as it was read, by an
//! idempotent producer. The alert counts as finished only once Kafka acknowledged the dead
//! letter; until then its offset is not committed.
use std::time::Duration;
use tally_contract::clock::now_micros;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tally_contract::encode_framed;
use tally_contract::kafka::KafkaConfig;
use tally_contract::records::DeadLetter;
use tally_contract::topics::Topic;
use tally_contract::wire::Framing;

use crate::{NotifyError, Stop, Stopped};

/// The stage name dead letters of this service carry.
pub const STAGE: &str = "notify";

/// A record as it was read from the alert topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A producer to the dead-letter topic; cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    /// Single-object, or the Confluent wire format with the schema id registered at start.
    framing: Framing,
}

impl DeadLetters {
    /// An idempotent producer (`acks=all`) to this deployment's dead-letter topic.
    pub fn new(kafka: &KafkaConfig) -> Result<DeadLetters, NotifyError> {
        let producer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // One try is bounded, so a stopping notifier is not held for librdkafka's 5 min.
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| NotifyError::kafka("create dead-letter producer", e))?;
        Ok(DeadLetters {
            producer,
            topic: kafka.topic(Topic::DeadLetter),
            framing: tally_contract::registry::writer(kafka, &[Topic::DeadLetter])?,
        })
    }

    /// Writes a dead letter for `record` and waits for Kafka's acknowledgement, trying again
    /// (1 s doubling to 30 s) while Kafka refuses. Fails only when `stop` is set first: the
    /// alert is then not finished, and is read again after a restart.
    pub async fn send(
        &self,
        record: &Record,
        error_kind: &str,
        error: String,
        stop: &Stop,
    ) -> Result<(), Stopped> {
        let letter = DeadLetter {
            original: record.payload.clone(),
            key: record.key.clone(),
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            stage: STAGE.into(),
            error_kind: error_kind.into(),
            error,
            failed_at: now_micros(),
        };
        let bytes = match encode_framed(&letter, &self.framing) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Cannot happen for a well-formed DeadLetter; do not lose the alert silently.
                tracing::error!(error = %e, "cannot encode a dead letter; the alert stays unfinished");
                return Err(Stopped);
            }
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            let delivery = self.producer.send(
                FutureRecord::to(&self.topic)
                    .key(record.key.as_deref().unwrap_or_default())
                    .payload(&bytes),
                Duration::from_secs(5),
            );
            match delivery.await {
                Ok(_) => return Ok(()),
                Err((e, _)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "dead letter not written; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait() => return Err(Stopped),
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
