//! The espm-bridge binary: configuration, wiring and the command line. No business logic lives
//! here: polling is `espm-poller`, storage `espm-journal`, events `espm-events`, delivery the
//! `espm-sink*` crates, the simulator `espm-sim`.

mod arcadia;
mod cli;
mod commands;
mod logging;
#[cfg(feature = "otel")]
mod otel;
mod runtime;
mod server;

use clap::Parser;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = cli::Cli::parse();
    let _logging = logging::init(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("espm-bridge: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("espm-bridge: {e:#}");
            tracing::error!(error = format!("{e:#}"), "exiting");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit status of a failed command (documented in `--help`): 78 (EX_CONFIG, as Vector uses)
/// for anything the configuration got wrong, including a secret it names that cannot be read; 73
/// when another bridge holds the journal; 1 for everything else. Usage errors exit with 2 from clap before we get here.
fn exit_code(e: &anyhow::Error) -> u8 {
    let config = e.chain().any(|c| {
        c.is::<espm_config::ConfigError>()
            || c.is::<espm_config::SecretError>()
            || matches!(
                c.downcast_ref::<espm_sink::SinkError>(),
                Some(espm_sink::SinkError::Config { .. })
            )
    });
    let in_use = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<espm_journal::JournalError>(),
            Some(espm_journal::JournalError::InUse { .. })
        )
    });
    if config {
        cli::EXIT_CONFIG
    } else if in_use {
        cli::EXIT_JOURNAL_IN_USE
    } else {
        1
    }
}

/// glibc gives threads that allocate their own arenas (up to 8 per core) and keeps what they
/// freed there, so the journal's blocking threads grew the process with the burst size
/// (espm-load, 1M notifications: 76.5 MiB peak RSS, 56.9 MiB with two arenas). An operator's
/// `MALLOC_ARENA_MAX` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called first thing in main, before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
