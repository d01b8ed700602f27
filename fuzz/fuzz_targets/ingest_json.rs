//! A request body of the JSON endpoints: split into records, each checked against the limits
//! and read as an LLM call, a deploy and a ticket. Nothing may panic.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(records) = tally_ingest::body::parse_records(body) else {
        return;
    };
    let context = common::context();
    for record in records {
        let _ = context.limits.check(&record);
        let _ = tally_ingest::llm_call::llm_call_from_json(record.clone(), &context);
        let _ = tally_ingest::events::deploy_from_json(record.clone(), &context);
        let _ = tally_ingest::events::ticket_from_json(record, &context);
    }
});
