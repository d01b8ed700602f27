//! The `tally` binary as a user runs it: configuration errors, and `tally topics create`
//! twice in a row against the real broker.
use std::process::{Command, Output};

use tally_tests::{delete_topics, kafka_brokers, require_kafka, unique_name};

fn tally(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.args(args).env_remove("TALLY_LOG");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("tally runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn topics_create_twice_against_the_real_broker() {
    require_kafka();
    let prefix = format!("{}.", unique_name("cli"));
    let brokers = kafka_brokers();
    let envs = [
        ("TALLY_KAFKA_BROKERS", brokers.as_str()),
        ("TALLY__KAFKA__TOPIC_PREFIX", prefix.as_str()),
    ];

    let first = tally(&["topics", "create", "--partitions", "2"], &envs);
    assert!(first.status.success(), "first run: {}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with(&format!("created {prefix}tally."))),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "created {prefix}tally.llm_calls.v1 (2 partitions, replication factor 1)"
    )));

    let second = tally(&["topics", "create", "--partitions", "2"], &envs);
    assert!(
        second.status.success(),
        "second run: {}",
        text(&second.stderr)
    );
    let stdout = text(&second.stdout);
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "exists  {prefix}tally.dead_letter.v1 (2 partitions)"
        )),
        "{stdout}"
    );

    let third = tally(&["topics", "create", "--partitions", "3"], &envs);
    assert!(third.status.success());
    assert!(text(&third.stdout).contains("(2 partitions; 3 were asked for, left as is)"));
    let names = stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string());
    delete_topics(names.collect());
}

#[test]
fn a_missing_config_file_is_named() {
    let out = tally(&["ingest", "--config", "/nonexistent/ingest.toml"], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/ingest.toml") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_config_key_is_named_with_its_file() {
    let dir = std::env::temp_dir().join(unique_name("cli-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sink.toml");
    std::fs::write(
        &file,
        "[clickhouse]\nurl = \"http://127.0.0.1:8123\"\ndatabse = \"x\"\n",
    )
    .unwrap();
    let out = tally(&["sink", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("databse") && stderr.contains("sink.toml"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn zero_partitions_are_refused_before_connecting() {
    let out = tally(
        &["topics", "create", "--partitions", "0"],
        &[("TALLY_KAFKA_BROKERS", "127.0.0.1:1")],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--partitions and --replication-factor must be at least 1"));
}

#[test]
fn estimate_sixty_trillion_tokens_at_2_wh_per_1k_and_480_g() {
    let out = tally(
        &[
            "estimate",
            "--model",
            "gpt-4o",
            "--input-tokens",
            "600000",
            "--output-tokens",
            "400000",
            "--tokens",
            "60000000000000",
            "--wh-per-1k-tokens",
            "2",
            "--grid-g-per-kwh",
            "480",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["energy_wh"][1], "120000000000", "120 GWh");
    assert_eq!(report["co2e_g"][1], "57600000000", "57,600 t");
    assert_eq!(report["grid_source"], "configured");
    assert_eq!(
        report["carbon_method_version"],
        "simple-1+configured:2Wh/1k-tokens"
    );
    assert_eq!(report["price_entry"], "gpt-4o");
    // 600k input × $2.5e-06 + 400k output × $1e-05 = $5.5 per million tokens, × 60 million.
    assert_eq!(report["cost_usd"], "330000000");
}

#[test]
fn estimate_text_names_versions_and_flags_unknown_models() {
    let out = tally(
        &[
            "estimate",
            "--model",
            "gpt-imaginary",
            "--input-tokens",
            "1000",
            "--output-tokens",
            "10",
            "--region",
            "DE",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("cost        UNKNOWN: the model matched no catalogue entry"),
        "{stdout}"
    );
    assert!(
        stdout.contains("380.95 g CO2e/kWh (annual; codecarbon-3.3.2-annual@2026-11-23)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("method      simple (simple-1+ecologits-0.11.3-derived@2026-11-23)"),
        "{stdout}"
    );
}

#[test]
fn estimate_gives_one_provider_one_number_however_it_is_spelled() {
    // The cases: the price only with LiteLLM's spelling, the PUE only with
    // OpenTelemetry's, before provider identity was decided once.
    for (spellings, model) in [
        (
            &["mistral", "mistralai", "mistral_ai"][..],
            "mistral-small-latest",
        ),
        (
            &["gemini", "google_genai", "gcp.gemini"][..],
            "gemini-2.5-pro",
        ),
        (
            &["bedrock", "aws.bedrock"][..],
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
    ] {
        let reports: Vec<serde_json::Value> = spellings
            .iter()
            .map(|provider| {
                let out = tally(
                    &[
                        "estimate",
                        "--provider",
                        provider,
                        "--model",
                        model,
                        "--input-tokens",
                        "1000",
                        "--output-tokens",
                        "500",
                        "--json",
                    ],
                    &[],
                );
                assert!(out.status.success(), "{}", text(&out.stderr));
                serde_json::from_slice(&out.stdout).unwrap()
            })
            .collect();
        for (spelling, report) in spellings.iter().zip(&reports) {
            assert!(
                report["cost_usd"].is_string(),
                "{spelling} {model} is priced: {report}"
            );
            for field in ["cost_usd", "energy_wh", "co2e_g"] {
                assert_eq!(
                    report[field], reports[0][field],
                    "{field}: {spelling} vs {}",
                    spellings[0]
                );
            }
        }
    }
}

/// `tally migrate --retention` against the real server: `default` sets the documented TTLs on
/// exactly the tables that have one, `none` removes them, and either runs twice unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_sets_and_removes_the_retention() {
    let db = tally_tests::TestDatabase::create("it_retention").await;
    let env = [
        ("TALLY_CLICKHOUSE_URL", tally_tests::clickhouse_url()),
        ("TALLY__CLICKHOUSE__DATABASE", db.name.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ttls = || async {
        let tables: Vec<(String, String)> = db
            .client
            .query("SELECT name, create_table_query FROM system.tables WHERE database = ? ORDER BY name")
            .bind(&db.name)
            .fetch_all()
            .await
            .unwrap();
        tables
            .into_iter()
            .filter(|(_, create)| create.contains(" TTL "))
            .map(|(name, create)| (name, create[create.find(" TTL ").unwrap()..].to_string()))
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        let out = tally(&["migrate", "--retention", "default"], &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let set = ttls().await;
        let names: Vec<&str> = set.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["alerts", "llm_calls", "loop_signals", "spend_windows"]
        );
        let windows = &set[3].1;
        assert!(
            windows.contains("toIntervalDay(30) WHERE window_seconds = 60")
                && windows.contains("toIntervalMonth(13) WHERE window_seconds = 3600"),
            "{windows}"
        );
        assert!(
            set[1]
                .1
                .contains("toDateTime(occurred_at) + toIntervalMonth(13)"),
            "{set:?}"
        );
    }
    for _ in 0..2 {
        let out = tally(&["migrate", "--retention", "none"], &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(ttls().await, Vec::<(String, String)>::new());
    }
    db.drop_database().await;
}
