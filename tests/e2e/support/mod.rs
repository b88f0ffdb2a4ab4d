//! Shared helpers for the end-to-end tests: the espm-bridge binary as a child process, configs,
//! the simulator's control API.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test (built by cargo for this package's integration tests).
pub fn bridge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_espm-bridge")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `espm-bridge run` child.
pub struct Bridge {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Bridge {
    /// Start `espm-bridge run --config <config>` with extra env, logs to `dir/bridge-N.log`.
    pub fn start(config: &Path, dir: &Path, env: &[(&str, &str)], metrics: Option<u16>) -> Bridge {
        Self::start_with_grace(config, dir, env, metrics, "10s")
    }

    /// [`Bridge::start`] with a shutdown grace period.
    pub fn start_with_grace(
        config: &Path,
        dir: &Path,
        env: &[(&str, &str)],
        metrics: Option<u16>,
        grace: &str,
    ) -> Bridge {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stderr_path = dir.join(format!("bridge-{n}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let mut cmd = Command::new(bridge_bin());
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

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: the crash we must survive.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Read a JSON-lines file of CloudEvents (ignores a torn last line from a SIGKILL).
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
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

/// Journal and metrics sections.
pub fn journal_toml(dir: &Path) -> String {
    format!(
        "[journal]\npath = \"{}\"\nretention = \"1d\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("journal.db").display()
    )
}

/// An empty simulator (no demo scenario) on a free loopback port.
pub async fn start_sim(username: &str, password: &str, seed: u64) -> espm_sim::SimServer {
    let cfg = espm_sim::SimConfig {
        username: username.into(),
        password: password.into(),
        seed,
        scenario: false,
    };
    espm_sim::SimServer::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}
