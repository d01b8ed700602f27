//! Bytes in a journal file: the frame reader, and the journal opening a segment of them (what
//! `tally up` does after a crash or on a damaged disk). A frame that decodes must encode to
//! bytes that decode to it again; opening must give a journal or an error naming the damage,
//! and a journal that opens must read back every topic its frames name. Nothing may panic.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_journal::frame::{decode_frame, encode_frame};
use tally_journal::Journal;

/// One directory per fuzzing process, emptied before every input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join(format!("tally-fuzz-journal-{}", std::process::id())))
}

fuzz_target!(|bytes: &[u8]| {
    let mut topics = Vec::new();
    let mut rest = bytes;
    while let Ok((frame, length)) = decode_frame(rest) {
        let again = decode_frame(&encode_frame(&frame)).expect("an encoded frame decodes");
        assert_eq!(again.0, frame);
        topics.extend(frame.records.iter().map(|r| r.topic.clone()));
        rest = &rest[length..];
    }
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("0000000000.journal"), bytes).unwrap();
    if let Ok(journal) = Journal::open(dir) {
        for topic in &topics {
            journal.read(topic, 0, 10_000).expect("an opened journal reads");
        }
    }
});
