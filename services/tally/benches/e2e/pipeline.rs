//! tally deployed as its services, each its own process of the `tally` binary, against the
//! real Kafka and ClickHouse: `tally topics create` and `tally migrate` first, then `tally
//! ingest`, `tally process` and `tally sink`, with a topic prefix, a ClickHouse database and
//! consumer groups of their own. What the harness reads of it (calls ingest accepted, rows
//! visible in `llm_calls`), and its removal (topics deleted, database dropped).
//!
//! Configurations: `tally process` runs `services/processor/processor.example.toml` as
//! shipped and `tally sink` its defaults; `tally ingest` the defaults with the harness's own
//! API keys (one tenant per load phase, `any_team`, a rate limit that never throttles). Only
//! the names of the deployment (prefix, database, groups, instance id) come from the
//! environment.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::Proc;

/// Where the harness runs: the binary, the servers, the folder of its logs and configs.
pub struct Ctx {
    pub bin: PathBuf,
    pub repo: PathBuf,
    pub brokers: String,
    pub clickhouse_url: String,
    /// Logs and configs of this invocation.
    pub dir: PathBuf,
    pub http: reqwest::Client,
    /// ClickHouse, no database chosen.
    pub server: clickhouse::Client,
    /// The Kafka broker's and the ClickHouse server's processes, when found.
    pub servers: Vec<(String, u32)>,
    /// The Python of the peer's venv.
    pub python: String,
}

impl Ctx {
    /// `tally ARGS` with the servers' addresses and warn-level logs.
    pub fn tally(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .current_dir(&self.repo)
            .env("TALLY_KAFKA_BROKERS", &self.brokers)
            .env("TALLY_CLICKHOUSE_URL", &self.clickhouse_url)
            .env("TALLY_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    /// Runs a one-shot `tally` command, panicking with its output if it fails.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) {
        let mut command = self.tally(args);
        command.envs(env.iter().copied());
        let out = command.output().expect("tally runs");
        assert!(
            out.status.success(),
            "tally {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A log file in the run's folder.
    pub fn log(&self, name: &str) -> Stdio {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .expect("a log file");
        Stdio::from(file)
    }

    /// Creates and migrates a database of its own.
    pub fn migrate(&self, database: &str) {
        self.run(&["migrate"], &[("TALLY__CLICKHOUSE__DATABASE", database)]);
    }

    /// Rows of `table` in `database`.
    pub async fn count(&self, database: &str, table: &str) -> u64 {
        self.server
            .query(&format!("SELECT count() FROM `{database}`.`{table}`"))
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("count of {database}.{table}: {e}"))
    }

    /// Drops a database (best effort: a failure leaves it behind, it breaks nothing).
    pub async fn drop_database(&self, database: &str) {
        let _ = self
            .server
            .query(&format!("DROP DATABASE IF EXISTS `{database}`"))
            .execute()
            .await;
    }

    /// Deletes every topic whose name starts with `prefix`.
    pub fn delete_topics(&self, prefix: &str) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("a Kafka client");
        let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(10)) else {
            return;
        };
        let names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| n.starts_with(prefix))
            .collect();
        tally_tests::delete_topics(names);
    }
}

/// An API key of the deployment and the tenant it may send for.
#[derive(Debug, Clone)]
pub struct Key {
    pub key: String,
    pub tenant: String,
}

/// The services of one deployment.
pub struct Deployment {
    pub prefix: String,
    pub database: String,
    pub url: String,
    pub keys: Vec<Key>,
    pub ingest: Proc,
    pub process: Proc,
    pub sink: Proc,
    /// From the first service started until a call sent through ingest was visible.
    pub ready_after: Duration,
}

impl Deployment {
    /// Deploys tally under the names `name` (topic prefix `name.`, database `name`), with
    /// `keys` API keys, and waits until a call (dated `dated_ms`) goes through to ClickHouse.
    pub async fn start(ctx: &Ctx, name: &str, keys: usize, dated_ms: i64) -> Deployment {
        let started = Instant::now();
        let prefix = format!("{name}.");
        let database = name.replace(['-', '.'], "_");
        let names = [("TALLY__KAFKA__TOPIC_PREFIX", prefix.as_str())];
        ctx.run(&["topics", "create"], &names);
        ctx.migrate(&database);
        let keys: Vec<Key> = (0..keys)
            .map(|i| Key {
                key: format!("{name}-key-{i}"),
                tenant: format!("t{i}"),
            })
            .collect();
        let port = tally_tests::free_port();
        let mut config = format!("listen = \"127.0.0.1:{port}\"\n");
        for (i, k) in keys.iter().enumerate() {
            config.push_str(&format!(
                "[[api_keys]]\nname = \"bench-{i}\"\nsha256 = \"{}\"\ntenant = \"{}\"\nany_team = true\nrate_limit_per_sec = 100000000\n",
                tally_ingest::auth::hash_key(&k.key),
                k.tenant
            ));
        }
        let ingest_config = ctx.dir.join(format!("{name}-ingest.toml"));
        std::fs::write(&ingest_config, config).expect("the ingest config");
        let processor_config = ctx.repo.join("services/processor/processor.example.toml");

        let mut ingest = ctx.tally(&["ingest", "--config", &path(&ingest_config)]);
        ingest
            .envs(names)
            .stdout(Stdio::null())
            .stderr(ctx.log(&format!("{name}-ingest")));
        let mut process = ctx.tally(&["process", "--config", &path(&processor_config)]);
        process
            .envs(names)
            .env("TALLY__GROUP_ID", format!("{name}-processor"))
            .env("TALLY__INSTANCE_ID", format!("{name}-1"))
            .stdout(Stdio::null())
            .stderr(ctx.log(&format!("{name}-process")));
        let mut sink = ctx.tally(&["sink"]);
        sink.envs(names)
            .env("TALLY__GROUP_ID", format!("{name}-sink"))
            .env("TALLY__CLICKHOUSE__DATABASE", &database)
            .stdout(Stdio::null())
            .stderr(ctx.log(&format!("{name}-sink")));
        let mut deployment = Deployment {
            prefix,
            url: format!("http://127.0.0.1:{port}"),
            ingest: Proc::spawn("tally ingest", &mut ingest),
            process: Proc::spawn("tally process", &mut process),
            sink: Proc::spawn("tally sink", &mut sink),
            database,
            keys,
            ready_after: Duration::ZERO,
        };
        deployment.wait_listening(port).await;
        deployment.warm_up(ctx, dated_ms).await;
        deployment.ready_after = started.elapsed();
        deployment
    }

    async fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            self.ingest.check_running();
            assert!(Instant::now() < deadline, "tally ingest does not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one call and waits until it is visible: every consumer group has joined.
    async fn warm_up(&mut self, ctx: &Ctx, dated_ms: i64) {
        let key = self.keys.first().expect("keys").clone();
        let body = serde_json::json!({
            "event_id": "warm-up", "occurred_at": dated_ms, "team": "warm-up",
            "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 2,
        });
        post(ctx, &self.url, &key.key, &format!("{body}\n"))
            .await
            .expect("ingest takes the warm-up call");
        let deadline = Instant::now() + Duration::from_secs(120);
        while ctx.count(&self.database, "llm_calls").await == 0 {
            self.process.check_running();
            self.sink.check_running();
            assert!(
                Instant::now() < deadline,
                "the warm-up call is not in ClickHouse after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Calls ingest has accepted (its `tally_ingest_events_accepted_total{kind="llm_call"}`).
    pub async fn accepted(&self, ctx: &Ctx) -> u64 {
        let text = ctx
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("ingest's /metrics")
            .text()
            .await
            .expect("ingest's /metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("tally_ingest_events_accepted_total{kind=\"llm_call\"} "))
            .map_or(0, |v| v.trim().parse().expect("a counter"))
    }

    /// Rows in its `llm_calls`.
    pub async fn visible(&self, ctx: &Ctx) -> u64 {
        ctx.count(&self.database, "llm_calls").await
    }

    /// The processes whose CPU a phase counts: the services, then the servers.
    pub fn pids(&self, ctx: &Ctx) -> Vec<(String, u32)> {
        let mut pids = vec![
            ("ingest".to_string(), self.ingest.pid()),
            ("process".to_string(), self.process.pid()),
            ("sink".to_string(), self.sink.pid()),
        ];
        pids.extend(ctx.servers.iter().cloned());
        pids
    }

    /// Panics if a service exited.
    pub fn check_running(&mut self) {
        self.ingest.check_running();
        self.process.check_running();
        self.sink.check_running();
    }

    /// Stops the services and removes the topics and the database.
    pub async fn remove(mut self, ctx: &Ctx) {
        self.ingest.kill();
        self.process.kill();
        self.sink.kill();
        ctx.delete_topics(&self.prefix);
        ctx.drop_database(&self.database).await;
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// POSTs NDJSON calls to ingest's `/v1/llm-calls`: `Err` with the answer unless 202.
pub async fn post(ctx: &Ctx, url: &str, key: &str, body: &str) -> Result<(), String> {
    let response = ctx
        .http
        .post(format!("{url}/v1/llm-calls"))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        202 => Ok(()),
        status => Err(format!(
            "{status}: {}",
            response.text().await.unwrap_or_default()
        )),
    }
}
