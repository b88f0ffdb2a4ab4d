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
            std::process::ExitCode::FAILURE
        }
    }
}
