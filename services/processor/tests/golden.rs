//! Golden cases: a folder per case of input calls and the expected enriched figures and final
//! spend windows (see tests/golden/README.md). Adding a case adds files, not code.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tally_accounting::enrich::Enricher;
use tally_contract::config::load;
use tally_contract::records::{EnrichedLlmCall, LlmCall, SpendWindow};
use tally_processor::windows::{self, WindowState};
use tally_processor::ProcessorConfig;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("calls.json").is_file())
        .collect();
    cases.sort();
    cases
}

fn read_calls(case: &Path) -> Vec<LlmCall> {
    let template: Value = serde_json::to_value(tally_tests::fixture::<LlmCall>("LlmCall")).unwrap();
    let calls: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(case.join("calls.json")).unwrap()).unwrap();
    calls
        .into_iter()
        .map(|partial| {
            let mut call = template.clone();
            for (key, value) in partial.as_object().unwrap() {
                call[key] = value.clone();
            }
            serde_json::from_value(call).unwrap_or_else(|e| panic!("{}: {e}", case.display()))
        })
        .collect()
}

fn enriched_figures(enriched: &EnrichedLlmCall) -> Value {
    json!({
        "event_id": enriched.call.event_id,
        "unpriced": enriched.unpriced,
        "price_entry": enriched.price_entry,
        "cost_nanos": [enriched.cost_input_nanos, enriched.cost_cache_read_nanos, enriched.cost_cache_write_nanos,
                       enriched.cost_output_nanos, enriched.cost_reasoning_nanos, enriched.cost_total_nanos],
        "energy_uwh": [enriched.energy_uwh_low, enriched.energy_uwh_central, enriched.energy_uwh_high],
        "co2e_ug": [enriched.co2e_ug_low, enriched.co2e_ug_central, enriched.co2e_ug_high],
        "grid": [enriched.grid_g_per_kwh, enriched.grid_source],
    })
}

fn window_figures(window: &SpendWindow) -> Value {
    json!({
        "key": [window.window_seconds, window.window_start, window.dimension.as_str(), window.dimension_value],
        "revision": window.revision,
        "calls": window.calls,
        "unpriced_calls": window.unpriced_calls,
        "tokens": [window.input_tokens, window.output_tokens, window.cache_read_tokens, window.cache_write_tokens, window.reasoning_tokens],
        "cost_nanos": window.cost_nanos,
        "co2e_ug_central": window.co2e_ug_central,
    })
}

/// A window's totals: the sum of its parts (the revision: the latest part's).
fn add_part(total: &mut SpendWindow, part: &SpendWindow) {
    total.revision = total.revision.max(part.revision);
    total.calls += part.calls;
    total.unpriced_calls += part.unpriced_calls;
    total.input_tokens += part.input_tokens;
    total.output_tokens += part.output_tokens;
    total.cache_read_tokens += part.cache_read_tokens;
    total.cache_write_tokens += part.cache_write_tokens;
    total.reasoning_tokens += part.reasoning_tokens;
    total.cost_nanos += part.cost_nanos;
    total.co2e_ug_central += part.co2e_ug_central;
}

fn check(case: &Path, file: &str, actual: &Value) {
    let path = case.join(file);
    if std::env::var("TALLY_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (TALLY_BLESS=1 writes it)", path.display())),
    )
    .unwrap();
    assert_eq!(actual, &expected, "{}", path.display());
}

#[test]
fn every_golden_case() {
    let cases = cases();
    assert!(cases.len() >= 3, "{cases:?}");
    for case in cases {
        let config_path = case.join("config.toml");
        let config: ProcessorConfig =
            load(config_path.is_file().then_some(config_path.as_path())).unwrap();
        let enricher = Enricher::new(config.catalogue().unwrap(), config.carbon.clone()).unwrap();
        let mut enriched = Vec::new();
        let mut state = WindowState::default();
        let mut latest: BTreeMap<String, SpendWindow> = BTreeMap::new();
        let mut late = Vec::new();
        for call in read_calls(&case) {
            let call = enricher.enrich(call, 0).unwrap();
            let output = windows::apply(&config.windows, &mut state, &call);
            if output.late {
                late.push(call.call.event_id.clone());
            }
            // One call, one transaction: its parts add to their windows' totals.
            for part in windows::take_parts(&mut state, 0, 0, 0) {
                let key = format!(
                    "{} {} {} {}",
                    part.window_seconds, part.window_start, part.dimension, part.dimension_value
                );
                match latest.get_mut(&key) {
                    Some(total) => add_part(total, &part),
                    None => {
                        latest.insert(key, part);
                    }
                }
            }
            enriched.push(enriched_figures(&call));
        }
        check(&case, "enriched.json", &Value::Array(enriched));
        let windows: Vec<Value> = latest.values().map(window_figures).collect();
        check(
            &case,
            "windows.json",
            &json!({"windows": windows, "late": late}),
        );
        eprintln!(
            "[golden] {} ok",
            case.file_name().unwrap().to_string_lossy()
        );
    }
}
