//! Commands asked of Portfolio Manager through the bridge: answer a pending request, disconnect,
//! unshare, create a customer.
//!
//! The services that consume the bridge's events decide; this crate carries their decisions to
//! PM the way PM wants them carried:
//! 1. a command is checked ([`Command::validate`]) and journalled under its id **before** any PM
//!    call; an id already journalled returns the first result without a second PM call (an id
//!    reused for a different command is refused);
//! 2. every PM call of a command is recorded as begun before it is made, so a command found
//!    unfinished after a crash is first checked against PM (is the request still pending, the
//!    customer still connected, the share still there, the customer already created?) and only
//!    then, if still needed, sent: never blindly repeated;
//! 3. PM answers that mean "already so" (a request already resolved, a customer not connected,
//!    a share already gone) complete the command with outcome `nothing_to_do`;
//! 4. the result, its `command.completed` / `command.failed` event (with `causationid` = the
//!    command id) and, for an answer, who answered, are journalled in one transaction;
//! 5. one command per provider account runs at a time, and the PM client itself never calls one
//!    account concurrently.
//!
//! The command API (`espm-api`), the command topics and the CLI all go through [`Commander`].

mod command;
mod commander;
mod problem;

pub use command::{
    check_id, AddressBody, AnswerBody, Command, ContactBody, CreateCustomerBody, Decision,
    DisconnectBody, OrganizationBody, Password, PendingKind, UnshareBody, ID_MAX_LEN,
    NOTE_MAX_CHARS,
};
pub use commander::{Account, CommandView, Commander, Door, PendingItem, Submission};
pub use problem::{Problem, ProblemKind};

/// Why a command could not even be journalled. PM's own refusals are not errors here: they
/// finish the command as `failed` (see [`CommandView::error`]).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command is malformed or asks what PM would refuse anyway (a note over 1,000
    /// characters, an id that is not positive).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// No provider account of that name is configured.
    #[error("no provider account named {0:?} is configured")]
    UnknownAccount(String),
    /// The id is journalled for a different command.
    #[error("command id {id:?} was already used for a different command ({action})")]
    IdReused {
        /// The id.
        id: String,
        /// What it was used for.
        action: String,
    },
    /// The journal failed: nothing was sent to PM.
    #[error("journal: {0}")]
    Journal(#[from] espm_journal::JournalError),
    /// A read-only call to PM failed (listing or reading customers).
    #[error("PM: {0}")]
    Pm(#[from] espm_client::ClientError),
}

impl CommandError {
    /// The problem the API answers with.
    pub fn problem(&self) -> Problem {
        match self {
            CommandError::Invalid(m) => Problem::new(ProblemKind::InvalidCommand, m.clone()),
            CommandError::UnknownAccount(_) => {
                Problem::new(ProblemKind::UnknownAccount, self.to_string())
            }
            CommandError::IdReused { .. } => Problem::new(ProblemKind::IdReused, self.to_string()),
            CommandError::Journal(e) => {
                Problem::new(ProblemKind::JournalUnavailable, e.to_string())
            }
            CommandError::Pm(e) => Problem::from_client_error(e),
        }
    }
}
