//! The chaos run on `tally up`: its data directory on a small tmpfs of its own, `tally gen`
//! sending three days of calls (retrying per Retry-After and while the port is closed; its
//! ground truth counts only what got a 202), while the process is SIGKILLed and restarted and
//! the disk fills up (a ballast file takes every free byte for a while, then goes). Then the
//! store equals the truth: every total, per team, and the 1-minute and 1-day windows.
//!
//! The tmpfs needs root (`mount -t tmpfs`), as on tally's CI machines; without it the disk-full
//! fault is skipped with a note and the rest still runs.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_store_equals_truth, gen_from, query, start_up};
use serde_json::Value;
use tally_tests::{free_port, unique_name};

/// A tmpfs mounted for the run, unmounted after.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let path = std::env::temp_dir().join(unique_name("tally-up-tmpfs"));
        std::fs::create_dir_all(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(path))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fills the file system of `dir` to the last byte with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let ballast = dir.join("ballast");
    let mut file = std::fs::File::create(&ballast).unwrap();
    let block = vec![0u8; 1 << 20];
    use std::io::Write;
    while file.write_all(&block).is_ok() {}
    for _ in 0..4096 {
        if file.write_all(&[0u8; 256]).is_err() {
            break;
        }
    }
    let _ = file.flush();
    ballast
}

fn sigkill(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn tally_up_loses_and_doubles_nothing_through_kills_and_a_full_disk() {
    let tmpfs = Tmpfs::mount("256m");
    if tmpfs.is_none() {
        eprintln!("[chaos-up] no tmpfs (not root?): the disk-full fault is skipped");
    }
    let scratch = tempfile::tempdir().unwrap();
    let base = tmpfs.as_ref().map_or(scratch.path(), |t| t.0.as_path());
    let dir = base.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut up = start_up(&dir, port);
    // Three days of calls ending yesterday, about 30 s of sending.
    let today = tally_contract::clock::now_micros() / 86_400_000_000;
    let start = tally_contract::clock::rfc3339((today - 4) * 86_400_000_000);
    let sending = gen_from(port, 30_000, 1_000, 11, &start)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut faults: Vec<String> = Vec::new();
    let started = Instant::now();
    let at = |secs: u64| {
        let due = started + Duration::from_secs(secs);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    };
    at(4);
    sigkill(&mut up.0);
    faults.push("SIGKILL".into());
    std::thread::sleep(Duration::from_millis(500));
    up = start_up(&dir, port);
    if tmpfs.is_some() {
        at(10);
        let ballast = fill(base);
        faults.push("disk full for 5 s".into());
        std::thread::sleep(Duration::from_secs(2));
        // What a client hears meanwhile: tally up cannot make the calls durable. (500 calls:
        // more than the slack of the journal's last page, which a tmpfs still has.)
        let body: String = (0..500)
            .map(|i| format!("{{\"event_id\": \"during-disk-full-{i}\", \"occurred_at\": \"2026-11-23T10:00:00Z\", \"team\": \"payments\", \"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 1, \"output_tokens\": 1}}\n"))
            .collect();
        let answer = Command::new("curl")
            .args(["-sS", "-m", "10", "-o", "/dev/stderr", "-w", "%{http_code}"])
            .args(["-H", "Authorization: Bearer tally-local", "--data-binary"])
            .arg(body)
            .arg(format!("http://127.0.0.1:{port}/v1/llm-calls"))
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&answer.stdout).into_owned();
        let body = String::from_utf8_lossy(&answer.stderr).into_owned();
        println!("[chaos-up] a call sent while the disk is full: {status} {body}");
        assert_eq!(status, "503", "{body}");
        assert!(
            body.contains("the journal did not acknowledge")
                && body.contains("No space left on device"),
            "the answer names the journal and the cause: {body}"
        );
        std::thread::sleep(Duration::from_secs(3));
        std::fs::remove_file(&ballast).unwrap();
        // It may have stopped on the full disk: it must start again on the same data.
        if up.0.try_wait().unwrap().is_some() {
            faults.push("(exited on the full disk; restarted)".into());
            up = start_up(&dir, port);
        }
    }
    at(18);
    sigkill(&mut up.0);
    faults.push("SIGKILL".into());
    std::thread::sleep(Duration::from_millis(500));
    let _up = start_up(&dir, port);
    let out = sending.wait_with_output().unwrap();
    assert!(out.status.success(), "tally gen gave up");
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "[chaos-up] faults: {faults:?}; {} calls acknowledged",
        truth["calls"]
    );
    assert_store_equals_truth(&dir, &truth);
    // The windows: once the partition is quiet it closes them; they equal the calls.
    let calls_by_team = query(
        &dir,
        "SELECT team, count(*) AS calls, sum(coalesce(cost_total_nanos, 0)) AS cost_nanos \
         FROM llm_calls GROUP BY team ORDER BY team",
    )
    .unwrap();
    for seconds in [60, 86_400] {
        let sql = format!(
            "SELECT team, sum(calls) AS calls, sum(cost_nanos) AS cost_nanos FROM spend_window_totals \
             WHERE window_seconds = {seconds} AND dimension = 'model' GROUP BY team ORDER BY team"
        );
        let deadline = Instant::now() + Duration::from_secs(150);
        let windows = loop {
            let windows = query(&dir, &sql).unwrap();
            if windows == calls_by_team || Instant::now() > deadline {
                break windows;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        assert_eq!(windows, calls_by_team, "{seconds}-second windows per team");
    }
}
