//! The journal's frame: `TJF1`, body length (u32 LE), CRC-32 of the body (u32 LE), body. Body:
//! producer (str), positions (u16 count × (topic str, next offset u64)), topics (u16 count ×
//! str), records (u32 count × (topic index u16, key bytes, payload flag u8, payload bytes)); str
//! and bytes are a u32 LE length and the bytes.
use super::Record;

pub const MAGIC: &[u8; 4] = b"TJF1";
pub const HEADER: usize = 12;

/// The records of one ingest request or stage transaction, and the input positions its
/// producer consumed up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub producer: String,
    pub positions: Vec<(String, u64)>,
    pub records: Vec<Record>,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the frame does: a write cut short (a crash, a full disk).
    Incomplete,
    /// A whole frame's worth of bytes that is not a frame: bad magic, checksum or body.
    Bad(&'static str),
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

pub fn encode_frame(frame: &Frame) -> Vec<u8> {
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

/// The whole, checksummed frame at the start of `bytes`, and its length.
pub fn decode_frame(bytes: &[u8]) -> Result<(Frame, usize), FrameError> {
    if bytes.len() < HEADER {
        return Err(FrameError::Incomplete);
    }
    if &bytes[..4] != MAGIC {
        return Err(FrameError::Bad("no frame marker"));
    }
    let length = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let body = bytes
        .get(HEADER..HEADER + length)
        .ok_or(FrameError::Incomplete)?;
    if crc32fast::hash(body) != crc {
        return Err(FrameError::Bad("checksum mismatch"));
    }
    let frame = decode_body(body).ok_or(FrameError::Bad("a body that does not parse"))?;
    Ok((frame, HEADER + length))
}

fn decode_body(body: &[u8]) -> Option<Frame> {
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
    Some(Frame {
        producer,
        positions,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer's seed, written by hand from the format in this module's doc (not by
    /// `encode_frame`): the doc and the code agree, and the seed is a real journal.
    #[test]
    fn the_fuzz_seed_written_from_the_documented_format_decodes() {
        let bytes = include_bytes!("../../../fuzz/seeds/journal/three-frames.journal");
        let mut rest = &bytes[..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let (frame, length) = decode_frame(rest).unwrap();
            assert_eq!(encode_frame(&frame), rest[..length]);
            frames.push(frame);
            rest = &rest[length..];
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].producer, "enrich");
        assert_eq!(frames[1].positions, [("tally.llm_calls.v1".to_string(), 2)]);
        assert_eq!(frames[1].records[1].payload, None);
        // The same with its last 7 bytes gone: a write cut short, not damage.
        let cut = include_bytes!("../../../fuzz/seeds/journal/cut-short.journal");
        assert_eq!(cut.len(), bytes.len() - 7);
        let (_, first) = decode_frame(cut).unwrap();
        let (_, second) = decode_frame(&cut[first..]).unwrap();
        assert_eq!(
            decode_frame(&cut[first + second..]),
            Err(FrameError::Incomplete)
        );
    }
}
