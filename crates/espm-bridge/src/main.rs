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

/// jemalloc, for C code too (SQLite, librdkafka). With glibc's malloc the drain's, the sinks'
/// and librdkafka's threads waited on each other's arena locks (two arenas, to keep RSS down):
/// side by side in `espm-load`, kafka went from about 29,000 to 45,000 events/s per burst, and a
/// 1,000,000 burst peaked at 60.8 MiB instead of 62.1 (README, Performance).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: one arena (each thread caches its own small
/// allocations, so threads rarely meet on its lock) and freed pages given back within half a
/// second, which keeps any burst under issue 9's 64 MiB. An operator's `MALLOC_CONF` wins.
#[cfg(not(target_env = "msvc"))]
#[export_name = "malloc_conf"]
static MALLOC_CONF: MallocConf = MallocConf(JEMALLOC_OPTIONS.as_ptr());

/// The options [`MALLOC_CONF`] sets.
const JEMALLOC_OPTIONS: &std::ffi::CStr = c"narenas:1,dirty_decay_ms:500,muzzy_decay_ms:0";

/// A C string pointer jemalloc reads once; `Sync` so that it can be a `static`.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a 'static C string literal that nothing writes.
unsafe impl Sync for MallocConf {}

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

#[cfg(all(test, not(target_env = "msvc")))]
mod tests {
    /// jemalloc runs with the options of `MALLOC_CONF` (a symbol the linker could drop, or that
    /// jemalloc could ignore under another name, and the process would silently run with four
    /// arenas per CPU and a ten-second decay).
    #[test]
    fn jemalloc_runs_with_our_options() {
        if std::env::var_os("MALLOC_CONF").is_some() {
            return; // An operator's options win; nothing of ours to check.
        }
        let arenas: u32 = opt(c"opt.narenas");
        let dirty: isize = opt(c"opt.dirty_decay_ms");
        let muzzy: isize = opt(c"opt.muzzy_decay_ms");
        assert_eq!((arenas, dirty, muzzy), (1, 500, 0));
    }

    /// One of jemalloc's options, by its `mallctl` name.
    fn opt<T: Default>(name: &std::ffi::CStr) -> T {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `value` is a T of `len` bytes, the type jemalloc's manual gives the option;
        // nothing is written.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut T).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        value
    }
}
