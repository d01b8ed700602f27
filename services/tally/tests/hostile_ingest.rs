//! `tally ingest` as its own process against the real Kafka broker, under hostile and broken
//! clients: a request without a valid key is answered from its headers (its body never
//! read), gzip and zstd bodies are taken and a decompression bomb is refused after the
//! limit with bounded memory (the process's peak RSS is read from /proc), hostile JSON (deep
//! nesting, the longest strings, 50,000 tags on a record, a million distinct tag keys) is
//! answered with bounded memory too, an unsupported
//! encoding is 415, a body trickled a byte at a time gets 408, headers trickled are cut off,
//! requests over the concurrency limit get 503 with Retry-After, connections over the limit
//! get 503; each is counted on the metrics listener, and the main listener no longer serves
//! `/metrics`.
use std::io::Write;
use std::time::{Duration, Instant};

use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::topics::Topic;
use tally_tests::{delete_topics, free_port, kafka_config, require_kafka, unique_name, KillOnDrop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "hostile-ingest-test-key";
const MAX_BODY: usize = 1024 * 1024;

fn call_line(id: &str) -> String {
    format!(
        "{{\"event_id\":\"{id}\",\"occurred_at\":\"2026-11-23T10:00:00Z\",\"team\":\"payments\",\"provider\":\"openai\",\"model\":\"gpt-4o\",\"input_tokens\":10,\"output_tokens\":5}}\n"
    )
}

/// Peak resident memory of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends `head` (and nothing more) and reads the answer until the server closes or `wait`.
async fn raw(port: u16, head: &str, wait: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    read_answer(&mut stream, wait).await
}

async fn read_answer(stream: &mut TcpStream, wait: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Opens a request with a valid key and a declared body, sends `sent` bytes of it a byte at
/// a time every `every`, and returns the answer.
async fn trickle_body(port: u16, sent: usize, every: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /v1/llm-calls HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..sent {
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
        let mut peek = [0u8; 1];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut peek)).await
        {
            if n > 0 {
                break;
            }
        }
    }
    let answer = read_answer(&mut stream, Duration::from_secs(10)).await;
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_holds_under_hostile_clients_and_counts_what_it_refused() {
    require_kafka();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("hostile")),
        ..kafka_config()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 1,
            replication_factor: 1,
        },
    )
    .await
    .unwrap();
    let (port, ops_port) = (free_port(), free_port());
    let config = std::env::temp_dir().join(format!("{}.toml", unique_name("hostile-ingest")));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{ops_port}\"\n\
             max_body_bytes = {MAX_BODY}\nproduce_timeout_ms = 2000\n\
             [http]\nheader_read_timeout_ms = 1000\nrequest_timeout_ms = 3000\n\
             max_concurrent_requests = 2\nmax_connections = 8\n\
             [[api_keys]]\nname = \"hostile\"\nsha256 = \"{}\"\ntenant = \"acme\"\n\
             team = \"payments\"\nrate_limit_per_sec = 100000\n",
            tally_ingest::auth::hash_key(KEY)
        ),
    )
    .unwrap();
    let mut ingest = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["ingest", "--config", config.to_str().unwrap()])
            .env("TALLY_KAFKA_BROKERS", &kafka.brokers)
            .env("TALLY__KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
            .env("TALLY_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // No idle connections kept: the connection limit below counts only the test's own.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ops = format!("http://127.0.0.1:{ops_port}");
    let main = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{ops}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            ingest.0.try_wait().unwrap().is_none(),
            "tally ingest exited"
        );
        assert!(Instant::now() < deadline, "tally ingest did not get ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With metrics_listen, the main listener no longer serves /metrics or /readyz.
    for path in ["/metrics", "/readyz"] {
        let status = http
            .get(format!("{main}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path} on the main listener");
    }

    // No key, or a wrong one, with a large declared body that is never sent: 401 at once.
    for auth in ["", "authorization: Bearer not-a-key\r\n"] {
        let answer = raw(
            port,
            &format!("POST /v1/llm-calls HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: 900000\r\n\r\n"),
            Duration::from_secs(5),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
        assert!(answer.contains("missing or unknown API key"), "{answer}");
    }

    // gzip and zstd bodies are taken.
    let body = format!("{}{}", call_line("gz-1"), call_line("gz-2"));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(body.as_bytes()).unwrap();
    let gzip = gzip.finish().unwrap();
    let zstd_body = zstd::encode_all(
        format!("{}{}", call_line("zs-1"), call_line("zs-2")).as_bytes(),
        3,
    )
    .unwrap();
    for (encoding, bytes) in [("gzip", gzip), ("zstd", zstd_body)] {
        let response = http
            .post(format!("{main}/v1/llm-calls"))
            .bearer_auth(KEY)
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", encoding)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{encoding}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["accepted"], 2, "{encoding}: {answer}");
    }

    // Hostile JSON, each answered as it should be while the peak RSS stays bounded: nesting
    // as deep as the body allows, strings as long as it allows, a record with 50,000 tags,
    // and a million distinct tag keys over 16,000 records.
    let before_json = peak_rss_kib(ingest.0.id());
    let post = |body: Vec<u8>| {
        let http = http.clone();
        let main = main.clone();
        async move {
            let response = http
                .post(format!("{main}/v1/llm-calls"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let half = (MAX_BODY - 64) / 2;
    let (status, answer) =
        post(format!("{}{}", "[".repeat(half), "]".repeat(half)).into_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{answer}"
    );
    let long = "x".repeat(MAX_BODY - 400);
    let (status, answer) = post(
        call_line("long-model")
            .replace("\"gpt-4o\"", &format!("\"{long}\""))
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["rejected"][0]["errors"][0]["field"], "model",
        "{answer}"
    );
    let (status, answer) = post(
        call_line("long-prompt")
            .replace("}\n", &format!(",\"prompt\":\"{long}\"}}"))
            .into_bytes(),
    )
    .await;
    assert_eq!(
        status, 202,
        "a long prompt is fingerprinted, not stored: {answer}"
    );
    let tags: serde_json::Map<String, serde_json::Value> = (0..50_000)
        .map(|i| (format!("k{i}"), serde_json::Value::from("v")))
        .collect();
    let mut record: serde_json::Value = serde_json::from_str(&call_line("many-tags")).unwrap();
    record["tags"] = serde_json::Value::Object(tags);
    let (status, answer) = post(record.to_string().into_bytes()).await;
    assert_eq!(status, 422, "{answer}");
    let error = &answer["rejected"][0]["errors"][0];
    assert_eq!(error["field"], "tags", "{answer}");
    assert!(
        error["reason"].as_str().unwrap().contains("50000 tags"),
        "{answer}"
    );
    let mut distinct_keys = 0;
    for request in 0..40 {
        let records: Vec<serde_json::Value> = (0..400)
            .map(|r| {
                let mut record: serde_json::Value =
                    serde_json::from_str(&call_line(&format!("tags-{request}-{r}"))).unwrap();
                record["tags"] = (0..64)
                    .map(|t| {
                        distinct_keys += 1;
                        (
                            format!("key-{request}-{r}-{t}"),
                            serde_json::Value::from("v"),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                record
            })
            .collect();
        let (status, answer) = post(serde_json::to_vec(&records).unwrap()).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 400, "{answer}");
    }
    assert_eq!(distinct_keys, 1_024_000);
    let after_json = peak_rss_kib(ingest.0.id());
    println!(
        "[hostile] peak RSS {before_json} KiB before the hostile JSON, {after_json} KiB after"
    );
    assert!(
        after_json < before_json + 64 * 1024,
        "hostile JSON grew the peak RSS from {before_json} KiB to {after_json} KiB"
    );

    // A bomb: about 33 KB of zstd that inflates to 1 GiB, and 64 KB of gzip that inflates to
    // 64 MiB. Refused with 413 once the decompressed bytes pass the limit; memory stays low.
    let before = peak_rss_kib(ingest.0.id());
    let zeros = |bytes: u64| std::io::Read::take(std::io::repeat(0), bytes);
    let zstd_bomb = zstd::stream::encode_all(zeros(1 << 30), 19).unwrap();
    let mut gzip_bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::copy(&mut zeros(64 << 20), &mut gzip_bomb).unwrap();
    let gzip_bomb = gzip_bomb.finish().unwrap();
    for (encoding, bomb) in [("zstd", zstd_bomb), ("gzip", gzip_bomb)] {
        let size = bomb.len();
        println!("[hostile] {encoding} bomb: {size} bytes");
        let response = http
            .post(format!("{main}/v1/llm-calls"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(bomb)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{encoding} bomb of {size} bytes");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("after decompression"),
            "{answer}"
        );
    }
    let after = peak_rss_kib(ingest.0.id());
    println!("[hostile] peak RSS {before} KiB before the bombs, {after} KiB after");
    assert!(
        after < before + 64 * 1024,
        "a bomb grew the peak RSS from {before} KiB to {after} KiB"
    );

    // An encoding ingest does not read: 415.
    let response = http
        .post(format!("{main}/v1/llm-calls"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // A body trickled a byte every 300 ms: 408 at the request timeout (3 s), not later.
    let (answer, took) = trickle_body(port, 100, Duration::from_millis(300)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        answer.contains("http.request_timeout_ms (3000 ms)"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(8), "cut off after {took:?}");

    // Headers trickled a byte every 200 ms: the connection is closed at the header timeout.
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = b"POST /v1/llm-calls HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        // The server closing (or answering) ends the read within the pause.
        let mut buffer = [0u8; 256];
        let pause = Duration::from_millis(200);
        if tokio::time::timeout(pause, stream.read(&mut buffer))
            .await
            .is_ok()
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a connection trickling its headers for {:?} is still open",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );

    // Two slow requests hold the two request slots: a third is 503 with Retry-After at once.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(trickle_body(port, 100, Duration::from_millis(200))))
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let response = http
        .post(format!("{main}/v1/llm-calls"))
        .bearer_auth(KEY)
        .header("content-type", "application/x-ndjson")
        .body(call_line("over-the-limit"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    for task in slow {
        let (answer, _) = task.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    // Once they are answered, a request goes through again.
    let response = http
        .post(format!("{main}/v1/llm-calls"))
        .bearer_auth(KEY)
        .header("content-type", "application/x-ndjson")
        .body(call_line("after-the-limit"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // Eight open connections are the limit: a ninth is answered 503 and closed.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let answer = raw(
        port,
        "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("too many open connections"), "{answer}");
    drop(held);

    // Every refusal is counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} missing from\n{metrics}"))
    };
    assert_eq!(
        counter("tally_ingest_events_rejected_total{reason=\"unauthorized\"}"),
        2
    );
    assert_eq!(
        counter("tally_ingest_events_rejected_total{reason=\"too_large\"}"),
        2
    );
    assert_eq!(
        counter("tally_ingest_events_rejected_total{reason=\"timed_out\"}"),
        3
    );
    assert_eq!(
        counter("tally_ingest_events_rejected_total{reason=\"overloaded\"}"),
        1
    );
    assert_eq!(counter("tally_ingest_connections_refused_total"), 1);
    assert_eq!(
        counter("tally_ingest_events_accepted_total{kind=\"llm_call\"}"),
        5 + 1 + 40 * 400
    );
    drop(ingest);
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}
