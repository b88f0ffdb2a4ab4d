//! A throw-away tansu broker (Kafka protocol, in-memory storage) for tests.
//!
//! ```no_run
//! let mut broker = espm_testkit::tansu::Tansu::start();
//! let bootstrap = broker.bootstrap(); // "127.0.0.1:PORT"
//! broker.stop();                       // simulate an outage
//! broker.start_again();                // same port, empty storage
//! ```
//!
//! The binary is found through `TANSU_BIN`, then `tansu` on `PATH`, then `$HOME/.cargo/bin/tansu`;
//! `bash tests/run.sh` installs it. Memory storage forgets every topic on restart, and tansu does
//! not auto-create topics: create them with an admin client.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a broker gets to open its port before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) tansu broker on a fixed loopback port. Killed on drop.
pub struct Tansu {
    bin: PathBuf,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Tansu {
    /// Start a broker on a free loopback port and wait until it accepts connections.
    ///
    /// Panics when the binary is missing (run `bash tests/run.sh`) or the broker does not start.
    pub fn start() -> Self {
        let bin = find_binary();
        let port = free_port();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "tansu-{}-{}-{port}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut t = Tansu {
            bin,
            port,
            log,
            child: None,
        };
        t.spawn();
        t
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file the broker logs to (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kill the broker and wait for it to exit. Its in-memory topics are lost. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Wait until the port is really closed, so clients see the outage.
        let deadline = Instant::now() + Duration::from_secs(10);
        while port_accepts(self.port) && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
    }

    /// Start the broker again on the same port (empty storage). Stops it first if running.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        // The port may sit in TIME_WAIT or be briefly taken right after a stop: retry the spawn.
        loop {
            let log = File::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap_or_else(|e| panic!("cannot open tansu log {}: {e}", self.log.display()));
            let log_err = log
                .try_clone()
                .unwrap_or_else(|e| panic!("cannot clone tansu log handle: {e}"));
            let mut child = Command::new(&self.bin)
                .arg("broker")
                .arg("--listener-url")
                .arg(&url)
                .arg("--advertised-listener-url")
                .arg(&url)
                .arg("--storage-engine")
                .arg("memory://tansu/")
                .env(
                    "RUST_LOG",
                    std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", self.bin.display()));
            loop {
                if port_accepts(self.port) {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    if Instant::now() >= deadline {
                        panic!(
                            "tansu exited with {status} on port {}; see {}",
                            self.port,
                            self.log.display()
                        );
                    }
                    sleep(Duration::from_millis(200));
                    break; // respawn
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tansu did not open port {} within {START_TIMEOUT:?}; see {}",
                        self.port,
                        self.log.display()
                    );
                }
                sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn find_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return p;
        }
        panic!(
            "TANSU_BIN={} is not a file; run `bash tests/run.sh` to install tansu",
            p.display()
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tansu");
            if p.is_file() {
                return p;
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".cargo/bin/tansu");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the tansu Kafka broker is not installed (looked at $TANSU_BIN, PATH and ~/.cargo/bin); \
         run `bash tests/run.sh`, which installs it"
    );
}

/// A loopback port nobody listens on right now (the OS picks it).
fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port()
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
