//! What the harness reads of processes and of the machine from /proc: a process's CPU time
//! (utime + stime, every thread, also of a child that exited and is not yet reaped), the
//! process listening on a TCP port (the Kafka broker, the ClickHouse server), the cores and
//! memory, a process's resident memory, and child processes that are killed when dropped and read before they are reaped.
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`, 100 on Linux).
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of /proc/PID/stat after the command name: state first.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds (user + system, all threads) the process used so far; a zombie keeps its
/// final figure until it is reaped.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// Resident memory of the process now (VmRSS of /proc/PID/status), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether the process exited (a zombie, or gone).
pub fn exited(pid: u32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_some_and(|s| s == "Z" || s == "X"))
}

/// The process that listens on TCP `port` (IPv4 or IPv6), found through its socket's inode.
pub fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The port of `host:port` or of a URL's authority.
pub fn port_of(address: &str) -> Option<u16> {
    let authority = address
        .split("://")
        .last()?
        .split(['/', ','])
        .next()?
        .to_string();
    authority.rsplit(':').next()?.parse().ok()
}

/// The machine, as the results name it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command) -> Proc {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Whether it exited (it is not reaped, so its CPU time can still be read).
    pub fn exited(&self) -> bool {
        exited(self.pid())
    }

    /// Waits until it exits, up to `timeout`: its CPU seconds and exit status, or `None`
    /// (still running) after the timeout.
    pub fn wait(&mut self, timeout: Duration) -> Option<(f64, std::process::ExitStatus)> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.exited() {
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let cpu = self.cpu();
        let status = self.child.wait().expect("a child's status");
        Some((cpu, status))
    }

    /// Exits now: its CPU seconds just before.
    pub fn kill(&mut self) -> f64 {
        let cpu = self.cpu();
        let _ = self.child.kill();
        let _ = self.child.wait();
        cpu
    }

    /// Panics, naming it and its exit status, if it exited.
    pub fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log is in the run's folder",
                self.name
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of named processes between two moments.
#[derive(Debug, Default, Clone)]
pub struct CpuMeter {
    start: BTreeMap<String, f64>,
}

impl CpuMeter {
    /// Starts counting for each (name, pid).
    pub fn start(pids: &[(String, u32)]) -> CpuMeter {
        CpuMeter {
            start: pids
                .iter()
                .filter_map(|(name, pid)| Some((name.clone(), cpu_seconds(*pid)?)))
                .collect(),
        }
    }

    /// CPU seconds each used since the start.
    pub fn since(&self, pids: &[(String, u32)]) -> BTreeMap<String, f64> {
        pids.iter()
            .filter_map(|(name, pid)| {
                let before = self.start.get(name)?;
                Some((name.clone(), cpu_seconds(*pid)? - before))
            })
            .collect()
    }
}

/// The largest resident memory each named process had at the moments it was sampled.
#[derive(Debug, Default, Clone)]
pub struct RssPeaks {
    pub peaks: BTreeMap<String, u64>,
}

impl RssPeaks {
    /// Samples each (name, pid) now, keeping the larger figure.
    pub fn sample(&mut self, pids: &[(String, u32)]) {
        for (name, pid) in pids {
            if let Some(rss) = rss_bytes(*pid) {
                let peak = self.peaks.entry(name.clone()).or_default();
                *peak = (*peak).max(rss);
            }
        }
    }
}
