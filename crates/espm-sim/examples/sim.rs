//! Run the simulator stand-alone: `cargo run -p espm-sim --example sim -- [ADDR] [SEED]`
//! (default `127.0.0.1:8080`, seed 42, provider `sim_provider` / `sim_password`). Ctrl-C stops it.

use espm_sim::{SimConfig, SimServer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(42);
    let listen = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let cfg = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let sim = SimServer::start(cfg, listen).await?;
    println!("PM web services: {}", sim.base_url());
    println!("control API:     {}", sim.control_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
