//! `espm-load`: push a burst of notifications from the in-process PM simulator through the real
//! `espm-bridge` binary (a child process) to one sink at a time, and report events/s, end-to-end
//! latency percentiles and the bridge's peak RSS. A measuring tool, never a test.

mod baseline;
mod compare;
mod receivers;
mod report;
mod run;

use espm_testkit::tansu;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

/// Drive a burst of PM notifications end to end and measure what the bridge does with them.
///
/// For every selected sink, one run: start the PM simulator in-process (empty world, no faults),
/// write a bridge config (one `sim` account with `drain_mode = "clear"` and a 50 ms poll
/// interval, a fresh SQLite journal, exactly one sink), spawn `espm-bridge run --config ...`,
/// wait for its /readyz, create the notifications through `POST /sim/notifications` in chunks,
/// and consume the events from the sink (a Kafka consumer on a fresh topic, an ordered
/// JetStream consumer on a fresh stream, an in-process webhook receiver answering 204, or by
/// tailing the file sink's output).
///
/// Reported per run:
///   events/s    unique notifications received / (last receive - first POST)
///   p50, p99    end-to-end latency: receive wall-clock time minus the notification's
///               `createdAt` in the simulator's ledger (so it includes PM queueing, polling,
///               journalling, normalizing, the outbox and the broker round trip)
///   bridge_p50, bridge_p99
///               the bridge's own latency: receive time minus the time the simulator handed
///               the notification out in a `clear=true` response (PM queueing excluded; it is
///               reported as pm_queue_p50/p99)
///   peak_rss    the bridge's VmHWM from /proc just before SIGTERM
///   bridge_cpu  the CPU time (user + system) the bridge used over the run, and per event:
///               steadier than events/s where the bridge, the broker and the reader share
///               the cores
///
/// The process exits non-zero if any notification in the simulator's ledger did not arrive
/// before --timeout; the bridge log and journal of that run are kept and their path printed.
///
/// Needs: `espm-bridge` built in the same profile (`cargo build --release -p espm-bridge
/// -p espm-load`), NATS with JetStream for `nats` (default nats://127.0.0.1:4222), and the
/// tansu broker for `kafka` unless --kafka-brokers is given (`bash tests/run.sh` installs it).
///
/// Examples:
///   target/release/espm-load --markdown
///   target/release/espm-load --sink webhook --notifications 20000
///   target/release/espm-load --sink kafka --kafka-brokers 127.0.0.1:9092 --timeout 20m
///   target/release/espm-load --sink nats --rate 1000 --duration 60s
///   target/release/espm-load --sink kafka --against /tmp/before/espm-bridge --pairs 3
#[derive(Debug, Parser)]
#[command(name = "espm-load", version, verbatim_doc_comment)]
struct Args {
    /// Notifications to create per run (at least 1).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    notifications: u64,

    /// Which sink to measure; `all` runs file, kafka, nats and webhook one after another, each
    /// with a fresh journal and a fresh simulator.
    #[arg(long, value_enum, default_value_t = SinkChoice::All)]
    sink: SinkChoice,

    /// The espm-bridge binary. Default: `espm-bridge` next to this executable (the same cargo
    /// target directory and profile).
    #[arg(long)]
    bridge_bin: Option<PathBuf>,

    /// Kafka bootstrap servers. Default: start a throw-away tansu broker (in-memory storage) for
    /// the kafka run. A fresh topic `espm-load-*` is created on it either way.
    #[arg(long)]
    kafka_brokers: Option<String>,

    /// NATS server with JetStream. A fresh stream `ESPM_LOAD_*` is created by the bridge and
    /// deleted after the run.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,

    /// Also print the results as a Markdown table (for the README).
    #[arg(long)]
    markdown: bool,

    /// Give up on a run after this long (from the bridge's start), e.g. `10m`, `90s`.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Notifications per `POST /sim/notifications` request.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    chunk: u64,

    /// After each kafka, nats or webhook run, two baselines on the same destination, side by
    /// side: a naive bridge (clear=true, parse, publish with the bridge's own clients; no
    /// journal) and a bare client sending
    /// the same records again (an idempotent rdkafka producer; async-nats JetStream publish
    /// with PubAcks pipelined, 256 outstanding; reqwest POSTs, 64 concurrent). Both send what
    /// the bridge's sink would (its request builder: same key, headers and value) and are
    /// measured like the bridge, until the same kind of reader has every record. Prints the
    /// bridge's ratio to each.
    #[arg(long)]
    baselines: bool,

    /// Sustained load instead of a burst: create notifications continuously at this many per
    /// second for --duration (then --notifications is rate × duration). The report's
    /// bridge_p50/bridge_p99 are the bridge's own latency (PM response handed out → received
    /// from the sink), apart from PM queueing (pm_queue_*, decided by the poll interval).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,

    /// How long --rate creates notifications, e.g. `60s`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Peak RSS behind a stopped sink (webhook only): the receiver answers 503 until every
    /// event of the burst is journalled, then 204, and the run waits for all of them. Use a
    /// --timeout that covers the sink's retry back-off.
    #[arg(long)]
    backlog: bool,

    /// Webhook only: the loopback receiver waits this long before answering each POST, as an
    /// endpoint across a network would (the bridge's leg and the baselines alike), e.g. `20ms`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    receiver_delay: Duration,

    /// Keep every run's directory (bridge config, JSON log, journal, file sink output), not only
    /// those of incomplete runs.
    #[arg(long)]
    keep: bool,

    /// `RUST_LOG` for the bridge child (its JSON log goes to a file in the run's directory).
    #[arg(long, default_value = "info")]
    bridge_log_level: String,

    /// Compare with another espm-bridge build: --pairs runs of each, alternating on the same
    /// broker (that build first in odd pairs, this one in even pairs: the second run of a pair
    /// tends to be slower), each line labelled `this` or `against`, then a summary of the
    /// medians of events/s and of bridge CPU per event, and their ratio. Use an even --pairs.
    #[arg(long, conflicts_with = "baselines")]
    against: Option<PathBuf>,

    /// Runs of each build with --against.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    pairs: u64,
}

/// The `--sink` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SinkChoice {
    /// JSON lines appended to a file (fsynced per batch), read back by tailing it.
    File,
    /// Kafka topic through the idempotent producer, read back with a consumer.
    Kafka,
    /// NATS JetStream stream, read back with an ordered consumer.
    Nats,
    /// Signed HTTP POSTs to an in-process receiver answering 204.
    Webhook,
    /// All four, one after another.
    All,
}

/// One sink kind actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// File sink.
    File,
    /// Kafka sink.
    Kafka,
    /// NATS JetStream sink.
    Nats,
    /// Webhook sink.
    Webhook,
}

impl SinkKind {
    /// Lowercase name, as in `--sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Kafka => "kafka",
            SinkKind::Nats => "nats",
            SinkKind::Webhook => "webhook",
        }
    }
}

impl SinkChoice {
    fn kinds(self) -> Vec<SinkKind> {
        match self {
            SinkChoice::File => vec![SinkKind::File],
            SinkChoice::Kafka => vec![SinkKind::Kafka],
            SinkChoice::Nats => vec![SinkKind::Nats],
            SinkChoice::Webhook => vec![SinkKind::Webhook],
            SinkChoice::All => vec![
                SinkKind::File,
                SinkKind::Kafka,
                SinkKind::Nats,
                SinkKind::Webhook,
            ],
        }
    }
}

fn default_bridge_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the current executable")?;
    let dir = exe
        .parent()
        .context("the current executable has no parent directory")?;
    Ok(dir.join(format!("espm-bridge{}", std::env::consts::EXE_SUFFIX)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("espm-load: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("espm-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every selected sink; `Ok(false)` when any run failed or was incomplete.
async fn real_main(args: Args) -> anyhow::Result<bool> {
    let bridge_bin = match &args.bridge_bin {
        Some(p) => p.clone(),
        None => default_bridge_bin()?,
    };
    if !bridge_bin.is_file() {
        bail!(
            "espm-bridge binary not found at {} (build it with `cargo build --release -p \
             espm-bridge -p espm-load`, or pass --bridge-bin)",
            bridge_bin.display()
        );
    }
    let settings = run::Settings {
        bridge_bin,
        notifications: match args.rate {
            Some(per_s) => {
                usize::try_from((per_s as f64 * args.duration.as_secs_f64()).ceil().max(1.0) as u64)
                    .context("--rate × --duration")?
            }
            None => usize::try_from(args.notifications).context("--notifications")?,
        },
        rate: args.rate,
        backlog: args.backlog,
        chunk: usize::try_from(args.chunk).context("--chunk")?,
        timeout: args.timeout,
        nats_url: args.nats_url.clone(),
        bridge_log_level: args.bridge_log_level.clone(),
        keep: args.keep,
        receiver_delay: args.receiver_delay,
    };

    if args.backlog && args.sink != SinkChoice::Webhook {
        bail!("--backlog needs --sink webhook (its receiver is the sink that can be stopped)");
    }

    if let Some(against) = &args.against {
        return compare_builds(&args, settings, against.clone()).await;
    }

    let mut results = Vec::new();
    let mut all_ok = true;
    for kind in args.sink.kinds() {
        eprintln!(
            "espm-load: {} run: {} notifications",
            kind.as_str(),
            settings.notifications
        );
        // The broker lives exactly as long as its run.
        let Some((broker, brokers)) = broker_for(kind, &args.kafka_brokers).await else {
            all_ok = false;
            continue;
        };
        let outcome = run::run(&settings, kind, brokers.as_deref()).await;
        let dest = baseline::Destination::of(
            kind,
            brokers.as_deref(),
            &settings.nats_url,
            settings.receiver_delay,
        );
        if let (true, Some(dest), Ok(r)) = (args.baselines, dest, &outcome) {
            match baselines(kind, &dest, &settings, r.events_per_s).await {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    all_ok = false;
                    println!("baselines {} FAILED: {e:#}", kind.as_str());
                }
            }
        }
        drop(broker);
        match outcome {
            Ok(r) => {
                println!("{}", report::line(&r));
                all_ok &= r.complete();
                results.push(r);
            }
            Err(e) => {
                all_ok = false;
                println!("sink={} FAILED: {e:#}", kind.as_str());
            }
        }
    }
    if args.markdown && !results.is_empty() {
        println!();
        print!("{}", report::markdown(&results));
    }
    Ok(all_ok)
}

/// The Kafka brokers of a `kind` run: those given, or a throw-away tansu (kept alive by the
/// returned handle); none for the other sinks. `None` (reported) when tansu does not start.
async fn broker_for(
    kind: SinkKind,
    given: &Option<String>,
) -> Option<(Option<tansu::Tansu>, Option<String>)> {
    match (kind, given) {
        (SinkKind::Kafka, Some(b)) => Some((None, Some(b.clone()))),
        (SinkKind::Kafka, None) => match start_tansu().await {
            Ok(t) => {
                let b = t.bootstrap();
                Some((Some(t), Some(b)))
            }
            Err(e) => {
                println!("sink=kafka FAILED: {e:#}");
                None
            }
        },
        _ => Some((None, None)),
    }
}

/// `--against`: alternate runs of the other build and this one, each first in every other
/// pair, then compare the medians.
async fn compare_builds(
    args: &Args,
    settings: run::Settings,
    against: PathBuf,
) -> anyhow::Result<bool> {
    if !against.is_file() {
        bail!("--against: no espm-bridge binary at {}", against.display());
    }
    let other = run::Settings {
        bridge_bin: against,
        ..settings.clone()
    };
    let mut all_ok = true;
    for kind in args.sink.kinds() {
        let Some((broker, brokers)) = broker_for(kind, &args.kafka_brokers).await else {
            all_ok = false;
            continue;
        };
        // Runs of `against`, then of `this`.
        let mut runs = [Vec::new(), Vec::new()];
        for pair in 1..=args.pairs {
            // The second run of a pair is a few per cent slower on the same binary (NATS: 0.93
            // over 6 pairs), so odd pairs start with `against` and even ones with `this`.
            let mut order = [(0, ("against", &other)), (1, ("this", &settings))];
            if pair % 2 == 0 {
                order.reverse();
            }
            for (side, (label, s)) in order {
                eprintln!(
                    "espm-load: {} pair {pair} of {}, {label}: {}",
                    kind.as_str(),
                    args.pairs,
                    s.bridge_bin.display()
                );
                match run::run(s, kind, brokers.as_deref()).await {
                    Ok(r) => {
                        println!("{label} {}", report::line(&r));
                        all_ok &= r.complete();
                        runs[side].push(r);
                    }
                    Err(e) => {
                        all_ok = false;
                        println!("{label} sink={} FAILED: {e:#}", kind.as_str());
                    }
                }
            }
        }
        drop(broker);
        println!("{}", compare::summary(kind.as_str(), &runs[1], &runs[0]));
    }
    Ok(all_ok)
}

/// The naive bridge, then the bare client with the naive bridge's mean record size, on the
/// destination of `kind`'s run.
async fn baselines(
    kind: SinkKind,
    dest: &baseline::Destination,
    settings: &run::Settings,
    bridge_per_s: f64,
) -> anyhow::Result<String> {
    let kind = kind.as_str();
    eprintln!("espm-load: {kind} baselines on the same destination");
    let naive = baseline::naive_bridge(dest, settings.notifications, settings.chunk).await?;
    let size = naive.size;
    let naive_per_s = naive.per_s;
    let raw = baseline::raw_client(dest, naive).await?;
    let naive = naive_per_s;
    Ok(format!(
        "baselines {kind}: bridge={bridge_per_s:.0}/s naive_bridge={naive:.0}/s \
         raw_client={raw:.0}/s (records of {size} bytes) bridge/naive={:.2} bridge/raw={:.2}",
        bridge_per_s / naive.max(1e-9),
        bridge_per_s / raw.max(1e-9)
    ))
}

/// Start tansu off the async threads (the harness sleeps while it waits for the port) and turn
/// its panics (binary missing, port never opened) into an error for this run only.
async fn start_tansu() -> anyhow::Result<tansu::Tansu> {
    let started = tokio::task::spawn_blocking(|| std::panic::catch_unwind(tansu::Tansu::start))
        .await
        .context("tansu start task failed")?;
    started.map_err(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        anyhow::anyhow!("cannot start tansu: {msg} (or pass --kafka-brokers)")
    })
}
