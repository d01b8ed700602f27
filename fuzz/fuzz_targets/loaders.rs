//! Files an operator points tally at: a LiteLLM price catalogue, hourly grid data (CSV) and
//! the ingest and processor configs (TOML, then validated). Nothing may panic.
#![no_main]
use figment::providers::{Format, Toml};
use figment::Figment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = tally_accounting::pricing::Catalogue::from_litellm_json(text, "fuzz");
    let _ = tally_accounting::carbon::load_hourly(text);
    let figment = Figment::from(Toml::string(text));
    if let Ok(config) = figment.extract::<tally_ingest::IngestConfig>() {
        let _ = config.validate();
    }
    if let Ok(config) = figment.extract::<tally_processor::ProcessorConfig>() {
        let _ = config.validate();
        let _ = config.catalogue();
    }
});
