//! tally-journal: `tally up`'s durable log between stages, in Kafka's place (it must not know
//! what its records are: bytes, keys and topics only, like Kafka). One append-only
//! file sequence under `<data-dir>/journal/` (`0000000000.journal`, …), one partition per topic.
//!
//! Every write is a **frame** ([`frame`]): the records of one ingest request or of one stage
//! transaction, together with the input position the stage consumed up to, written and fsynced
//! as a whole before anyone is told (the ingest answers 202 after it). So a stage's outputs and
//! its input position are committed together or not at all, as a Kafka transaction with
//! `send_offsets_to_transaction` does.
//!
//! **Failures.** A write that fails part-way (a full disk) is cut back to where the frame
//! began, so the next frame starts there and no offset shifts; if even that fails, or an fsync
//! fails (what reached the disk is then unknown), the journal refuses every later append until
//! it is opened again. On opening, a frame cut short at the very end of the last segment (a
//! crash mid-write) is cut off; anything else that is not a frame — a bad checksum with frames
//! after it, a damaged older segment — is corruption, reported with the file and byte, and the
//! journal does not open.
//!
//! **Retention** ([`Journal::retain`]): the oldest segment is deleted once every consumer of
//! every topic in it has committed past its records, keeping at least `retain_bytes` of the
//! newest segments for replay. What must outlive it is first copied to the end of the
//! journal: the latest record of each key of a compacted topic (a stage's changelog), every
//! record of a topic nobody consumes (dead letters), and the latest position of each producer.
//! A crash between the copy and the deletion is finished on the next open.
mod error;
pub mod frame;

pub use error::JournalError;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::frame::{decode_frame, encode_frame, Frame, FrameError, HEADER};

/// The producer name of the frames retention writes; the segment it empties follows it.
const RETENTION: &str = "journal-retention:";
/// The producer name of the first frame of every segment after the first: its positions are
/// each topic's offset at the start of the segment, so offsets survive the deletion of the
/// segments before it.
const SEGMENT_START: &str = "journal-segment-start";

/// How the journal keeps its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// A new segment file starts once the current one reaches this many bytes.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Bytes of the newest segments kept for replay even when every consumer has read them.
    #[serde(default = "default_retain_bytes")]
    pub retain_bytes: u64,
}

fn default_segment_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_retain_bytes() -> u64 {
    1024 * 1024 * 1024
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: default_segment_bytes(),
            retain_bytes: default_retain_bytes(),
        }
    }
}

/// One record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
}

/// A record read back, with its offset in its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub offset: u64,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
}

/// Where a record is: its frame (segment and byte position) and its index in the frame.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u32,
    frame_at: u64,
    index: u32,
}

/// A topic's records still in the journal: offsets `base..base + locations.len()`.
#[derive(Debug, Default)]
struct TopicIndex {
    base: u64,
    locations: VecDeque<Location>,
}

/// What a segment holds, for retention.
#[derive(Debug)]
struct Segment {
    id: u32,
    bytes: u64,
    /// Per topic, the offset after its last record in this segment.
    ends: HashMap<String, u64>,
}

/// Who reads a topic, for retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readers {
    /// Consumers that commit positions: the records below the lowest can go.
    Consumers(Vec<u64>),
    /// A changelog: only the latest record of each key must stay.
    Compacted,
}

/// What one call of [`Journal::retain`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    pub segments_deleted: u32,
    pub bytes_deleted: u64,
    pub records_copied: u64,
}

struct Inner {
    dir: PathBuf,
    config: JournalConfig,
    file: File,
    segments: Vec<Segment>,
    topics: HashMap<String, TopicIndex>,
    /// (producer, topic) → (next offset, segment of the frame that said so).
    positions: HashMap<(String, String), (u64, u32)>,
    /// Compacted topics: (topic, key) → (offset, segment) of its latest record, when that is
    /// not a tombstone.
    latest: HashMap<(String, Vec<u8>), (u64, u32)>,
    compacted: HashSet<String>,
    frames: u64,
    /// Set when a failed write could not be undone: appends are refused until reopening.
    failed: Option<String>,
    /// The last frame read, decoded: readers usually take a frame's records in a row.
    cache: Option<((u32, u64), Frame)>,
    #[cfg(test)]
    fail_writes_after: Option<usize>,
}

/// The journal. Share it with `Arc`; appends are serialised, reads run beside them.
pub struct Journal {
    inner: Mutex<Inner>,
    appended: Condvar,
}

fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:010}.journal"))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> JournalError {
    move |source| JournalError::Io { context, source }
}

impl Journal {
    /// Opens (or creates) the journal in `dir` with the default settings and no compacted
    /// topics.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        Journal::open_with(dir, JournalConfig::default(), &[])
    }

    /// Opens (or creates) the journal in `dir`, reading every frame back: a frame cut short at
    /// the end of the last segment is cut off; any other damage is an error. `compacted` names
    /// the changelog topics (retention keeps their latest record per key).
    pub fn open_with(
        dir: &Path,
        config: JournalConfig,
        compacted: &[String],
    ) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut ids: Vec<u32> = std::fs::read_dir(dir)
            .map_err(io(format!("cannot read {}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".journal")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            ids.push(0);
        }
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            config,
            file: File::open("/dev/null").map_err(io("cannot open /dev/null".into()))?,
            segments: Vec::new(),
            topics: HashMap::new(),
            positions: HashMap::new(),
            latest: HashMap::new(),
            compacted: compacted.iter().cloned().collect(),
            frames: 0,
            failed: None,
            cache: None,
            #[cfg(test)]
            fail_writes_after: None,
        };
        let last = *ids.last().expect("at least one segment");
        let mut emptied = Vec::new();
        for id in ids {
            let (file, size) = inner.load_segment(id, id == last, &mut emptied)?;
            inner.file = file;
            inner.segments.last_mut().expect("just loaded").bytes = size;
        }
        // A retention that copied what it had to but was stopped before deleting.
        for id in emptied {
            if inner.segments.first().is_some_and(|s| s.id == id) && inner.segments.len() > 1 {
                inner.drop_oldest()?;
            }
        }
        Ok(Journal {
            inner: Mutex::new(inner),
            appended: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one frame and fsyncs it: `records`, and the positions `producer` consumed up
    /// to (`(topic, next offset)`), committed together.
    pub fn append(
        &self,
        producer: &str,
        positions: &[(String, u64)],
        records: Vec<Record>,
    ) -> Result<(), JournalError> {
        let frame = Frame {
            producer: producer.to_string(),
            positions: positions.to_vec(),
            records,
        };
        let mut inner = self.lock();
        inner.append(frame)?;
        drop(inner);
        self.appended.notify_all();
        Ok(())
    }

    /// The next offset `producer` has not consumed of `topic` (0 when it never committed).
    pub fn position(&self, producer: &str, topic: &str) -> u64 {
        self.lock()
            .positions
            .get(&(producer.to_string(), topic.to_string()))
            .map_or(0, |(offset, _)| *offset)
    }

    /// The offset the next record of `topic` will get.
    pub fn end(&self, topic: &str) -> u64 {
        self.lock().end(topic)
    }

    /// The oldest offset of `topic` still in the journal.
    pub fn start(&self, topic: &str) -> u64 {
        self.lock().topics.get(topic).map_or(0, |t| t.base)
    }

    /// Frames in the journal.
    pub fn frames(&self) -> u64 {
        self.lock().frames
    }

    /// Bytes of the journal's segment files.
    pub fn bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.bytes).sum()
    }

    /// Waits up to `timeout` until `topic` has a record at `offset` or beyond.
    pub fn wait(&self, topic: &str, offset: u64, timeout: Duration) {
        let inner = self.lock();
        if inner.end(topic) > offset {
            return;
        }
        let _ = self
            .appended
            .wait_timeout_while(inner, timeout, |inner| inner.end(topic) <= offset);
    }

    /// Up to `max` records of `topic` from `from` on (from its oldest record still kept, when
    /// `from` is older).
    pub fn read(&self, topic: &str, from: u64, max: usize) -> Result<Vec<Stored>, JournalError> {
        let mut inner = self.lock();
        let (first, locations): (u64, Vec<Location>) = match inner.topics.get(topic) {
            Some(index) => {
                let first = from.max(index.base);
                let skip = (first - index.base) as usize;
                let take = index.locations.len().saturating_sub(skip).min(max);
                (
                    first,
                    index.locations.range(skip..skip + take).copied().collect(),
                )
            }
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::with_capacity(locations.len());
        for (i, location) in locations.into_iter().enumerate() {
            let frame = inner.frame(location.segment, location.frame_at)?;
            let record = &frame.records[location.index as usize];
            out.push(Stored {
                offset: first + i as u64,
                key: record.key.clone(),
                payload: record.payload.clone(),
            });
        }
        Ok(out)
    }

    /// Deletes the oldest segments that every reader is done with, keeping the newest
    /// `retain_bytes` and the current segment. `readers` says, per topic, who reads it; a topic
    /// it does not name is kept whole (copied forward when its segment goes).
    pub fn retain(&self, readers: &HashMap<String, Readers>) -> Result<Retained, JournalError> {
        let mut inner = self.lock();
        let mut done = Retained::default();
        // Only segments that were there before: the copies retention writes are not retired
        // in the same call.
        let before = inner.segments.last().map_or(0, |s| s.id);
        while inner.segments.first().is_some_and(|s| s.id < before) {
            let Some(copied) = inner.retire_oldest(readers)? else {
                break;
            };
            done.segments_deleted += 1;
            done.bytes_deleted += copied.1;
            done.records_copied += copied.0;
        }
        drop(inner);
        self.appended.notify_all();
        Ok(done)
    }

    #[cfg(test)]
    fn fail_writes_after(&self, bytes: usize) {
        self.lock().fail_writes_after = Some(bytes);
    }
}

impl Inner {
    fn end(&self, topic: &str) -> u64 {
        self.topics
            .get(topic)
            .map_or(0, |t| t.base + t.locations.len() as u64)
    }

    /// Reads segment `id` into the index; returns its file, open for appending, and its size.
    fn load_segment(
        &mut self,
        id: u32,
        last: bool,
        emptied: &mut Vec<u32>,
    ) -> Result<(File, u64), JournalError> {
        let path = segment_path(&self.dir, id);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io(format!("cannot read {}", path.display())))?;
        self.segments.push(Segment {
            id,
            bytes: 0,
            ends: HashMap::new(),
        });
        let mut at = 0usize;
        while at < bytes.len() {
            match decode_frame(&bytes[at..]) {
                Ok((frame, length)) => {
                    if let Some(segment) = frame.producer.strip_prefix(RETENTION) {
                        emptied.extend(segment.parse::<u32>().ok());
                    }
                    if frame.producer == SEGMENT_START {
                        self.start_offsets(&path, &frame)?;
                    }
                    self.index(id, at as u64, &frame);
                    at += length;
                }
                Err(error) if last && torn(&bytes[at..], &error) => {
                    tracing::warn!(
                        file = %path.display(),
                        at,
                        lost_bytes = bytes.len() - at,
                        "the journal ends in a frame cut short (a crash or a full disk mid-write): cutting it off"
                    );
                    file.set_len(at as u64)
                        .map_err(io(format!("cannot truncate {}", path.display())))?;
                    break;
                }
                Err(error) => {
                    let why = match error {
                        FrameError::Incomplete => "a frame cut short",
                        FrameError::Bad(why) => why,
                    };
                    return Err(JournalError::Corrupt(format!(
                        "{} byte {at}: {why}, with {} bytes after it; the journal stops here \
                         rather than lose what follows (restore the file, or move it away to \
                         start from what precedes it)",
                        path.display(),
                        bytes.len() - at
                    )));
                }
            }
        }
        Ok((file, at as u64))
    }

    /// A segment's start frame: the topics' offsets where it begins. For the oldest segment
    /// kept they are the topics' bases; for any later one they must be where the segments
    /// before it end.
    fn start_offsets(&mut self, path: &Path, frame: &Frame) -> Result<(), JournalError> {
        let first = self.segments.len() == 1;
        for (topic, offset) in &frame.positions {
            if first {
                self.topics.entry(topic.clone()).or_default().base = *offset;
            } else if self.end(topic) != *offset {
                return Err(JournalError::Corrupt(format!(
                    "{} begins at offset {offset} of {topic}, but the segments before it end at {}",
                    path.display(),
                    self.end(topic)
                )));
            }
        }
        Ok(())
    }

    fn index(&mut self, segment: u32, frame_at: u64, frame: &Frame) {
        for (index, record) in frame.records.iter().enumerate() {
            let topic = self.topics.entry(record.topic.clone()).or_default();
            let offset = topic.base + topic.locations.len() as u64;
            topic.locations.push_back(Location {
                segment,
                frame_at,
                index: index as u32,
            });
            let info = self.segments.last_mut().expect("a current segment");
            info.ends.insert(record.topic.clone(), offset + 1);
            if self.compacted.contains(&record.topic) {
                let key = (record.topic.clone(), record.key.clone());
                match record.payload {
                    Some(_) => self.latest.insert(key, (offset, segment)),
                    None => self.latest.remove(&key),
                };
            }
        }
        if frame.producer != SEGMENT_START {
            for (topic, offset) in &frame.positions {
                self.positions
                    .insert((frame.producer.clone(), topic.clone()), (*offset, segment));
            }
        }
        self.frames += 1;
    }

    fn append(&mut self, frame: Frame) -> Result<(), JournalError> {
        if let Some(why) = &self.failed {
            return Err(JournalError::Refused(format!(
                "the journal refuses writes since {why}; restart tally up"
            )));
        }
        let bytes = encode_frame(&frame);
        let size = self.segments.last().map_or(0, |s| s.bytes);
        if size > 0 && size + bytes.len() as u64 > self.config.segment_bytes {
            self.roll()?;
        }
        let segment = self.segments.last().expect("a current segment").id;
        let at = self.segments.last().expect("a current segment").bytes;
        if let Err(error) = self.write(&bytes) {
            // Cut the partial frame off, so the next one starts where this one did.
            let undone = self.file.set_len(at).and_then(|()| self.file.sync_data());
            if let Err(undo) = undone {
                self.failed = Some(format!(
                    "a failed write ({error}) could not be undone ({undo})"
                ));
            }
            return Err(io(format!("cannot write the journal segment {segment}"))(
                error,
            ));
        }
        if let Err(error) = self.file.sync_data() {
            // What reached the disk is unknown: nothing more is written until reopening, which
            // reads what is really there.
            self.failed = Some(format!("an fsync failed ({error})"));
            return Err(io(format!("cannot sync the journal segment {segment}"))(
                error,
            ));
        }
        self.segments.last_mut().expect("a current segment").bytes += bytes.len() as u64;
        self.index(segment, at, &frame);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(limit) = self.fail_writes_after.take() {
            self.file.write_all(&bytes[..limit.min(bytes.len())])?;
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (test)",
            ));
        }
        self.file.write_all(bytes)
    }

    /// Starts the next segment file.
    fn roll(&mut self) -> Result<(), JournalError> {
        let next = self.segments.last().map_or(0, |s| s.id + 1);
        let path = segment_path(&self.dir, next);
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(format!("cannot create {}", path.display())))?;
        self.segments.push(Segment {
            id: next,
            bytes: 0,
            ends: HashMap::new(),
        });
        let mut starts: Vec<(String, u64)> = self
            .topics
            .keys()
            .map(|topic| (topic.clone(), self.end(topic)))
            .collect();
        starts.sort();
        self.append(Frame {
            producer: SEGMENT_START.to_string(),
            positions: starts,
            records: Vec::new(),
        })
    }

    /// Deletes the oldest segment if its readers are done with it; `(records copied, bytes
    /// deleted)`, or `None` when it must stay.
    fn retire_oldest(
        &mut self,
        readers: &HashMap<String, Readers>,
    ) -> Result<Option<(u64, u64)>, JournalError> {
        if self.segments.len() < 2 {
            return Ok(None);
        }
        let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let oldest = &self.segments[0];
        if total - oldest.bytes < self.config.retain_bytes {
            return Ok(None);
        }
        let read_past = oldest
            .ends
            .iter()
            .all(|(topic, end)| match readers.get(topic) {
                Some(Readers::Consumers(positions)) => positions.iter().all(|p| p >= end),
                Some(Readers::Compacted) | None => true,
            });
        if !read_past {
            return Ok(None);
        }
        let id = oldest.id;
        let bytes = oldest.bytes;
        let copies = self.survivors(id, readers)?;
        let copied = copies.len() as u64;
        // Producers whose latest position was written in this segment say it again.
        let mut positions: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        for ((producer, topic), (offset, segment)) in &self.positions {
            if *segment == id {
                positions
                    .entry(producer.clone())
                    .or_default()
                    .push((topic.clone(), *offset));
            }
        }
        for (producer, positions) in positions {
            self.append(Frame {
                producer,
                positions,
                records: Vec::new(),
            })?;
        }
        // The copies go last: their frame marks the segment as emptied, for a crash before
        // the deletion.
        self.append(Frame {
            producer: format!("{RETENTION}{id}"),
            positions: Vec::new(),
            records: copies,
        })?;
        self.drop_oldest()?;
        Ok(Some((copied, bytes)))
    }

    /// The records of segment `id` that must outlive it: the latest of each key of a compacted
    /// topic, and every record of a topic no reader is named for.
    fn survivors(
        &mut self,
        id: u32,
        readers: &HashMap<String, Readers>,
    ) -> Result<Vec<Record>, JournalError> {
        // The segment's records are the first of each topic's index.
        let mut wanted: Vec<(String, u64, Location)> = Vec::new();
        for (topic, index) in &self.topics {
            let compacted = self.compacted.contains(topic);
            if !compacted && readers.contains_key(topic) {
                continue;
            }
            for (i, location) in index.locations.iter().enumerate() {
                if location.segment != id {
                    break;
                }
                wanted.push((topic.clone(), index.base + i as u64, *location));
            }
        }
        let mut records = Vec::with_capacity(wanted.len());
        for (topic, offset, location) in wanted {
            let record = self.frame(location.segment, location.frame_at)?.records
                [location.index as usize]
                .clone();
            if self.compacted.contains(&topic) {
                let latest = self.latest.get(&(topic.clone(), record.key.clone()));
                if latest.map(|(o, _)| *o) != Some(offset) {
                    continue;
                }
            }
            records.push(record);
        }
        Ok(records)
    }

    /// Forgets and deletes the oldest segment.
    fn drop_oldest(&mut self) -> Result<(), JournalError> {
        let oldest = self.segments.remove(0);
        for index in self.topics.values_mut() {
            while index
                .locations
                .front()
                .is_some_and(|l| l.segment == oldest.id)
            {
                index.locations.pop_front();
                index.base += 1;
            }
        }
        self.latest.retain(|_, (_, segment)| *segment != oldest.id);
        self.cache = None;
        let path = segment_path(&self.dir, oldest.id);
        std::fs::remove_file(&path).map_err(io(format!("cannot delete {}", path.display())))?;
        tracing::info!(
            segment = oldest.id,
            bytes = oldest.bytes,
            "journal segment deleted: every reader is past it"
        );
        Ok(())
    }

    fn frame(&mut self, segment: u32, at: u64) -> Result<&Frame, JournalError> {
        if self.cache.as_ref().map(|(k, _)| *k) != Some((segment, at)) {
            let path = segment_path(&self.dir, segment);
            let mut file =
                File::open(&path).map_err(io(format!("cannot open {}", path.display())))?;
            file.seek(SeekFrom::Start(at))
                .map_err(io(format!("cannot seek {}", path.display())))?;
            let mut header = [0u8; HEADER];
            file.read_exact(&mut header)
                .map_err(io(format!("cannot read {}", path.display())))?;
            let length = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
            let mut bytes = vec![0u8; HEADER + length];
            bytes[..HEADER].copy_from_slice(&header);
            file.read_exact(&mut bytes[HEADER..])
                .map_err(io(format!("cannot read {}", path.display())))?;
            let (frame, _) = decode_frame(&bytes).map_err(|e| {
                JournalError::Corrupt(format!("{} byte {at}: {e:?}", path.display()))
            })?;
            self.cache = Some(((segment, at), frame));
        }
        Ok(&self.cache.as_ref().expect("just filled").1)
    }
}

/// Whether what is left at the end of the last segment is a write cut short: a frame that does
/// not fit in the bytes left, the very last frame with a bad checksum (a crash may leave its
/// length written and its body not), or zeros (space a file system allocated but never wrote).
fn torn(rest: &[u8], error: &FrameError) -> bool {
    match error {
        FrameError::Incomplete => true,
        FrameError::Bad(_) => {
            let length = rest
                .get(4..8)
                .map(|l| u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize);
            let last_frame = length.is_some_and(|l| HEADER + l == rest.len());
            last_frame || rest.iter().all(|b| *b == 0)
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, n: u32) -> Record {
        Record {
            topic: topic.into(),
            key: format!("k{n}").into_bytes(),
            payload: (n % 5 != 4).then(|| format!("value {n}").into_bytes()),
        }
    }

    #[test]
    fn frames_round_trip_with_offsets_per_topic_and_positions_per_producer() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal
            .append("ingest", &[], (0..3).map(|n| record("calls", n)).collect())
            .unwrap();
        journal
            .append(
                "stage-enrich",
                &[("calls".into(), 3)],
                vec![
                    record("enriched", 0),
                    record("state", 1),
                    record("enriched", 2),
                ],
            )
            .unwrap();
        assert_eq!((journal.end("calls"), journal.end("enriched")), (3, 2));
        assert_eq!(journal.position("stage-enrich", "calls"), 3);
        assert_eq!(journal.position("stage-other", "calls"), 0);
        let read = journal.read("enriched", 1, 10).unwrap();
        assert_eq!(
            read,
            vec![Stored {
                offset: 1,
                key: b"k2".to_vec(),
                payload: Some(b"value 2".to_vec())
            }]
        );
        drop(journal);
        // Everything is back after reopening.
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.frames(), 2);
        assert_eq!(journal.read("calls", 0, 2).unwrap().len(), 2);
        assert_eq!(journal.position("stage-enrich", "calls"), 3);
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_and_the_journal_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal
            .append("ingest", &[], vec![record("calls", 0)])
            .unwrap();
        journal
            .append("ingest", &[], vec![record("calls", 1), record("calls", 2)])
            .unwrap();
        drop(journal);
        let path = segment_path(dir.path(), 0);
        let length = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of writing the second frame.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(length - 7).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.end("calls"), 1);
        journal
            .append("ingest", &[], vec![record("calls", 3)])
            .unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let keys: Vec<Vec<u8>> = journal
            .read("calls", 0, 10)
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(keys, vec![b"k0".to_vec(), b"k3".to_vec()]);
        // A flipped bit is caught by the checksum.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(Journal::open(dir.path()).unwrap().end("calls"), 1);
    }

    #[test]
    fn a_reader_waits_for_a_record_and_wakes_when_it_comes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
        let writer = journal.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer
                .append("ingest", &[], vec![record("calls", 0)])
                .unwrap();
        });
        let started = std::time::Instant::now();
        journal.wait("calls", 0, Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(journal.end("calls"), 1);
        handle.join().unwrap();
    }
    fn keys(journal: &Journal, topic: &str) -> Vec<Vec<u8>> {
        journal
            .read(topic, 0, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect()
    }

    #[test]
    fn a_bad_frame_before_the_end_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        for n in 0..3 {
            journal
                .append("ingest", &[], vec![record("calls", n)])
                .unwrap();
        }
        drop(journal);
        let path = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let frame = bytes.len() / 3;
        // A flipped bit in the middle frame's body: frames follow it.
        bytes[frame + HEADER + 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = Journal::open(dir.path())
            .err()
            .expect("corruption is an error")
            .to_string();
        assert!(
            error.contains("0000000000.journal")
                && error.contains(&format!("byte {frame}"))
                && error.contains("checksum mismatch")
                && error.contains("bytes after it"),
            "{error}"
        );
        // Nothing was cut off: the file is as it was.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_write_that_fails_part_way_shifts_no_offset() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal
            .append("ingest", &[], vec![record("calls", 0)])
            .unwrap();
        // The disk fills after 9 bytes of the next frame.
        journal.fail_writes_after(9);
        assert!(journal
            .append("ingest", &[], vec![record("calls", 1), record("calls", 2)])
            .is_err());
        assert_eq!(journal.end("calls"), 1);
        // Space again: the next frame starts where the failed one did.
        journal
            .append("ingest", &[], vec![record("calls", 3)])
            .unwrap();
        assert_eq!(keys(&journal, "calls"), [b"k0".to_vec(), b"k3".to_vec()]);
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(keys(&journal, "calls"), [b"k0".to_vec(), b"k3".to_vec()]);
        assert_eq!(journal.frames(), 2);
    }

    fn retention_config() -> JournalConfig {
        JournalConfig {
            segment_bytes: 400,
            retain_bytes: 0,
        }
    }

    /// 60 frames: a call each (consumed by `stage`), a changelog record of one of 5 keys, and
    /// every tenth frame a dead letter nobody reads.
    fn fill(journal: &Journal) {
        for n in 0..60u32 {
            let mut records = vec![
                record("calls", n),
                Record {
                    topic: "state".into(),
                    key: format!("key{}", n % 5).into_bytes(),
                    payload: Some(format!("state {n}").into_bytes()),
                },
            ];
            if n % 10 == 0 {
                records.push(Record {
                    topic: "dead".into(),
                    key: vec![],
                    payload: Some(format!("letter {n}").into_bytes()),
                });
            }
            journal
                .append("stage", &[("input".into(), u64::from(n) + 1)], records)
                .unwrap();
        }
    }

    /// The changelog as a restore reads it: the latest value of each key.
    fn state(journal: &Journal) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        journal
            .read("state", 0, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|s| (s.key, s.payload.unwrap()))
            .collect()
    }

    #[test]
    fn retention_deletes_what_every_reader_is_past_and_keeps_changelogs_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let journal =
            Journal::open_with(dir.path(), retention_config(), &["state".into()]).unwrap();
        fill(&journal);
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(segments > 5, "{segments} segments");
        let before = state(&journal);
        let readers = |position: u64| {
            HashMap::from([
                ("calls".to_string(), Readers::Consumers(vec![position, 60])),
                ("state".to_string(), Readers::Compacted),
            ])
        };
        // One reader is at 0: nothing may go.
        assert_eq!(journal.retain(&readers(0)).unwrap(), Retained::default());
        // Both have read 40 calls.
        let done = journal.retain(&readers(40)).unwrap();
        assert!(done.segments_deleted > 0, "{done:?}");
        let start = journal.start("calls");
        assert!(start > 0 && start <= 40, "calls start at {start}");
        assert_eq!(journal.end("calls"), 60, "offsets do not move");
        assert_eq!(journal.read("calls", 0, 1).unwrap()[0].offset, start);
        assert_eq!(
            state(&journal),
            before,
            "the changelog's latest values stay"
        );
        let letters: Vec<Vec<u8>> = journal
            .read("dead", 0, 100)
            .unwrap()
            .into_iter()
            .map(|s| s.payload.unwrap())
            .collect();
        assert_eq!(letters.len(), 6, "dead letters nobody reads are kept");
        assert_eq!(journal.position("stage", "input"), 60);
        drop(journal);
        // All of it survives reopening.
        let journal =
            Journal::open_with(dir.path(), retention_config(), &["state".into()]).unwrap();
        assert_eq!((journal.start("calls"), journal.end("calls")), (start, 60));
        assert_eq!(state(&journal), before);
        assert_eq!(journal.read("dead", 0, 100).unwrap().len(), 6);
        assert_eq!(journal.position("stage", "input"), 60);
        journal
            .append("ingest", &[], vec![record("calls", 60)])
            .unwrap();
        assert_eq!(journal.end("calls"), 61);
    }

    #[test]
    fn retention_stopped_between_copying_and_deleting_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let journal =
            Journal::open_with(dir.path(), retention_config(), &["state".into()]).unwrap();
        fill(&journal);
        let before = state(&journal);
        let files: Vec<(u32, Vec<u8>)> = (0..200)
            .map(|id| (id, std::fs::read(segment_path(dir.path(), id))))
            .filter_map(|(id, bytes)| Some((id, bytes.ok()?)))
            .collect();
        let readers = HashMap::from([
            ("calls".to_string(), Readers::Consumers(vec![60])),
            ("state".to_string(), Readers::Compacted),
        ]);
        assert!(journal.retain(&readers).unwrap().segments_deleted > 0);
        let (start, end) = (journal.start("calls"), journal.end("calls"));
        drop(journal);
        // As if the process died after the last segment's copies, before deleting it.
        let (last_deleted, kept) = files
            .into_iter()
            .rev()
            .find(|(id, _)| !segment_path(dir.path(), *id).exists())
            .unwrap();
        let first = segment_path(dir.path(), last_deleted);
        std::fs::write(&first, kept).unwrap();
        let journal =
            Journal::open_with(dir.path(), retention_config(), &["state".into()]).unwrap();
        assert!(!first.exists(), "the emptied segment is deleted on open");
        assert_eq!(state(&journal), before);
        assert_eq!((journal.start("calls"), journal.end("calls")), (start, end));
    }
}
