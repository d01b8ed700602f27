//! A GitHub webhook payload, mapped as a deployment_status and as an issues event. Nothing
//! may panic.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let context = common::context();
    let _ = tally_ingest::github::deploy_from_github(&payload, &context);
    let _ = tally_ingest::github::ticket_from_github(&payload, &context);
});
