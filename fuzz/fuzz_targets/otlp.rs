//! An OTLP/HTTP body, read as protobuf and as JSON; each span mapped to a record and the
//! record read as an LLM call. Nothing may panic.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tally_ingest::otlp::{self, SpanRecord};

fuzz_target!(|body: &[u8]| {
    let context = common::context();
    for decoded in [otlp::decode_protobuf(body), otlp::decode_json(body)] {
        let Ok(resources) = decoded else { continue };
        for resource in &resources {
            for span in &resource.spans {
                if let SpanRecord::Call(record) =
                    otlp::span_to_record(&resource.attributes, span, "tally.team")
                {
                    let _ = context.limits.check(&record);
                    let _ = tally_ingest::llm_call::llm_call_from_json(record, &context);
                }
            }
        }
    }
});
