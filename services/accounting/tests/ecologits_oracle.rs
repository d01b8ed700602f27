//! The `ecologits` carbon method against EcoLogits itself: the `ecologits` PyPI package
//! (0.11.3, from the venv scripts/ecologits-venv.sh makes) computes the request energy of a
//! spread of models, token counts and latencies; tally's low / high must equal its min / max
//! and tally's central lie between them.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tally_accounting::carbon::{CarbonConfig, CarbonModel};
use tally_contract::records::LlmCall;

/// (EcoLogits provider, tally provider, model)
const MODELS: [(&str, &str, &str); 8] = [
    ("openai", "openai", "gpt-4o"),
    ("openai", "openai", "gpt-4o-mini"),
    ("anthropic", "anthropic", "claude-sonnet-4-5"),
    ("anthropic", "anthropic", "claude-haiku-4-5"),
    ("google_genai", "gcp.gemini", "gemini-2.5-pro"),
    ("google_genai", "gcp.gemini", "gemini-2.5-flash-lite"),
    ("mistralai", "mistral_ai", "mistral-large-latest"),
    ("cohere", "cohere", "command-r-08-2024"),
];
const OUTPUT_TOKENS: [i64; 4] = [1, 50, 500, 4_000];
const LATENCIES_S: [f64; 3] = [0.5, 5.0, 60.0];

fn oracle_python() -> PathBuf {
    if let Ok(python) = std::env::var("TALLY_ECOLOGITS_PYTHON") {
        return PathBuf::from(python);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ecologits-venv.sh");
    let output = Command::new(script)
        .output()
        .expect("scripts/ecologits-venv.sh runs");
    assert!(
        output.status.success(),
        "ecologits-venv.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn oracle(cases: &Value) -> Vec<Value> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/carbon/ecologits_oracle.py");
    let mut child = Command::new(oracle_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the oracle runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the oracle failed");
    serde_json::from_slice(&output.stdout).expect("the oracle prints JSON")
}

fn call(provider: &str, model: &str, output_tokens: i64, latency_s: f64) -> LlmCall {
    let mut call: LlmCall = tally_tests::fixture("LlmCall");
    call.provider = provider.into();
    call.model = model.into();
    call.response_model = None;
    call.output_tokens = output_tokens;
    call.reasoning_tokens = 0;
    call.latency_ms = Some((latency_s * 1000.0) as i64);
    call
}

#[test]
fn energy_agrees_with_the_ecologits_package() {
    let model = CarbonModel::new(CarbonConfig {
        method: "ecologits".into(),
        ..CarbonConfig::default()
    })
    .unwrap();
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (ecologits_provider, provider, name) in MODELS {
        for tokens in OUTPUT_TOKENS {
            for latency in LATENCIES_S {
                cases.push(json!({"provider": ecologits_provider, "model": name, "output_tokens": tokens, "latency_s": latency}));
                let estimate = model
                    .estimate(&call(provider, name, tokens, latency))
                    .unwrap();
                assert_eq!(estimate.method, "ecologits");
                ours.push((
                    format!("{name} {tokens} tokens {latency} s"),
                    estimate.energy_uwh,
                ));
            }
        }
    }
    let theirs = oracle(&Value::Array(cases));
    assert_eq!(theirs.len(), ours.len());
    let mut checked = 0;
    for ((label, [low, central, high]), reference) in ours.iter().zip(&theirs) {
        assert!(
            reference.get("error").is_none(),
            "{label}: EcoLogits says {reference}"
        );
        let min_uwh = reference["min_wh"].as_f64().unwrap() * 1e6;
        let max_uwh = reference["max_wh"].as_f64().unwrap() * 1e6;
        // tally keeps integer micro-watt-hours: within one of EcoLogits' figure.
        let close = |ours: i64, theirs: f64| (ours as f64 - theirs).abs() <= 1.0 + theirs * 1e-9;
        assert!(
            close(*low, min_uwh),
            "{label}: low {low} µWh, EcoLogits min {min_uwh}"
        );
        assert!(
            close(*high, max_uwh),
            "{label}: high {high} µWh, EcoLogits max {max_uwh}"
        );
        assert!(
            *central as f64 >= min_uwh - 1.0 && *central as f64 <= max_uwh + 1.0,
            "{label}: central {central} outside [{min_uwh}, {max_uwh}]"
        );
        checked += 1;
    }
    eprintln!("[ecologits] {checked} cases agree with ecologits 0.11.3");
    assert_eq!(
        checked,
        MODELS.len() * OUTPUT_TOKENS.len() * LATENCIES_S.len()
    );
}
