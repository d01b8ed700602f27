//! Consume → batch → insert → commit: each configured topic into its ClickHouse table
//! ([`crate::tables`]), one consumer (group `<group_id>-<table>`) per table.
//!
//! A batch is the consecutive records of all the partitions the consumer reads, streamed into
//! one INSERT as they are decoded (ClickHouse ingests while the consumer reads) and ended when
//! the batch holds `batch_max_rows` rows or `batch_max_bytes` bytes, or its first row has
//! waited `batch_max_wait_ms`; the next batch is read while that INSERT finishes. Each batch
//! carries a deduplication token of its own, the same on every retry of it (an exact retry is
//! dropped by ClickHouse), and only after ClickHouse acknowledged the insert are its
//! partitions' offsets committed. A crash in between replays the batch: the table's
//! ReplacingMergeTree on the event id collapses any duplicate, so totals read with FINAL stay
//! exact.
//!
//! ClickHouse down: the insert is retried with backoff (1 s doubling to 30 s) while nothing
//! more is read, so memory stays bounded by two batches (one inserting, one full). ClickHouse up but
//! refusing the batch: its rows are inserted one by one and each row it refuses goes to the
//! dead-letter topic with the server's error. A record that does not decode goes there too.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_contract::kafka::RebalanceFlag;

use clickhouse::Client;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tally_contract::encode_framed;
use tally_contract::records::DeadLetter;
use tally_contract::topics::Topic;

use crate::tables::SinkTable;
use crate::{SinkConfig, SinkError};

/// Rows on their way to one INSERT: consecutive records of any of the consumer's
/// partitions, with the offsets to commit once ClickHouse acknowledged them.
struct Batch<R: clickhouse::Row> {
    rows: Vec<Pending<R>>,
    /// The INSERT the rows are streamed into as they are read (so ClickHouse ingests while
    /// the consumer reads), ended when the batch is flushed; `None` before the first row, or
    /// after the stream failed (the flush then sends the rows it holds again).
    insert: Option<clickhouse::insert::Insert<R>>,
    /// The batch's deduplication token, the same for each retry of it.
    token: String,
    /// First and last offset read of each partition (a record that went to the dead-letter
    /// topic included: its offset is committed with the batch).
    offsets: BTreeMap<i32, (i64, i64)>,
    bytes: usize,
    /// When its first record was read; `None` while it is empty.
    started: Option<Instant>,
}

/// A decoded row with the record it came from (for a dead letter that can be replayed).
struct Pending<R> {
    partition: i32,
    offset: i64,
    row: R,
    original: Original,
}

/// Counters of the sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub rows: std::sync::atomic::AtomicU64,
    pub batches: std::sync::atomic::AtomicU64,
    pub dead_letters: std::sync::atomic::AtomicU64,
    /// Time spent inserting and committing batches, for the progress log (Prometheus has
    /// `tally_sink_insert_seconds`, in base units).
    pub insert_micros: std::sync::atomic::AtomicU64,
    /// Seconds from a batch's first insert attempt to ClickHouse's acknowledgement (retries
    /// included).
    pub insert_seconds: tally_contract::metrics::Histogram,
    /// Records behind the end of each table's topic (over its partitions), measured every ten
    /// seconds.
    pub lag: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

/// The ClickHouse client these settings name.
pub fn client(config: &SinkConfig) -> Client {
    let mut client = Client::default()
        .with_url(&config.clickhouse.url)
        .with_user(&config.clickhouse.user);
    if !config.clickhouse.password.is_empty() {
        client = client.with_password(&config.clickhouse.password);
    }
    client.with_database(&config.clickhouse.database)
}

/// Refuses to start when a table lacks a column its rows carry (or has one they do not),
/// naming it.
pub async fn check_schema<T: SinkTable>(
    client: &Client,
    database: &str,
    stop: &AtomicBool,
) -> Result<(), SinkError> {
    let table = T::TABLE;
    // A server that is down or restarting at start-up is waited for, as an outage later is
    // (a sink restarted during an outage must not exit); an answer refusing the query stops.
    let mut backoff = Backoff::new();
    let columns: Vec<String> = loop {
        match client
            .query("SELECT name FROM system.columns WHERE database = ? AND table = ? AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')")
            .bind(database)
            .bind(table)
            .fetch_all()
            .await
        {
            Ok(columns) => break columns,
            Err(error) if refused(&error) => return Err(SinkError::ClickHouse(error.to_string())),
            // Asked to stop before the server came back: nothing was read, nothing to flush.
            Err(error) if stop.load(Ordering::SeqCst) => {
                return Err(SinkError::ClickHouse(format!(
                    "stopped while waiting for ClickHouse at start: {error}"
                )))
            }
            Err(error) => {
                tracing::warn!(%error, table, retry_in = ?backoff.next, "ClickHouse unavailable at start; waiting for it");
                backoff.wait().await;
            }
        }
    };
    if columns.is_empty() {
        return Err(SinkError::Schema(format!(
            "table {database}.{table} does not exist; run `tally migrate` first"
        )));
    }
    for name in <T::Row as clickhouse::Row>::COLUMN_NAMES {
        if !columns.iter().any(|c| c == name) {
            return Err(SinkError::Schema(format!(
                "column {database}.{table}.{name} is missing (the sink writes it); run `tally migrate`"
            )));
        }
    }
    // A column the sink does not write (an operator's, or a migration run ahead of a rolling
    // upgrade) takes its default: the insert names its columns, so it is noted, not refused.
    for column in &columns {
        if !<T::Row as clickhouse::Row>::COLUMN_NAMES.contains(&column.as_str()) {
            tracing::warn!(
                table,
                column,
                "a column this sink does not write; its rows get the column's default"
            );
        }
    }
    Ok(())
}

/// Runs one table's sink until `stop` is set, then flushes what it holds.
pub async fn run<T: SinkTable>(
    config: SinkConfig,
    stop: Arc<AtomicBool>,
    stats: Arc<SinkStats>,
) -> Result<(), SinkError> {
    let client = client(&config);
    check_schema::<T>(&client, &config.clickhouse.database, &stop).await?;
    let topic = config.kafka.topic(T::TOPIC);
    let consumer: StreamConsumer<RebalanceFlag> = config
        .kafka
        .client_config()
        .set("group.id", format!("{}-{}", config.group_id, T::TABLE))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .create_with_context(RebalanceFlag::new(
            "dropping unsent batches (their offsets are not committed)",
        ))
        .map_err(|e| SinkError::Kafka(e.to_string()))?;
    consumer
        .subscribe(&[&topic])
        .map_err(|e| SinkError::Kafka(e.to_string()))?;
    let producer: FutureProducer = config
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .map_err(|e| SinkError::Kafka(e.to_string()))?;
    let kafka = config.kafka.clone();
    let framing = tokio::task::spawn_blocking(move || {
        tally_contract::registry::writer(&kafka, &[Topic::DeadLetter])
    })
    .await
    .map_err(|e| SinkError::Kafka(format!("schema registry set-up: {e}")))??;
    let sink = Arc::new(Sink::<T> {
        framing,
        config,
        client,
        consumer,
        producer,
        topic,
        stats,
        table: std::marker::PhantomData,
    });
    sink.run(&stop).await
}

struct Sink<T: SinkTable> {
    /// How dead letters are framed (single-object, or the Confluent wire format).
    framing: tally_contract::wire::Framing,
    config: SinkConfig,
    client: Client,
    consumer: StreamConsumer<RebalanceFlag>,
    producer: FutureProducer,
    topic: String,
    stats: Arc<SinkStats>,
    table: std::marker::PhantomData<T>,
}

/// The insert and commit of the batch before the one being read, on a task of its own.
type InFlight = tokio::task::JoinHandle<Result<(), SinkError>>;

impl<T: SinkTable> Sink<T> {
    /// Reads into one batch while the batch before it is inserted (at most one insert in
    /// flight and one full batch waiting for it, so memory stays bounded by two batches):
    /// decoding and reading go on while ClickHouse ingests, and the insert's encoding runs
    /// on another worker thread. Batches are flushed in the order they were read, each
    /// committing its offsets after its acknowledgement.
    async fn run(self: &Arc<Self>, stop: &AtomicBool) -> Result<(), SinkError> {
        let mut open = Batch::new(&self.topic);
        let mut full: Option<Batch<T::Row>> = None;
        let mut in_flight: Option<InFlight> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut lag_measured = Instant::now();
        let wait = Duration::from_millis(self.config.batch_max_wait_ms);
        tracing::info!(topic = %self.topic, table = T::TABLE, "sink running");
        while !stop.load(Ordering::SeqCst) {
            tokio::select! {
                done = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                    in_flight = None;
                    done.map_err(|e| SinkError::Config(format!("a sink insert panicked: {e}")))??;
                }
                message = self.consumer.recv(), if full.is_none() => {
                    self.drop_on_rebalance(&mut open, &mut full);
                    match message {
                        Ok(message) => match self.add(&mut open, &message, stop).await {
                            Ok(()) => {}
                            Err(newer @ SinkError::NewerRecord { .. }) => {
                                // What came before it is written and committed; the record
                                // itself waits for an upgraded sink.
                                self.drain(in_flight.take(), full.take(), open).await?;
                                return Err(newer);
                            }
                            Err(other) => return Err(other),
                        },
                        Err(error) => tracing::warn!(%error, "consumer error"),
                    }
                    if self.is_full(&open) {
                        full = Some(std::mem::replace(&mut open, Batch::new(&self.topic)));
                    }
                }
                _ = tick.tick() => {
                    self.drop_on_rebalance(&mut open, &mut full);
                    if lag_measured.elapsed() >= Duration::from_secs(10) {
                        lag_measured = Instant::now();
                        self.measure_lag();
                    }
                    if full.is_none() && open.started.is_some_and(|started| started.elapsed() >= wait) {
                        full = Some(std::mem::replace(&mut open, Batch::new(&self.topic)));
                    }
                }
            }
            if in_flight.is_none() {
                if let Some(batch) = full.take() {
                    let sink = self.clone();
                    in_flight = Some(tokio::spawn(async move { sink.flush(batch).await }));
                }
            }
        }
        self.drain(in_flight, full, open).await?;
        tracing::info!("sink stopped after flushing");
        Ok(())
    }

    /// Waits for the insert in flight, then flushes the batches still held, in order.
    async fn drain(
        &self,
        in_flight: Option<InFlight>,
        full: Option<Batch<T::Row>>,
        open: Batch<T::Row>,
    ) -> Result<(), SinkError> {
        if let Some(in_flight) = in_flight {
            in_flight
                .await
                .map_err(|e| SinkError::Config(format!("a sink insert panicked: {e}")))??;
        }
        for batch in full.into_iter().chain([open]) {
            self.flush(batch).await?;
        }
        Ok(())
    }

    /// After a rebalance the partitions read may belong to another consumer now: what is
    /// not yet being inserted is dropped (its offsets were not committed, so it is read
    /// again by whoever owns the partition).
    fn drop_on_rebalance(&self, open: &mut Batch<T::Row>, full: &mut Option<Batch<T::Row>>) {
        if self.consumer.context().take() {
            *open = Batch::new(&self.topic);
            *full = None;
        }
    }

    fn is_full(&self, batch: &Batch<T::Row>) -> bool {
        batch.rows.len() >= self.config.batch_max_rows || batch.bytes >= self.config.batch_max_bytes
    }

    /// Records between this consumer's positions and the ends of its partitions.
    fn measure_lag(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let mut lag = 0u64;
        for element in positions.elements() {
            let Some(position) = element.offset().to_raw().filter(|p| *p >= 0) else {
                continue;
            };
            if let Ok((_, high)) = self.consumer.fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_secs(1),
            ) {
                lag += (high - position).max(0) as u64;
            }
        }
        self.stats
            .lag
            .lock()
            .expect("lag lock")
            .insert(T::TABLE, lag);
    }

    /// Decodes a record into the open batch (or sends it to the dead-letter topic, its
    /// offset still committed with the batch).
    async fn add(
        &self,
        batch: &mut Batch<T::Row>,
        message: &BorrowedMessage<'_>,
        stop: &AtomicBool,
    ) -> Result<(), SinkError> {
        let payload = message.payload().unwrap_or_default();
        let (partition, offset) = (message.partition(), message.offset());
        let mut backoff = Backoff::new();
        let decoded = loop {
            match T::row(payload, partition, offset) {
                // The schema registry did not answer: the record waits (nothing after it is
                // read), it is never dead-lettered for that.
                Err(error) if error.is_transient() && !stop.load(Ordering::SeqCst) => {
                    tracing::warn!(%error, retry_in = ?backoff.next, "schema registry unavailable; holding the record and retrying");
                    backoff.wait().await;
                }
                decoded => break decoded,
            }
        };
        let row = match decoded {
            Ok(row) => row,
            Err(error) if error.is_transient() => return Err(SinkError::Contract(error)),
            Err(error) if error.is_unknown_version() => {
                return Err(SinkError::NewerRecord {
                    topic: message.topic().to_string(),
                    partition,
                    offset,
                    reason: error.to_string(),
                })
            }
            Err(error) => {
                self.dead_letter(
                    message.topic(),
                    partition,
                    offset,
                    message.key(),
                    payload,
                    "decode",
                    error.to_string(),
                )
                .await?;
                // Nothing to insert for it, but its offset must be committed with the batch.
                batch.read(partition, offset);
                return Ok(());
            }
        };
        batch.read(partition, offset);
        batch.bytes += payload.len();
        self.stream(batch, &row).await;
        batch.rows.push(Pending {
            partition,
            offset,
            row,
            original: Original {
                key: message.key().map(<[u8]>::to_vec),
                payload: payload.to_vec(),
            },
        });
        Ok(())
    }

    /// Writes a row into the batch's INSERT, opening it with the first row. A failure
    /// (ClickHouse down, or refusing) abandons the stream, which ClickHouse discards
    /// whole: the flush sends the rows again and decides there, with retries.
    async fn stream(&self, batch: &mut Batch<T::Row>, row: &T::Row) {
        if batch.rows.is_empty() {
            let client = self
                .client
                .clone()
                .with_setting("insert_deduplication_token", batch.token.as_str());
            batch.insert = client.insert::<T::Row>(T::TABLE).await.ok();
        }
        if let Some(insert) = &mut batch.insert {
            if let Err(error) = insert.write(row).await {
                tracing::debug!(%error, "streaming insert failed; the flush sends the batch again");
                batch.insert = None;
            }
        }
    }

    /// Ends a batch's INSERT (or sends it again, retrying while ClickHouse is down), then
    /// commits the offsets of every partition it holds.
    async fn flush(&self, mut batch: Batch<T::Row>) -> Result<(), SinkError> {
        if batch.offsets.is_empty() {
            return Ok(());
        }
        let token = batch.token.clone();
        let started = Instant::now();
        if !batch.rows.is_empty() {
            let streamed = match batch.insert.take() {
                Some(insert) => insert.end().await.inspect_err(|error| {
                    tracing::debug!(%error, "streaming insert failed at its end; sending the batch again");
                }).is_ok(),
                None => false,
            };
            if !streamed {
                self.insert_with_retry(&batch.rows, &token).await?;
            }
            self.stats.insert_seconds.observe(started.elapsed());
        }
        self.commit(&batch.offsets)?;
        self.stats
            .rows
            .fetch_add(batch.rows.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .insert_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(rows = batch.rows.len(), %token, "batch inserted");
        Ok(())
    }

    /// Commits the next offset of each partition the batch read that this consumer still
    /// owns (a partition a rebalance gave to another consumer is its to commit: committing
    /// it here could move its offset back).
    fn commit(&self, offsets: &BTreeMap<i32, (i64, i64)>) -> Result<(), SinkError> {
        let owned = self
            .consumer
            .assignment()
            .map_err(|e| SinkError::Kafka(e.to_string()))?;
        let mut list = TopicPartitionList::new();
        for (&partition, &(_, last)) in offsets {
            if owned.find_partition(&self.topic, partition).is_some() {
                list.add_partition_offset(&self.topic, partition, Offset::Offset(last + 1))
                    .map_err(|e| SinkError::Kafka(e.to_string()))?;
            }
        }
        if list.count() == 0 {
            return Ok(());
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Sync) {
            // The rows are in ClickHouse; the replay after a lost commit is deduplicated.
            tracing::warn!(%error, "offset commit failed; the batch will be replayed and deduplicated");
        }
        Ok(())
    }

    async fn insert_with_retry(
        &self,
        rows: &[Pending<T::Row>],
        token: &str,
    ) -> Result<(), SinkError> {
        let mut backoff = Backoff::new();
        loop {
            match insert::<T>(&self.client, rows.iter().map(|p| &p.row), Some(token)).await {
                Ok(()) => return Ok(()),
                Err(error) if refused(&error) => {
                    tracing::warn!(%error, rows = rows.len(), "ClickHouse refused the batch; inserting its rows one by one");
                    return self.insert_one_by_one(rows).await;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff.next, "ClickHouse unavailable; holding the batch and retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Inserts each row of a refused batch on its own: a row ClickHouse refuses (its data)
    /// goes to the dead-letter topic as the record it came from; a failure of the server or
    /// the network holds that row and tries again, so an outage now dead-letters nothing.
    async fn insert_one_by_one(&self, rows: &[Pending<T::Row>]) -> Result<(), SinkError> {
        for pending in rows {
            let (partition, offset) = (pending.partition, pending.offset);
            let token = format!("{}:{partition}:{offset}:row", self.topic);
            let mut backoff = Backoff::new();
            loop {
                match insert::<T>(&self.client, std::iter::once(&pending.row), Some(&token)).await {
                    Ok(()) => break,
                    Err(error) if refused(&error) => {
                        self.dead_letter(
                            &self.topic,
                            partition,
                            offset,
                            pending.original.key.as_deref(),
                            &pending.original.payload,
                            "rejected_by_clickhouse",
                            error.to_string(),
                        )
                        .await?;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, offset, retry_in = ?backoff.next, "ClickHouse unavailable mid-batch; holding the row and retrying");
                        backoff.wait().await;
                    }
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        original: &[u8],
        kind: &str,
        error: String,
    ) -> Result<(), SinkError> {
        let letter = DeadLetter {
            original: original.to_vec(),
            key: key.map(<[u8]>::to_vec),
            topic: topic.to_string(),
            partition,
            offset,
            stage: "sink".into(),
            error_kind: kind.into(),
            error,
            failed_at: tally_contract::clock::now_micros(),
        };
        let bytes = encode_framed(&letter, &self.framing).map_err(SinkError::Contract)?;
        let dead_letter = self.config.kafka.topic(Topic::DeadLetter);
        self.producer
            .send(
                FutureRecord::to(&dead_letter)
                    .key(key.unwrap_or_default())
                    .payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| SinkError::Kafka(format!("dead letter not delivered: {e}")))?;
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl SinkStats {
    /// Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            ("rows_inserted", "Rows ClickHouse acknowledged.", &self.rows),
            ("batches", "Batches inserted and committed.", &self.batches),
            (
                "dead_letters",
                "Records sent to the dead-letter topic.",
                &self.dead_letters,
            ),
        ];
        for (name, help, value) in counters {
            out.push_str(&tally_contract::metrics::counter(
                &format!("tally_sink_{name}_total"),
                help,
                value.load(Ordering::Relaxed),
            ));
        }
        out.push_str(&self.insert_seconds.render(
            "tally_sink_insert_seconds",
            "Time from a batch's first insert attempt to ClickHouse's acknowledgement, retries included.",
        ));
        out.push_str("# HELP tally_sink_lag Records behind the end of the table's topic.\n# TYPE tally_sink_lag gauge\n");
        for (table, lag) in self.lag.lock().expect("lag lock").iter() {
            out.push_str(&format!("tally_sink_lag{{table=\"{table}\"}} {lag}\n"));
        }
        out
    }

    /// Records behind, summed over tables.
    pub fn total_lag(&self) -> u64 {
        self.lag.lock().expect("lag lock").values().sum()
    }
}

impl<R: clickhouse::Row> Batch<R> {
    fn new(topic: &str) -> Batch<R> {
        Batch {
            rows: Vec::new(),
            insert: None,
            token: format!("{topic}:{:016x}", rand::random::<u64>()),
            offsets: BTreeMap::new(),
            bytes: 0,
            started: None,
        }
    }

    /// Notes that `offset` of `partition` was read into this batch.
    fn read(&mut self, partition: i32, offset: i64) {
        self.started.get_or_insert_with(Instant::now);
        self.offsets
            .entry(partition)
            .and_modify(|(_, last)| *last = offset)
            .or_insert((offset, offset));
    }
}

/// A record a row came from.
struct Original {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

/// Waits doubling from 1 s to 30 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Duration::from_secs(1),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
}

/// ClickHouse error codes that say the server is busy, short of memory or going away, not
/// that the data is wrong: retried, never dead-lettered.
const TRANSIENT_CODES: [u32; 16] = [
    3,   // UNEXPECTED_END_OF_FILE
    159, // TIMEOUT_EXCEEDED
    164, // READONLY
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    236, // ABORTED
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

/// Whether ClickHouse refused the data itself (a constraint, a value it cannot store): an
/// answer carrying a ClickHouse error code that is not a transient one. A network failure, a
/// timeout or a busy server is not a refusal.
pub fn refused(error: &clickhouse::error::Error) -> bool {
    let clickhouse::error::Error::BadResponse(text) = error else {
        return false;
    };
    let code = text
        .split("Code: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<u32>().ok());
    code.is_some_and(|code| !TRANSIENT_CODES.contains(&code))
}

/// Inserts rows into `T`'s table in one INSERT, with a deduplication token when given (an
/// exact retry of the same token is dropped by ClickHouse).
pub async fn insert<'r, T: SinkTable>(
    client: &Client,
    rows: impl Iterator<Item = &'r T::Row>,
    token: Option<&str>,
) -> Result<(), clickhouse::error::Error> {
    let client = match token {
        Some(token) => client
            .clone()
            .with_setting("insert_deduplication_token", token),
        None => client.clone(),
    };
    let mut insert = client.insert::<T::Row>(T::TABLE).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_data_is_dead_lettered() {
        let answer = |text: &str| clickhouse::error::Error::BadResponse(text.into());
        assert!(refused(&answer(
            "Code: 469. DB::Exception: Constraint `no_friday_deploys` for table deploys is violated. (VIOLATED_CONSTRAINT)"
        )));
        assert!(refused(&answer(
            "Code: 27. DB::Exception: Cannot parse input. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"
        )));
        assert!(!refused(&answer(
            "Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)"
        )));
        assert!(!refused(&answer(
            "Code: 252. DB::Exception: Too many parts. (TOO_MANY_PARTS)"
        )));
        assert!(
            !refused(&answer("502 Bad Gateway")),
            "a proxy's error is no refusal"
        );
        assert!(!refused(&clickhouse::error::Error::TimedOut));
    }
}
