//! End-to-end helpers: the `espm-bridge` binary as a child process, config snippets, polling,
//! the file sink's output and the bridge's JSON logs.
//!
//! The binary's path is the caller's: only the bridge's own integration tests know it
//! (`env!("CARGO_BIN_EXE_espm-bridge")`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `espm-bridge run` child. Killed on drop.
pub struct Bridge {
    /// The child process.
    pub child: Child,
    /// Its stderr (JSON logs).
    pub stderr_path: PathBuf,
}

impl Bridge {
    /// Start `BIN --log-format json run --config CONFIG --grace 10s` with extra env; logs go to
    /// `dir/bridge-N.log` (N counts the entries of `dir`, so give each test its own log dir).
    pub fn start(
        bin: &str,
        config: &Path,
        dir: &Path,
        env: &[(&str, &str)],
        metrics: Option<u16>,
    ) -> Bridge {
        Self::start_with_grace(bin, config, dir, env, metrics, "10s")
    }

    /// [`Bridge::start`] with a shutdown grace period.
    pub fn start_with_grace(
        bin: &str,
        config: &Path,
        dir: &Path,
        env: &[(&str, &str)],
        metrics: Option<u16>,
        grace: &str,
    ) -> Bridge {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stderr_path = dir.join(format!("bridge-{n}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--grace")
            .arg(grace);
        if let Some(p) = metrics {
            cmd.arg("--metrics-addr").arg(format!("127.0.0.1:{p}"));
        }
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn espm-bridge");
        Bridge { child, stderr_path }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: the crash we must survive.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.wait_exit(timeout)
    }

    /// Wait up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Its JSON log records (lines that are not JSON are skipped).
    pub fn log_records(&self) -> Vec<Value> {
        log_records(&self.stderr_path)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON log records of a bridge log file (`--log-format json`; a torn last line is skipped).
pub fn log_records(path: &Path) -> Vec<Value> {
    read_json_lines(path)
}

/// How many records of the bridge logs in `dir` (`bridge-*.log`) carry this `message`.
pub fn count_logged(dir: &Path, message: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("bridge-") && n.ends_with(".log"))
        })
        .map(|p| {
            log_records(&p)
                .iter()
                .filter(|r| r["message"] == message)
                .count()
        })
        .sum()
}

/// Poll `f` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(timeout, Duration::from_millis(100), f).await
}

/// [`eventually`], polling every `every`.
pub async fn eventually_every<T, F, Fut>(timeout: Duration, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Read a JSON-lines file of CloudEvents (ignores a torn last line from a SIGKILL).
pub fn read_events(path: &Path) -> Vec<Value> {
    read_json_lines(path)
}

/// The PM notification ids of a file sink's events.
pub fn notification_ids(events: &[Value]) -> std::collections::BTreeSet<i64> {
    events
        .iter()
        .filter_map(|e| e["data"]["notificationId"].as_i64())
        .collect()
}

/// The account section of a config pointing at a simulator.
pub fn account_toml(
    name: &str,
    base_url: &str,
    username: &str,
    password_env: &str,
    mode: &str,
) -> String {
    format!(
        r#"
[[accounts]]
name = "{name}"
environment = "sim"
base_url = "{base_url}"
username = "{username}"
password_env = "{password_env}"
drain_mode = "{mode}"
poll_interval = "200ms"
pending_interval = "2s"
request_timeout = "5s"
"#
    )
}

/// Journal (`dir/journal.db`, one day of retention) and metrics sections.
pub fn journal_toml(dir: &Path) -> String {
    format!(
        "[journal]\npath = \"{}\"\nretention = \"1d\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("journal.db").display()
    )
}

/// A file sink section.
pub fn file_sink_toml(name: &str, path: &Path) -> String {
    format!(
        "\n[[sinks]]\ntype = \"file\"\nname = \"{name}\"\npath = \"{}\"\n",
        path.display()
    )
}
