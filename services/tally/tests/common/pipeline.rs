//! What the tests of the production pipeline share: a `tally` command on a test's topics and
//! database, an ingest config with one key, and waiting for the ingest to be ready.
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tally_contract::kafka::KafkaConfig;
use tally_tests::{clickhouse_url, unique_name, KillOnDrop};

/// A `tally` command on the test's topics (brokers and prefix of `kafka`); `database` for the
/// commands that use ClickHouse (the others refuse a `[clickhouse]` section).
pub fn tally_on(args: &[&str], kafka: &KafkaConfig, database: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .env("TALLY_KAFKA_BROKERS", &kafka.brokers)
        .env("TALLY__KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
        .env("TALLY_LOG", "warn");
    if let Some(database) = database {
        command
            .env("TALLY_CLICKHOUSE_URL", clickhouse_url())
            .env("TALLY__CLICKHOUSE__DATABASE", database);
    }
    command
}

/// An ingest config file listening on `port` with one key (tenant `acme`, any team, no rate
/// limit to speak of).
pub fn ingest_config(port: u16, key: &str) -> std::path::PathBuf {
    let hash: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = std::env::temp_dir().join(format!("{}.toml", unique_name("ingest")));
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [[api_keys]]\nname = \"test\"\nsha256 = \"{hash}\"\ntenant = \"acme\"\n\
             any_team = true\nrate_limit_per_sec = 1000000\n"
        ),
    )
    .unwrap();
    path
}

/// Waits until the ingest on `port` answers `/readyz`, failing if it exits or takes a minute.
pub async fn wait_until_ready(port: u16, ingest: &mut KillOnDrop) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "tally ingest did not get ready");
        assert!(
            ingest.0.try_wait().unwrap().is_none(),
            "tally ingest exited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
