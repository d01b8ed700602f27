//! Bytes on a topic: the Avro single-object decoder of every record type. A record that
//! decodes must encode again. Nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_contract::records::{
    Alert, DeadLetter, DeployEvent, EnrichedLlmCall, LlmCall, LoopSignal, SpendWindow, TicketEvent,
};
use tally_contract::{decode, encode, AvroRecord};

fn round_trip<T: AvroRecord>(bytes: &[u8]) {
    if let Ok(record) = decode::<T>(bytes) {
        encode(&record).expect("a decoded record encodes");
    }
}

fuzz_target!(|bytes: &[u8]| {
    round_trip::<LlmCall>(bytes);
    round_trip::<EnrichedLlmCall>(bytes);
    round_trip::<SpendWindow>(bytes);
    round_trip::<Alert>(bytes);
    round_trip::<LoopSignal>(bytes);
    round_trip::<DeployEvent>(bytes);
    round_trip::<TicketEvent>(bytes);
    round_trip::<DeadLetter>(bytes);
});
