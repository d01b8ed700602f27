//! Secrets reach the clients and nothing else, against the real servers: a ClickHouse
//! password is sent to the server (which refuses a wrong one) and appears in no output at
//! debug level; Kafka SASL settings reach librdkafka (the broker's PLAINTEXT listener then
//! fails the handshake) and appear in no answer or log. And the example row policies of
//! `sql/examples/tenant_row_policies.sql` parse on the real server and cover every table
//! of a migrated database that has a `tenant` column.
use std::process::Command;
use std::time::{Duration, Instant};

use tally_tests::{
    clickhouse_url, free_port, kafka_brokers, require_kafka, unique_name, KillOnDrop, TestDatabase,
};

const CLICKHOUSE_SECRET: &str = "ch-secret-pw-5c1f";
const KAFKA_SECRET: &str = "kafka-secret-pw-8e2d";

fn tally(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.args(args).env("TALLY_LOG", "debug");
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clickhouse_password_reaches_the_server_and_no_output() {
    let db = TestDatabase::create("it_secret").await;
    let out = tally(&["migrate"])
        .env("TALLY_CLICKHOUSE_URL", clickhouse_url())
        .env("TALLY__CLICKHOUSE__DATABASE", &db.name)
        .env("TALLY__CLICKHOUSE__PASSWORD", CLICKHOUSE_SECRET)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The server checked it: `default` has no password, so this one is wrong.
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("Authentication failed"), "{printed}");
    assert!(!printed.contains(CLICKHOUSE_SECRET), "{printed}");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_sasl_settings_reach_librdkafka_and_no_answer_or_log() {
    require_kafka();
    let port = free_port();
    let config = std::env::temp_dir().join(format!("{}.toml", unique_name("sasl-ingest")));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [[api_keys]]\nname = \"k\"\nsha256 = \"{}\"\ntenant = \"acme\"\nany_team = true\n\
             [kafka]\nbrokers = \"{}\"\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"tally\"\n\
             \"sasl.password\" = \"{KAFKA_SECRET}\"\n",
            tally_ingest::auth::hash_key("k"),
            kafka_brokers()
        ),
    )
    .unwrap();
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("sasl-ingest")));
    let mut ingest = KillOnDrop(
        tally(&["ingest", "--config", config.to_str().unwrap()])
            .env_remove("TALLY_KAFKA_BROKERS")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        assert!(
            ingest.0.try_wait().unwrap().is_none(),
            "tally ingest exited"
        );
        if let Ok(response) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            break (response.status(), response.text().await.unwrap());
        }
        assert!(Instant::now() < deadline, "tally ingest did not listen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // SASL against a PLAINTEXT listener: the settings were used, and the broker is not
    // reachable with them.
    assert_eq!(answer.0, 503, "{}", answer.1);
    assert!(!answer.1.contains(KAFKA_SECRET), "{}", answer.1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(ingest);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("SASL") || logged.contains("sasl"),
        "librdkafka used the SASL settings:\n{logged}"
    );
    assert!(!logged.contains(KAFKA_SECRET), "{logged}");
}

/// The example's statements with a tenant and database filled in.
fn row_policy_statements(database: &str, tenant: &str) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sql/examples/tenant_row_policies.sql"
    ))
    .unwrap();
    let without_comments: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace("{database}", database)
                .replace("{tenant}", tenant)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_row_policies_parse_and_cover_every_tenant_table() {
    let db = TestDatabase::create("it_policy").await;
    let out = tally(&["migrate"])
        .env("TALLY_CLICKHOUSE_URL", clickhouse_url())
        .env("TALLY__CLICKHOUSE__DATABASE", &db.name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statements = row_policy_statements(&db.name, "acme");
    assert_eq!(statements.len(), 4, "{statements:#?}");
    // Each parses on the real server (this server has one built-in user and no access
    // storage to create roles in: see SECURITY.md).
    for statement in &statements {
        let ast: Vec<String> = db
            .client
            .query(&format!("EXPLAIN AST {statement}"))
            .fetch_all()
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        assert!(!ast.is_empty(), "{statement}");
    }
    // Both policies name every table that has a tenant column, and no other.
    let tables: Vec<String> = db
        .client
        .query(
            "SELECT c.table FROM system.columns AS c JOIN system.tables AS t \
             ON t.database = c.database AND t.name = c.table \
             WHERE c.database = ? AND c.name = 'tenant' AND t.engine NOT IN ('View', 'MaterializedView') \
             ORDER BY c.table",
        )
        .bind(&db.name)
        .fetch_all()
        .await
        .unwrap();
    assert!(tables.len() >= 8, "{tables:?}");
    for policy in statements
        .iter()
        .filter(|s| s.starts_with("CREATE ROW POLICY"))
    {
        let mut named: Vec<String> = policy
            .split_whitespace()
            .filter_map(|word| {
                word.trim_end_matches(',')
                    .strip_prefix(&format!("{}.", db.name))
            })
            .map(str::to_string)
            .collect();
        named.sort();
        assert_eq!(named, tables, "{policy}");
    }
    // The filter is an expression every such table can evaluate.
    for table in &tables {
        db.client
            .query(&format!(
                "SELECT count() FROM {table} WHERE tenant = 'acme'"
            ))
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    db.drop_database().await;
}
