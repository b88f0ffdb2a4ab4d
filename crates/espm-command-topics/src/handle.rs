//! From a read message to a journalled result: the account, the id, submit or reject, and
//! back-off while the journal cannot take it. Shared by the Kafka and JetStream consumers.

use std::time::Duration;

use espm_command::{
    check_id, CommandError, CommandView, Commander, Door, Problem, ProblemKind, Submission,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::parse::Parsed;

/// First pause after a journal failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two tries of one message.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What became of a message whose result is journalled (it may be committed now).
#[derive(Debug)]
pub(crate) enum Handled {
    /// The command ran (or its id already had a result).
    Submitted(CommandView),
    /// A malformed command, journalled as failed with its `.failed` event.
    Rejected(CommandView),
    /// Nothing can be journalled for it (no provider account is configured at all).
    Unanswerable,
}

impl Handled {
    fn label(&self) -> &'static str {
        match self {
            Handled::Submitted(v) if v.state == "completed" => "completed",
            Handled::Submitted(_) => "failed",
            Handled::Rejected(_) => "malformed",
            Handled::Unanswerable => "unanswerable",
        }
    }
}

/// Runs the messages of one command topic entry.
#[derive(Debug, Clone)]
pub(crate) struct Handler {
    pub commander: Commander,
    pub door: Door,
    /// The entry's name: metric label and log field.
    pub name: String,
    /// The entry's `account`.
    pub default_account: Option<String>,
}

impl Handler {
    /// Journal the message's result, retrying with back-off while the journal (or a read-only
    /// PM call) fails. `None` when `stop` came first: the message must not be committed.
    /// A command already running when `stop` comes is finished first.
    pub async fn journal(
        &self,
        parsed: &Parsed,
        position: &str,
        stop: &CancellationToken,
    ) -> Option<Handled> {
        let mut delay = FIRST_BACKOFF;
        loop {
            if stop.is_cancelled() {
                return None;
            }
            match self.once(parsed, position).await {
                Ok(h) => {
                    metrics::counter!(
                        "espm_bridge_command_topic_messages_total",
                        "topic" => self.name.clone(),
                        "result" => h.label()
                    )
                    .increment(1);
                    return Some(h);
                }
                Err(e) => {
                    metrics::counter!(
                        "espm_bridge_command_topic_retries_total",
                        "topic" => self.name.clone()
                    )
                    .increment(1);
                    tracing::warn!(
                        topic = %self.name,
                        position,
                        error = %e,
                        retry_in = ?delay,
                        "command result not journalled; the message stays uncommitted and is tried again"
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One try. Errors are transient (journal, PM reads): nothing was journalled.
    async fn once(&self, parsed: &Parsed, position: &str) -> Result<Handled, CommandError> {
        let names = self.commander.account_names();
        let account = self.account(parsed, &names);
        // Where a rejection is journalled: the named account when it exists, else a fallback.
        let journal_account = match &account {
            Ok(a) => Some(a.clone()),
            Err(_) => self
                .default_account
                .clone()
                .filter(|a| names.contains(a))
                .or_else(|| names.first().cloned()),
        };
        let Some(journal_account) = journal_account else {
            tracing::error!(topic = %self.name, position, "no provider account is configured: the command cannot be answered and is skipped");
            return Ok(Handled::Unanswerable);
        };
        let event_id = parsed.id.as_deref().filter(|id| check_id(id).is_ok());
        let fallback = fallback_id(position);
        let reject = |id: &str, problem: Problem| {
            let (id, account) = (id.to_string(), journal_account.clone());
            async move {
                tracing::info!(topic = %self.name, command = %id, position, problem = problem.kind.slug(), detail = %problem.detail, "malformed command answered with command.failed");
                self.commander
                    .reject_malformed(&account, &id, parsed.source.clone(), self.door, problem)
                    .await
                    .map(Handled::Rejected)
            }
        };
        let command = match &parsed.command {
            Err(detail) => {
                return reject(
                    event_id.unwrap_or(&fallback),
                    Problem::new(ProblemKind::InvalidCommand, detail.clone()),
                )
                .await
            }
            Ok(c) => c.clone(),
        };
        let account = match account {
            Ok(a) => a,
            Err(p) => return reject(event_id.unwrap_or(&fallback), p).await,
        };
        let Some(id) = event_id else {
            return reject(
                &fallback,
                Problem::new(
                    ProblemKind::InvalidCommand,
                    format!(
                        "the event id is not a valid command id: 1 to {} visible ASCII characters",
                        espm_command::ID_MAX_LEN
                    ),
                ),
            )
            .await;
        };
        let submitted = self
            .commander
            .submit(Submission {
                id: Some(id.to_string()),
                account: account.clone(),
                command,
                requester: parsed.source.clone(),
                door: self.door,
            })
            .await;
        match submitted {
            Ok(view) => Ok(Handled::Submitted(view)),
            Err(e @ (CommandError::Journal(_) | CommandError::Pm(_))) => Err(e),
            // The id already names another command: answer under the message's position, so
            // the sender hears why and the first command's result stands.
            Err(e @ CommandError::IdReused { .. }) => reject(&fallback, e.problem()).await,
            Err(e) => reject(id, e.problem()).await,
        }
    }

    /// The account the message names, else the entry's, else the only configured one.
    fn account(&self, parsed: &Parsed, names: &[String]) -> Result<String, Problem> {
        match parsed.account.as_ref().or(self.default_account.as_ref()) {
            Some(a) if names.contains(a) => Ok(a.clone()),
            Some(a) => Err(Problem::new(
                ProblemKind::UnknownAccount,
                format!("no provider account named {a:?} is configured"),
            )),
            None if names.len() == 1 => Ok(names[0].clone()),
            None => Err(Problem::new(
                ProblemKind::InvalidCommand,
                format!(
                    "the command names no provider account: set the `espmaccount` attribute or \
                     `data.account` (one of {})",
                    names.join(", ")
                ),
            )),
        }
    }
}

/// A command id for a message without a usable one, derived from where it sits in the broker
/// (`kafka/{topic}/{partition}/{offset}`, `nats/{stream}/{sequence}`), so a re-delivered
/// message gets the same id and is answered once.
pub(crate) fn fallback_id(position: &str) -> String {
    if check_id(position).is_ok() {
        return position.to_string();
    }
    let digest = Sha256::digest(position.as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("msg-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_ids_are_valid_and_deterministic() {
        assert_eq!(fallback_id("kafka/cmds/0/12"), "kafka/cmds/0/12");
        let long = format!("kafka/{}/0/1", "t".repeat(200));
        assert_eq!(fallback_id(&long), fallback_id(&long));
        assert!(check_id(&fallback_id(&long)).is_ok());
        assert!(check_id(&fallback_id("nats/Stréam/3")).is_ok());
    }
}
