//! deploy/prometheus's rules with Prometheus's own tool: `promtool check rules` (syntax,
//! names) and `promtool test rules` (the unit tests beside them: which alert fires when, with
//! which labels, and what `tally_budget_remaining_usd` records).
use std::path::PathBuf;
use std::process::Command;

fn promtool(args: &[&str]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus");
    let output = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (apt-get install prometheus) runs");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alerting_rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "tally-rules.yml"]);
    promtool(&["test", "rules", "tally-rules.test.yml"]);
}
