//! Produces a request's records to Kafka and waits for every acknowledgement; [`Publisher`]
//! is what the server needs of it, so `tally up` can put its local journal in its place.
//!
//! The producer is idempotent with `acks=all`; `message.timeout.ms` is the request's produce
//! deadline, so when Kafka is down every record of the request has failed for certain by the
//! time the request is answered 503, and a retry cannot double it.
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::{IngestConfig, IngestError};

/// One encoded record bound for a topic.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// A boxed future, for [`Publisher`]'s methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the ingest service's records go: Kafka, or `tally up`'s local journal. A request is
/// answered 202 only when `send_all` said every record of it is durable.
pub trait Publisher: Send + Sync + 'static {
    /// What the records go to, as answers and logs name it ("Kafka", "the journal").
    fn destination(&self) -> &'static str;
    /// Sends every message; one result per message, in order, each final.
    fn send_all<'a>(&'a self, messages: &'a [Outgoing]) -> BoxFuture<'a, Vec<Result<(), String>>>;
    /// Records sent but not yet acknowledged.
    fn in_flight(&self) -> usize;
    /// Whether the destination answers within `timeout`.
    fn reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>>;
    /// Waits for records in flight, up to `timeout`.
    fn flush(&self, timeout: Duration) -> Result<(), String>;
}

impl Publisher for KafkaProducer {
    fn destination(&self) -> &'static str {
        "Kafka"
    }
    fn send_all<'a>(&'a self, messages: &'a [Outgoing]) -> BoxFuture<'a, Vec<Result<(), String>>> {
        Box::pin(KafkaProducer::send_all(self, messages))
    }
    fn in_flight(&self) -> usize {
        KafkaProducer::in_flight(self)
    }
    fn reachable(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(KafkaProducer::reachable(self, timeout))
    }
    fn flush(&self, timeout: Duration) -> Result<(), String> {
        KafkaProducer::flush(self, timeout)
    }
}

/// The Kafka producer of the ingest service.
pub struct KafkaProducer {
    producer: FutureProducer,
    timeout: Duration,
}

impl KafkaProducer {
    /// Creates the producer; it connects lazily, so a broker that is down is not an error here.
    pub fn new(config: &IngestConfig) -> Result<KafkaProducer, IngestError> {
        let producer = config
            .kafka
            .client_config()
            .set("client.id", "tally-ingest")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &config.producer.compression)
            .set("linger.ms", config.producer.linger_ms.to_string())
            .set("batch.size", config.producer.batch_size.to_string())
            .set(
                "message.max.bytes",
                config.producer.message_max_bytes.to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                config.producer.queue_max_messages.to_string(),
            )
            .set("message.timeout.ms", config.produce_timeout_ms.to_string())
            .create()
            .map_err(|e| IngestError::Producer(e.to_string()))?;
        Ok(KafkaProducer {
            producer,
            timeout: Duration::from_millis(config.produce_timeout_ms),
        })
    }

    /// Sends every message and waits for each acknowledgement (or failure), in order.
    pub async fn send_all(&self, messages: &[Outgoing]) -> Vec<Result<(), String>> {
        let deadline = Instant::now() + self.timeout;
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let mut record = FutureRecord::to(&message.topic)
                .key(&message.key)
                .payload(&message.payload);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(Ok(delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < deadline =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => {
                        pending.push(Err(format!("the producer refused the record: {error}")));
                        break;
                    }
                }
            }
        }
        let mut results = Vec::with_capacity(pending.len());
        for delivery in pending {
            results.push(match delivery {
                Ok(future) => match future.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => {
                        Err(format!("Kafka did not acknowledge the record: {error}"))
                    }
                    Err(_) => {
                        Err("the producer shut down before the record was acknowledged".into())
                    }
                },
                Err(reason) => Err(reason),
            });
        }
        results
    }

    /// Records waiting for the broker.
    pub fn in_flight(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
    }

    /// Whether the cluster answers a metadata request within `timeout`.
    pub async fn reachable(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|_| ())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// Waits for queued records to be delivered, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.producer.flush(timeout).map_err(|e| e.to_string())
    }
}
