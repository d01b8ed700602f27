//! The journal: `tally up`'s durable log between stages, in Kafka's place. One append-only
//! file sequence under `<data-dir>/journal/`, one partition per topic.
//!
//! Every write is a **frame**: the records of one ingest request or of one stage transaction,
//! together with the input position the stage consumed up to, written and fsynced as a
//! whole before anyone is told (the ingest answers 202 after it). A frame is checksummed; a
//! crash mid-write leaves a torn last frame, which opening the journal cuts off. So a stage's
//! outputs and its input position are committed together or not at all, as a Kafka
//! transaction with `send_offsets_to_transaction` does.
//!
//! Frame: `TJF1`, body length (u32 LE), CRC-32 of the body (u32 LE), body. Body: producer
//! (str), positions (u16 count × (topic str, next offset u64)), topics (u16 count × str),
//! records (u32 count × (topic index u16, key bytes, payload flag u8, payload bytes)); str
//! and bytes are a u32 LE length and the bytes.
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::EmbeddedError;

const MAGIC: &[u8; 4] = b"TJF1";
const HEADER: usize = 12;
/// A new segment file starts once the current one is this big.
const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

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

#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    producer: String,
    positions: Vec<(String, u64)>,
    records: Vec<Record>,
}

/// Where a record is: its frame (segment and byte position) and its index in the frame.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u32,
    frame_at: u64,
    index: u32,
}

struct Inner {
    dir: PathBuf,
    file: File,
    segment: u32,
    size: u64,
    topics: HashMap<String, Vec<Location>>,
    positions: HashMap<(String, String), u64>,
    frames: u64,
    /// The last frame read, decoded: readers usually take a frame's records in a row.
    cache: Option<((u32, u64), Frame)>,
}

/// The journal. Share it with `Arc`; appends are serialised, reads run beside them.
pub struct Journal {
    inner: Mutex<Inner>,
    appended: Condvar,
}

fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:010}.journal"))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Io { context, source }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, reading every frame back and cutting off a
    /// torn last one.
    pub fn open(dir: &Path) -> Result<Journal, EmbeddedError> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut segments: Vec<u32> = std::fs::read_dir(dir)
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
        segments.sort_unstable();
        if segments.is_empty() {
            segments.push(0);
        }
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            file: File::open("/dev/null").map_err(io("cannot open /dev/null".into()))?,
            segment: 0,
            size: 0,
            topics: HashMap::new(),
            positions: HashMap::new(),
            frames: 0,
            cache: None,
        };
        let last = *segments.last().expect("at least one segment");
        for segment in segments {
            let path = segment_path(dir, segment);
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(io(format!("cannot open {}", path.display())))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(io(format!("cannot read {}", path.display())))?;
            let mut at = 0usize;
            while at < bytes.len() {
                match decode_frame(&bytes[at..]) {
                    Some((frame, length)) => {
                        inner.index(segment, at as u64, &frame);
                        at += length;
                    }
                    None if segment == last => {
                        tracing::warn!(
                            file = %path.display(),
                            at,
                            lost_bytes = bytes.len() - at,
                            "the journal ends in a torn frame (a crash mid-write): cutting it off"
                        );
                        file.set_len(at as u64)
                            .map_err(io(format!("cannot truncate {}", path.display())))?;
                        break;
                    }
                    None => {
                        return Err(EmbeddedError::Corrupt(format!(
                            "{} has a bad frame at byte {at} and is not the last segment",
                            path.display()
                        )))
                    }
                }
            }
            inner.file = file;
            inner.segment = segment;
            inner.size = at as u64;
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
    ) -> Result<(), EmbeddedError> {
        let frame = Frame {
            producer: producer.to_string(),
            positions: positions.to_vec(),
            records,
        };
        let bytes = encode_frame(&frame);
        let mut inner = self.lock();
        if inner.size > 0 && inner.size + bytes.len() as u64 > SEGMENT_BYTES {
            let next = inner.segment + 1;
            let path = segment_path(&inner.dir, next);
            inner.file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(io(format!("cannot create {}", path.display())))?;
            inner.segment = next;
            inner.size = 0;
        }
        let at = inner.size;
        let segment = inner.segment;
        let context = || format!("cannot write the journal segment {segment}");
        inner.file.write_all(&bytes).map_err(io(context()))?;
        inner.file.sync_data().map_err(io(context()))?;
        inner.size += bytes.len() as u64;
        inner.index(segment, at, &frame);
        drop(inner);
        self.appended.notify_all();
        Ok(())
    }

    /// The next offset `producer` has not consumed of `topic` (0 when it never committed).
    pub fn position(&self, producer: &str, topic: &str) -> u64 {
        self.lock()
            .positions
            .get(&(producer.to_string(), topic.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The offset the next record of `topic` will get.
    pub fn end(&self, topic: &str) -> u64 {
        self.lock().topics.get(topic).map_or(0, |l| l.len() as u64)
    }

    /// Frames in the journal.
    pub fn frames(&self) -> u64 {
        self.lock().frames
    }

    /// Waits up to `timeout` until `topic` has a record at `offset` or beyond.
    pub fn wait(&self, topic: &str, offset: u64, timeout: Duration) {
        let inner = self.lock();
        let has = |inner: &Inner| inner.topics.get(topic).map_or(0, |l| l.len() as u64) > offset;
        if has(&inner) {
            return;
        }
        let _ = self
            .appended
            .wait_timeout_while(inner, timeout, |inner| !has(inner));
    }

    /// Up to `max` records of `topic` from `from` on.
    pub fn read(&self, topic: &str, from: u64, max: usize) -> Result<Vec<Stored>, EmbeddedError> {
        let mut inner = self.lock();
        let locations: Vec<Location> = match inner.topics.get(topic) {
            Some(all) if (from as usize) < all.len() => {
                let end = all.len().min(from as usize + max);
                all[from as usize..end].to_vec()
            }
            _ => return Ok(Vec::new()),
        };
        let mut out = Vec::with_capacity(locations.len());
        for (i, location) in locations.into_iter().enumerate() {
            let frame = inner.frame(location.segment, location.frame_at)?;
            let record = &frame.records[location.index as usize];
            out.push(Stored {
                offset: from + i as u64,
                key: record.key.clone(),
                payload: record.payload.clone(),
            });
        }
        Ok(out)
    }
}

impl Inner {
    fn index(&mut self, segment: u32, frame_at: u64, frame: &Frame) {
        for (index, record) in frame.records.iter().enumerate() {
            self.topics
                .entry(record.topic.clone())
                .or_default()
                .push(Location {
                    segment,
                    frame_at,
                    index: index as u32,
                });
        }
        for (topic, offset) in &frame.positions {
            self.positions
                .insert((frame.producer.clone(), topic.clone()), *offset);
        }
        self.frames += 1;
    }

    fn frame(&mut self, segment: u32, at: u64) -> Result<&Frame, EmbeddedError> {
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
            let (frame, _) = decode_frame(&bytes).ok_or_else(|| {
                EmbeddedError::Corrupt(format!("{} byte {at}: a bad frame", path.display()))
            })?;
            self.cache = Some(((segment, at), frame));
        }
        Ok(&self.cache.as_ref().expect("just filled").1)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut topics: Vec<&str> = Vec::new();
    for record in &frame.records {
        if !topics.contains(&record.topic.as_str()) {
            topics.push(&record.topic);
        }
    }
    let mut body = Vec::new();
    put_bytes(&mut body, frame.producer.as_bytes());
    body.extend_from_slice(&(frame.positions.len() as u16).to_le_bytes());
    for (topic, offset) in &frame.positions {
        put_bytes(&mut body, topic.as_bytes());
        body.extend_from_slice(&offset.to_le_bytes());
    }
    body.extend_from_slice(&(topics.len() as u16).to_le_bytes());
    for topic in &topics {
        put_bytes(&mut body, topic.as_bytes());
    }
    body.extend_from_slice(&(frame.records.len() as u32).to_le_bytes());
    for record in &frame.records {
        let topic = topics
            .iter()
            .position(|t| *t == record.topic)
            .expect("listed above") as u16;
        body.extend_from_slice(&topic.to_le_bytes());
        put_bytes(&mut body, &record.key);
        match &record.payload {
            Some(payload) => {
                body.push(1);
                put_bytes(&mut body, payload);
            }
            None => body.push(0),
        }
    }
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A cursor over a frame's body; every read checks the bounds.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

/// A whole, checksummed frame at the start of `bytes`, and its length; `None` when torn or bad.
fn decode_frame(bytes: &[u8]) -> Option<(Frame, usize)> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return None;
    }
    let length = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    let body = bytes.get(HEADER..HEADER + length)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut c = Cursor { bytes: body, at: 0 };
    let producer = c.string()?;
    let positions = (0..c.u16()?)
        .map(|_| Some((c.string()?, c.u64()?)))
        .collect::<Option<Vec<_>>>()?;
    let topics = (0..c.u16()?)
        .map(|_| c.string())
        .collect::<Option<Vec<_>>>()?;
    let records = (0..c.u32()?)
        .map(|_| {
            let topic = topics.get(c.u16()? as usize)?.clone();
            let key = c.bytes()?.to_vec();
            let payload = match c.u8()? {
                0 => None,
                _ => Some(c.bytes()?.to_vec()),
            };
            Some(Record {
                topic,
                key,
                payload,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((
        Frame {
            producer,
            positions,
            records,
        },
        HEADER + length,
    ))
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
}
