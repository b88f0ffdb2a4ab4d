//! Command-line interface. `--help` on every subcommand explains what it does and when to use it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};

/// Exit status for configuration errors (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

const EXIT_CODES: &str = "\
Exit status:
  0   success
  1   failure while running (PM, journal or broker trouble; `normalize` on bad XML)
  2   usage error: unknown subcommand or flag, missing or conflicting arguments
  73  `run`: the journal is in use by another espm-bridge (one bridge per journal; the message
      names the holder's pid and host)
  74  `run`: a drained PM body could only be written to stderr (see the UNJOURNALLED BODY block)
  75  `run`: drained PM bodies wait in the spool; the next start ingests them
  78  configuration error (EX_CONFIG): the file does not parse or validate, or a secret it
      names cannot be read; `check-config` prints every problem with its key path";

/// Exit status when another process holds the journal (sysexits' EX_CANTCREAT).
pub const EXIT_JOURNAL_IN_USE: u8 = 73;

/// espm-bridge turns ENERGY STAR Portfolio Manager polling into pushed CloudEvents.
///
/// It drains PM's notifications (UNSHARE, SHAREUPDATE, DISCONNECT, TRANSFERPROPERTY) and
/// pending connection/share requests behind a durable SQLite journal, normalizes them into
/// versioned CloudEvents and publishes them at least once to Kafka, NATS JetStream, HTTP
/// webhooks, a file or the console.
///
/// Start here: `espm-bridge demo` runs everything on embedded defaults (a built-in PM
/// simulator, a temporary journal, the console sink). For production: write a config
/// (see config/production.toml), check it with `espm-bridge check-config --config FILE`,
/// then `espm-bridge run --config FILE`.
#[derive(Debug, Parser)]
#[command(
    name = "espm-bridge",
    version,
    propagate_version = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Log format (logs go to stderr): `json` (default when stderr is not a terminal) or `pretty`. Level from RUST_LOG
    /// (default `info`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable.
    Pretty,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge against real PM accounts (or a simulator) as configured.
    ///
    /// Polls every configured account, journals every PM response before parsing it, and
    /// delivers events to every configured sink. SIGTERM/SIGINT stop polling and let in-flight
    /// deliveries finish within --grace; undelivered events stay in the journal for next start.
    Run {
        /// TOML configuration file. Environment overrides: ESPM_BRIDGE__SECTION__KEY=value.
        #[arg(long, short, env = "ESPM_BRIDGE_CONFIG")]
        config: PathBuf,
        /// Serve /metrics, /healthz, /readyz and /status here instead of `metrics.listen`.
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        /// How long to wait for in-flight deliveries on shutdown.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// Run the simulator and the bridge together on embedded defaults, printing events.
    ///
    /// Starts the built-in PM simulator with a seeded scenario, a journal in a temporary
    /// directory and the console sink, then keeps simulated customers busy (connection
    /// requests, shares, unshares, disconnects, transfers) so events keep flowing.
    Demo {
        /// Serve /metrics, /healthz, /readyz and /status here.
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics_addr: SocketAddr,
        /// Simulator listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        sim_listen: SocketAddr,
        /// Seconds between simulated customer actions (0 = only the seeded scenario).
        #[arg(long, default_value_t = 3)]
        activity_every: u64,
        /// Stop after this long (e.g. `30s`); default: run until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Keep the journal here instead of a temporary directory.
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Also run the Arcadia simulator and mirror accepted property shares into it (a second
        /// sink); the demo then accepts every pending connection and property share.
        #[arg(long)]
        arcadia: bool,
    },
    /// Run the PM simulator alone (for local development and tests).
    ///
    /// PM paths are served under http://ADDR/ws (use that as `base_url`), the JSON control API
    /// under http://ADDR/sim (customer actions, bulk notifications, faults, the ledger).
    Sim {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
        /// Provider username the simulator accepts.
        #[arg(long, default_value = "sim_provider")]
        username: String,
        /// Provider password the simulator accepts.
        #[arg(
            long,
            default_value = "sim_password",
            env = "ESPM_SIM_PASSWORD",
            hide_env_values = true
        )]
        password: String,
        /// Seed for ids and the demo scenario (same seed, same world).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Start with an empty world instead of the demo scenario.
        #[arg(long)]
        empty: bool,
    },
    /// Run the Arcadia (Genability) account API simulator alone (for local development and tests).
    ///
    /// Arcadia's REST paths are served under http://ADDR/rest/v1 (use that as the arcadia sink's
    /// `base_url`), the JSON control API under http://ADDR/sim (accounts, faults, stats, reset).
    ArcadiaSim {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18090")]
        listen: SocketAddr,
        /// Application id the simulator accepts (HTTP Basic user).
        #[arg(long, default_value = "sim-app-id")]
        app_id: String,
        /// Application key the simulator accepts (HTTP Basic password).
        #[arg(
            long,
            default_value = "sim-app-key",
            env = "ESPM_ARCADIA_SIM_APP_KEY",
            hide_env_values = true
        )]
        app_key: String,
    },
    /// Call Arcadia by hand with a configured arcadia sink's credentials.
    Arcadia {
        #[command(subcommand)]
        command: ArcadiaCommand,
    },
    /// Normalize one PM XML document into CloudEvents, one JSON object per line on stdout.
    ///
    /// Accepts a `notificationList` or a `pendingList` (FILE, or `-` for stdin). Bad input gives
    /// a message on stderr and a non-zero exit.
    Normalize {
        /// The XML file, or `-` for stdin.
        #[arg(default_value = "-")]
        file: String,
        /// PM environment recorded in the events' source.
        #[arg(long, default_value = "live")]
        environment: String,
        /// Provider account name recorded in the events' source.
        #[arg(long, default_value = "default")]
        account: String,
    },
    /// Validate a configuration file and print every problem with its key path.
    ///
    /// Runs exactly the checks `run` runs before it starts (including each sink's own), without
    /// reading secrets. Exits 0 when the file is valid, 78 (EX_CONFIG) when it is not.
    #[command(after_help = EXIT_CODES)]
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, short, env = "ESPM_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Inspect the journal: outbox depth per sink, quarantined bodies, a notification's history.
    #[command(group(ArgGroup::new("journal_source").required(true).args(["path", "config"])))]
    Journal {
        /// Journal file (or give --config to use `journal.path`).
        #[arg(long, conflicts_with = "config")]
        path: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, short, env = "ESPM_BRIDGE_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Answer PM as the provider: accept or reject pending requests, disconnect, unshare, create
    /// and list customers.
    ///
    /// Uses the account's credentials from the configuration and the same command path as the
    /// command API: each command is journalled before its PM call, announced by a
    /// `command.completed`/`command.failed` event, and runs once per `--command-id`. Accepts
    /// and rejects are recorded, so the `...resolved` event that follows says `accepted` or
    /// `rejected` instead of `unknown`. What PM reports as already so (a request already
    /// resolved, a customer not connected, a share already gone) prints "nothing to do" and
    /// exits 0. A refusal by PM exits 1 with PM's message.
    Pm {
        /// TOML configuration file.
        #[arg(long, short, env = "ESPM_BRIDGE_CONFIG")]
        config: PathBuf,
        /// Which configured account to act as (default: the only one).
        #[arg(long)]
        account: Option<String>,
        /// The command's id (an idempotency key): running the same command again with the same
        /// id prints the first result and makes no second PM call. Default: a fresh id.
        #[arg(long, global = true)]
        command_id: Option<String>,
        #[command(subcommand)]
        command: PmCommand,
    },
    /// See, replay or drop dead letters (events a sink gave up on).
    #[command(group(ArgGroup::new("journal_source").required(true).args(["path", "config"])))]
    Dlq {
        /// Journal file (or give --config to use `journal.path`).
        #[arg(long, conflicts_with = "config")]
        path: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, short, env = "ESPM_BRIDGE_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Webhook endpoints: see their retry queue and health, re-enable a disabled one.
    #[command(group(ArgGroup::new("journal_source").required(true).args(["path", "config"])))]
    Webhook {
        /// Journal file (or give --config to use `journal.path`).
        #[arg(long, conflicts_with = "config")]
        path: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, short, env = "ESPM_BRIDGE_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: WebhookCommand,
    },
}

/// `webhook` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Re-enable an endpoint disabled by a 410 Gone or by `disable_after` of continuous failure.
    /// A running bridge notices within a second and delivers its queued events; no restart.
    Enable {
        /// The webhook sink's name.
        name: String,
    },
    /// Whether an endpoint is disabled, since when it fails, and its retry queue.
    Status {
        /// The webhook sink's name.
        name: String,
        /// `text` or `json` (one object, for scripts).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// `journal` subcommands.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Outbox depth, oldest pending event and dead letters per sink.
    Depth {
        /// `text` (a table) or `json` (one object, for scripts).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Quarantined PM bodies (responses that did not parse).
    Quarantine {
        /// Print this body's raw bytes to stdout.
        #[arg(long, conflicts_with = "output")]
        show: Option<i64>,
        /// `text` (a table) or `json` (an array, for scripts).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Parse a quarantined body again (e.g. after an upgrade that reads it) and deliver what
    /// parses. Safe to repeat: event ids are deterministic, so nothing is sent twice. Exits 0 when
    /// it parsed, 1 when it still does not (it stays quarantined).
    Reprocess {
        /// RAW ID from `espm-bridge journal quarantine`.
        raw_id: i64,
    },
    /// Everything known about one PM notification: bodies, events, deliveries.
    History {
        /// PM notificationId.
        notification_id: i64,
    },
    /// Release the cursor of a sink that is no longer configured. Compaction keeps every event a
    /// registered sink has not passed, so a removed sink's cursor freezes it; `run` logs such
    /// cursors at start-up and `journal depth --config` marks them `not configured`. Refused for
    /// a sink the given `--config` still configures. Exits 1 when no such cursor exists.
    ForgetSink {
        /// The sink name as `journal depth` shows it.
        name: String,
    },
    /// Drop delivered events and parsed bodies older than the retention now.
    Compact {
        /// Retention (default: `journal.retention` or 30d).
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<std::time::Duration>,
    },
}

/// Output format of the inspection commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Text,
    /// JSON on stdout for scripts (timestamps RFC 3339, ages in seconds).
    Json,
}

/// `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, optionally for one sink.
    List {
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// `text` (a table) or `json` (an array, for scripts).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Put dead letters back in the outbox for their sink only; a running bridge delivers them.
    Replay {
        /// Dead-letter ids (from `dlq list`), or `--all`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Replay every dead letter (of --sink, if given).
        #[arg(long)]
        all: bool,
        /// With --all: only this sink.
        #[arg(long, requires = "all")]
        sink: Option<String>,
    },
    /// Delete dead letters for good.
    Drop {
        /// Dead-letter ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

/// What a pending request is: the command line's short names for the model's pending kinds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RequestKind {
    /// A connection request (id = the customer's accountId).
    Connection,
    /// A property share (id = propertyId).
    Property,
    /// A meter share (id = meterId).
    Meter,
}

impl From<RequestKind> for espm_model::PendingKind {
    fn from(k: RequestKind) -> Self {
        match k {
            RequestKind::Connection => espm_model::PendingKind::Connection,
            RequestKind::Property => espm_model::PendingKind::PropertyShare,
            RequestKind::Meter => espm_model::PendingKind::MeterShare,
        }
    }
}

/// `pm` subcommands.
#[derive(Debug, Subcommand)]
pub enum PmCommand {
    /// Accept a pending request.
    Accept {
        /// Request kind.
        #[arg(value_enum)]
        kind: RequestKind,
        /// accountId, propertyId or meterId.
        id: i64,
        /// Note for the customer (1..1000 characters; empty is not sent).
        #[arg(long)]
        note: Option<String>,
    },
    /// Reject a pending request.
    Reject {
        /// Request kind.
        #[arg(value_enum)]
        kind: RequestKind,
        /// accountId, propertyId or meterId.
        id: i64,
        /// Note for the customer.
        #[arg(long)]
        note: Option<String>,
    },
    /// Disconnect from a customer account. `--keep-shares true|false` is required: PM's own
    /// default (false) removes the customer's shares too.
    Disconnect {
        /// The customer's accountId.
        account_id: i64,
        /// Keep the property and meter shares (`true`) or let PM remove them (`false`).
        #[arg(long, required = true, action = clap::ArgAction::Set, value_name = "true|false")]
        keep_shares: bool,
        /// Note for the customer.
        #[arg(long)]
        note: Option<String>,
    },
    /// Stop receiving a property's or a meter's data.
    Unshare {
        /// `property` or `meter`.
        #[arg(value_enum)]
        kind: UnshareKind,
        /// propertyId or meterId.
        id: i64,
        /// Note for the customer.
        #[arg(long)]
        note: Option<String>,
    },
    /// Create a customer account (PM's `POST /customer`; PM connects it to you).
    ///
    /// The account comes from flags, from `--file` (the command API's JSON body, `createCustomer`,
    /// or PM's own `<account>` XML), or both: flags override the file's values, so a file can be
    /// a template. Without `--file`, `--username`, `--first-name`, `--last-name`, `--email`,
    /// `--address1`, `--city` and `--organization` are required. The password comes from
    /// `--password-env`/`--password-file` (never a flag's value: it would show in `ps`), else
    /// from the file. Prints the command as JSON, with the new customer's id in `accountId`.
    ///
    /// Example: `espm-bridge pm create-customer --username acme_fm --first-name Ada
    /// --last-name Lovelace --email ada@example.com --phone 555-0100 --job-title Manager
    /// --address1 "1 Main St" --city Arlington --state VA --postal-code 22201
    /// --organization "Acme FM" --password-env NEW_CUSTOMER_PASSWORD`
    CreateCustomer {
        /// JSON (`createCustomer` body) or PM `<account>` XML.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        fields: Box<NewCustomerArgs>,
        /// Environment variable holding the password.
        #[arg(long, conflicts_with = "password_file")]
        password_env: Option<String>,
        /// File holding the password (trailing newline ignored).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// The connected customers (PM's `GET /customer/list`), one JSON object per line.
    Customers,
    /// One customer with its username (PM's `GET /customer/{id}`), as JSON.
    Customer {
        /// The customer's accountId.
        id: i64,
    },
    /// Pending requests from the journal's latest walk of PM's lists (no PM call), one JSON
    /// object per line.
    Pending {
        /// Only this list.
        #[arg(long, value_enum)]
        kind: Option<RequestKind>,
        /// Only requests of this customer account.
        #[arg(long)]
        customer: Option<i64>,
    },
}

/// A new customer's fields as flags (`pm create-customer`); each overrides `--file`'s value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NewCustomerArgs {
    /// Username of the new account.
    #[arg(long)]
    pub username: Option<String>,
    /// Whether the account may use web services [default without --file: false].
    #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
    pub webservice_user: Option<bool>,
    /// Whether other PM users can find the account [default without --file: false].
    #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
    pub searchable: Option<bool>,
    /// Contact's first name.
    #[arg(long)]
    pub first_name: Option<String>,
    /// Contact's last name.
    #[arg(long)]
    pub last_name: Option<String>,
    /// Contact's e-mail.
    #[arg(long)]
    pub email: Option<String>,
    /// Contact's phone.
    #[arg(long)]
    pub phone: Option<String>,
    /// Contact's job title.
    #[arg(long)]
    pub job_title: Option<String>,
    /// Street line 1.
    #[arg(long)]
    pub address1: Option<String>,
    /// Street line 2.
    #[arg(long)]
    pub address2: Option<String>,
    /// City.
    #[arg(long)]
    pub city: Option<String>,
    /// US state or Canadian province code (e.g. `VA`).
    #[arg(long)]
    pub state: Option<String>,
    /// Free-text state or region outside the US and Canada.
    #[arg(long)]
    pub other_state: Option<String>,
    /// Postal code.
    #[arg(long)]
    pub postal_code: Option<String>,
    /// Country code [default without --file: US].
    #[arg(long)]
    pub country: Option<String>,
    /// Organisation name.
    #[arg(long)]
    pub organization: Option<String>,
    /// PM's primary business type [default without --file: Other].
    #[arg(long)]
    pub primary_business: Option<String>,
    /// Free text when the primary business is `Other`.
    #[arg(long)]
    pub other_business_description: Option<String>,
    /// Whether the organisation is an ENERGY STAR partner [default without --file: false].
    #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
    pub energy_star_partner: Option<bool>,
    /// Its partner type, e.g. `Service and Product Providers`.
    #[arg(long)]
    pub energy_star_partner_type: Option<String>,
}

/// What to unshare.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UnshareKind {
    /// A property (also removes its meter shares).
    Property,
    /// A meter.
    Meter,
}

/// `arcadia` subcommands.
#[derive(Debug, Subcommand)]
pub enum ArcadiaCommand {
    /// Set one field of an Arcadia account (Arcadia's Set Account Property), e.g. to repair a
    /// mirrored account: a `properties` entry (`buildingArea`), a header field (`status`,
    /// `accountName`, `type`...), an address field (`zip`...) or `masterTariffId`.
    ///
    /// Prints Arcadia's answer (the `PropertyData` it stored). Exits non-zero with Arcadia's
    /// message when it refuses the call.
    SetProperty {
        /// TOML configuration file holding the arcadia sink.
        #[arg(long, short, env = "ESPM_BRIDGE_CONFIG")]
        config: PathBuf,
        /// Which configured arcadia sink's credentials and base URL to use (default: the only one).
        #[arg(long)]
        sink: Option<String>,
        /// The account by our id (`providerAccountId`, e.g. `espm-5000006`).
        #[arg(
            long,
            conflicts_with = "account_id",
            required_unless_present = "account_id"
        )]
        pid: Option<String>,
        /// The account by Arcadia's UUID (`accountId`).
        #[arg(long)]
        account_id: Option<String>,
        /// The field (`keyName`).
        key: String,
        /// The value (`dataValue`).
        value: String,
        /// How sure the value is (`accuracy`, e.g. 100 for a confirmed tariff).
        #[arg(long)]
        accuracy: Option<u32>,
        /// Valid from (`fromDateTime`, ISO 8601).
        #[arg(long)]
        from: Option<String>,
        /// Valid until (`toDateTime`, ISO 8601).
        #[arg(long)]
        to: Option<String>,
    },
}
