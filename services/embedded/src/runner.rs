//! Runs a processor stage over the journal instead of Kafka: the same
//! [`Stage`] code, one journal frame per transaction.
//!
//! A cycle waits for input, lets up to `commit_interval_ms` pass so records gather, reads up
//! to `max_batch` records, lets the stage process them into a buffer, and appends the buffer
//! with the new input position as one frame. A crash before the frame is whole loses the
//! transaction and nothing else: on restart the stage restores its state from its changelog
//! records in the journal and reads again from the last committed position.
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_contract::clock::now_micros;

use rdkafka::message::{OwnedMessage, Timestamp};
use tally_processor::pipeline::{ApplyRecord, Changelogs, OutputSink, Outputs, Stage, Stats};
use tally_processor::{ProcessorConfig, ProcessorError};

use crate::journal::{Journal, Record};
use crate::EmbeddedError;

/// The journal as a stage's changelog store: every record of the topic, one partition.
pub struct JournalChangelogs<'a>(pub &'a Journal);

impl Changelogs for JournalChangelogs<'_> {
    fn ensure(
        &self,
        _config: &ProcessorConfig,
        _name: &str,
        _input: &str,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }

    fn read(
        &self,
        _config: &ProcessorConfig,
        topic: &str,
        partitions: &[i32],
        apply: &mut ApplyRecord<'_>,
    ) -> Result<(), ProcessorError> {
        if !partitions.contains(&0) {
            return Ok(());
        }
        let mut from = 0;
        loop {
            let records = self
                .0
                .read(topic, from, 10_000)
                .map_err(|e| ProcessorError::ChangelogRead(e.to_string()))?;
            let Some(last) = records.last() else {
                return Ok(());
            };
            from = last.offset + 1;
            for record in &records {
                apply(
                    0,
                    record.offset as i64,
                    &record.key,
                    record.payload.as_deref(),
                )?;
            }
        }
    }
}

/// A transaction's records, gathered until its frame is written.
#[derive(Default)]
struct Buffer(RefCell<Vec<Record>>);

impl OutputSink for Buffer {
    fn send(
        &self,
        topic: &str,
        _partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), ProcessorError> {
        self.0.borrow_mut().push(Record {
            topic: topic.to_string(),
            key: key.to_vec(),
            payload: payload.map(<[u8]>::to_vec),
        });
        Ok(())
    }
}

/// Runs `stage` over the journal until `stop` is set.
pub fn run_stage(
    journal: &Journal,
    config: &ProcessorConfig,
    stage: &mut dyn Stage,
    stop: &AtomicBool,
    stats: &Stats,
) -> Result<(), EmbeddedError> {
    let input = stage.input(config);
    let producer = format!("stage-{}", stage.name());
    stage.on_assignment(&[0], config, &JournalChangelogs(journal))?;
    stage.publish(config, stats);
    let mut position = journal.position(&producer, &input);
    let interval = Duration::from_millis(config.commit_interval_ms);
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        journal.wait(&input, position, interval);
        if journal.end(&input) <= position {
            if stage.wants_idle() {
                let buffer = Buffer::default();
                stage.on_idle(&Outputs::new(&buffer, config, now_micros()), stats)?;
                let records = buffer.0.into_inner();
                if !records.is_empty() {
                    journal.append(&producer, &[(input.clone(), position)], records)?;
                }
                stage.publish(config, stats);
            }
            continue;
        }
        // Let records gather for up to one commit interval: fewer, larger frames.
        let due = last_commit + interval;
        if Instant::now() < due && journal.end(&input) - position < config.max_batch as u64 {
            std::thread::sleep(due - Instant::now());
        }
        let records = journal.read(&input, position, config.max_batch)?;
        let batch: Vec<OwnedMessage> = records
            .into_iter()
            .map(|r| {
                OwnedMessage::new(
                    r.payload,
                    Some(r.key),
                    input.clone(),
                    Timestamp::NotAvailable,
                    0,
                    r.offset as i64,
                    None,
                )
            })
            .collect();
        let next = position + batch.len() as u64;
        let buffer = Buffer::default();
        stage.process(&batch, &Outputs::new(&buffer, config, now_micros()), stats)?;
        journal.append(&producer, &[(input.clone(), next)], buffer.0.into_inner())?;
        stage.publish(config, stats);
        position = next;
        last_commit = Instant::now();
        stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.transactions.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A stage's thread, and what it consumes: its producer name in the journal and its input
/// topic (for retention).
pub struct SpawnedStage {
    pub thread: std::thread::JoinHandle<Result<(), EmbeddedError>>,
    pub producer: String,
    pub input: String,
}

/// Starts the processor's stages (enrich, aggregate, and detect unless disabled) on threads
/// of their own, over the journal.
pub fn spawn_stages(
    journal: Arc<Journal>,
    config: ProcessorConfig,
    enricher: tally_accounting::enrich::Enricher,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) -> Vec<SpawnedStage> {
    let mut stages: Vec<Box<dyn Stage>> = vec![
        Box::new(tally_processor::stages::EnrichStage::new(enricher)),
        Box::new(tally_processor::stages::AggregateStage::default()),
    ];
    if config.detect.enabled {
        stages.push(Box::new(tally_processor::stages::DetectStage::default()));
    }
    stages
        .into_iter()
        .map(|mut stage| {
            let producer = format!("stage-{}", stage.name());
            let input = stage.input(&config);
            let (journal, config, stop, stats) =
                (journal.clone(), config.clone(), stop.clone(), stats.clone());
            let thread = std::thread::Builder::new()
                .name(format!("up-{}", stage.name()))
                .spawn(move || run_stage(&journal, &config, stage.as_mut(), &stop, &stats))
                .expect("a thread can be spawned");
            SpawnedStage {
                thread,
                producer,
                input,
            }
        })
        .collect()
}
