//! [`Commander`]: journal, check, call PM, finish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use espm_client::{ClientError, CustomFieldTarget, PmClient};
use espm_events::data::{CommandAction, CommandErrorData, CommandOutcome, CommandResultData};
use espm_events::{command_event, Origin, TrackedRequest};
use espm_journal::{AnswerRecord, Begun, CommandState, Journal, NewCommand, Scope, StoredCommand};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::command::{check_id, Command, PendingKind};
use crate::problem::{Problem, ProblemKind};
use crate::CommandError;

/// Which door a command came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    /// The HTTP command API.
    Api,
    /// A Kafka command topic.
    Kafka,
    /// A JetStream command consumer.
    Nats,
    /// `espm-bridge pm ...`.
    Cli,
    /// An auto-accept policy rule or the decision webhook.
    Policy,
}

impl Door {
    /// `api`, `kafka`, `nats`, `cli` or `policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Api => "api",
            Door::Kafka => "kafka",
            Door::Nats => "nats",
            Door::Cli => "cli",
            Door::Policy => "policy",
        }
    }
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The caller's id (`Idempotency-Key`, a command event's id); a fresh UUID when `None`.
    pub id: Option<String>,
    /// The configured provider account to run it as.
    pub account: String,
    /// What to ask of PM.
    pub command: Command,
    /// Who asks.
    pub requester: Option<String>,
    /// Which door it came in by.
    pub door: Door,
}

/// A configured provider account the commander may act as.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its PM client: the same one its poller uses, so their calls take turns.
    pub client: PmClient,
    /// Its journal namespace.
    pub scope: Scope,
    /// Its event source.
    pub origin: Origin,
}

/// A command as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandView {
    /// Its id.
    pub id: String,
    /// The provider account it ran as.
    pub account: String,
    /// `pending`, `completed` or `failed`.
    pub state: String,
    /// What it asked of PM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<CommandAction>,
    /// What it acted on (never a password).
    pub target: Value,
    /// How a completed command ended: `done`, or `nothing_to_do` when it was already so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CommandOutcome>,
    /// The customer account concerned (for a created customer: its new id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<i64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandErrorData>,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Which door it came in by.
    pub origin: String,
    /// PM calls made for it.
    pub attempts: u32,
    /// When it was first journalled, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// When it last changed, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl CommandView {
    fn of(c: &StoredCommand) -> Self {
        let result: Option<CommandResultData> = c
            .result
            .as_ref()
            .and_then(|r| serde_json::from_value(r.clone()).ok());
        Self {
            id: c.id.clone(),
            account: c.scope.account.clone(),
            state: c.state.as_str().to_string(),
            action: serde_json::from_value(Value::from(c.action.clone())).ok(),
            target: c.target.clone(),
            outcome: result.as_ref().and_then(|r| r.outcome),
            account_id: result.as_ref().and_then(|r| r.account_id),
            error: result.and_then(|r| r.error),
            requester: c.requester.clone(),
            origin: c.origin.clone(),
            attempts: c.attempts,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }

    /// The problem of a failed command.
    pub fn problem(&self) -> Option<Problem> {
        self.error.as_ref().map(Problem::from_data)
    }

    /// Whether it finished (completed, or failed in a way sending it again will not change).
    pub fn is_final(&self) -> bool {
        match self.state.as_str() {
            "completed" => true,
            "failed" => !self.error.as_ref().is_some_and(|e| e.retryable),
            _ => false,
        }
    }
}

/// One pending request from the journal's latest snapshot of the pending lists.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingItem {
    /// Its list.
    pub kind: PendingKind,
    /// The id to answer it by (account, property or meter id).
    pub request_id: i64,
    /// The customer account that asks (the property data administrator's for shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<i64>,
    /// The request as last listed: the `data` of its `…requested` event.
    pub request: Value,
}

struct Slot {
    account: Account,
    /// One command per account at a time: keeps a retried id from running twice at once.
    turn: tokio::sync::Mutex<()>,
}

struct Inner {
    journal: Journal,
    accounts: BTreeMap<String, Slot>,
    /// Woken after a result event is journalled: the sink drivers.
    wakes: Vec<Arc<tokio::sync::Notify>>,
}

/// Runs commands: the one path from the API, the command topics, the CLI and policies to PM.
#[derive(Clone)]
pub struct Commander {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Commander {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commander")
            .field("accounts", &self.inner.accounts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Whether PM says it is already so, or a call is needed.
enum Check {
    AlreadySo(Option<i64>),
    NeedsCall,
}

type Outcome = Result<(CommandOutcome, Option<i64>), Problem>;

impl Commander {
    /// A commander over `journal` acting as `accounts` (keyed by their configured name).
    pub fn new(journal: Journal, accounts: impl IntoIterator<Item = Account>) -> Self {
        let accounts = accounts
            .into_iter()
            .map(|a| {
                (
                    a.scope.account.clone(),
                    Slot {
                        account: a,
                        turn: tokio::sync::Mutex::new(()),
                    },
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                journal,
                accounts,
                wakes: Vec::new(),
            }),
        }
    }

    /// Wake these (the sink drivers) whenever a result event is journalled. Call before
    /// cloning.
    pub fn with_wakes(mut self, wakes: Vec<Arc<tokio::sync::Notify>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.wakes = wakes;
        }
        self
    }

    /// The configured account names.
    pub fn account_names(&self) -> Vec<String> {
        self.inner.accounts.keys().cloned().collect()
    }

    fn slot(&self, account: &str) -> Result<&Slot, CommandError> {
        self.inner
            .accounts
            .get(account)
            .ok_or_else(|| CommandError::UnknownAccount(account.to_string()))
    }

    /// Run a command once: journal it, call PM unless its id already has a result, finish it.
    /// A PM refusal is a `failed` command, not an error; errors mean nothing was sent.
    pub async fn submit(&self, s: Submission) -> Result<CommandView, CommandError> {
        if let Some(id) = &s.id {
            check_id(id)?;
        }
        s.command.validate()?;
        let slot = self.slot(&s.account)?;
        let id =
            s.id.clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let _turn = slot.turn.lock().await;
        let target = s.command.target();
        let fingerprint = s.command.fingerprint();
        let scope = slot.account.scope.clone();
        let (id2, action) = (id.clone(), s.command.action().as_str());
        let requester = s.requester.clone();
        let door = s.door.as_str();
        let begun = self
            .inner
            .journal
            .call(move |j| {
                j.begin_command(NewCommand {
                    id: &id2,
                    scope: &scope,
                    action,
                    target: &target,
                    fingerprint: &fingerprint,
                    requester: requester.as_deref(),
                    origin: door,
                })
            })
            .await?;
        let stored = match begun {
            Begun::New(c) => c,
            Begun::Existing(c) => {
                if c.fingerprint != s.command.fingerprint() || c.scope != slot.account.scope {
                    return Err(CommandError::IdReused {
                        id,
                        action: c.action,
                    });
                }
                let view = CommandView::of(&c);
                if view.is_final() {
                    metrics::counter!("espm_bridge_command_repeats_total", "action" => action)
                        .increment(1);
                    return Ok(view);
                }
                c
            }
        };
        self.run(slot, &stored, &s.command).await
    }

    /// The command journalled under `id`.
    pub async fn command(&self, id: &str) -> Result<Option<CommandView>, CommandError> {
        let id = id.to_string();
        let c = self.inner.journal.call(move |j| j.command(&id)).await?;
        Ok(c.as_ref().map(CommandView::of))
    }

    /// Journal a command that could not even be read (a malformed command event) as failed,
    /// with its `command.failed` event, so its sender hears why and the commands behind it go on.
    pub async fn reject_malformed(
        &self,
        account: &str,
        id: &str,
        requester: Option<String>,
        door: Door,
        problem: Problem,
    ) -> Result<CommandView, CommandError> {
        check_id(id)?;
        let slot = self.slot(account)?;
        let _turn = slot.turn.lock().await;
        let scope = slot.account.scope.clone();
        let (id2, req2) = (id.to_string(), requester.clone());
        let begun = self
            .inner
            .journal
            .call(move |j| {
                j.begin_command(NewCommand {
                    id: &id2,
                    scope: &scope,
                    action: "malformed",
                    target: &Value::Object(Default::default()),
                    fingerprint: "malformed",
                    requester: req2.as_deref(),
                    origin: door.as_str(),
                })
            })
            .await?;
        let stored = match begun {
            Begun::New(c) => c,
            // The id already ran (or was already refused): its first result stands.
            Begun::Existing(c) => return Ok(CommandView::of(&c)),
        };
        self.finish(slot, &stored, None, 0, Err(problem)).await
    }

    /// At start-up: finish every command a crash or shutdown left unfinished. One whose PM call
    /// had begun is checked against PM first, never blindly repeated. Returns how many finished.
    pub async fn resume(&self) -> Result<usize, CommandError> {
        let unfinished = self.inner.journal.call(|j| j.unfinished_commands()).await?;
        let mut finished = 0;
        for c in unfinished {
            let Ok(slot) = self.slot(&c.scope.account) else {
                tracing::warn!(command = %c.id, account = %c.scope.account, "unfinished command of an account no longer configured; left as it is");
                continue;
            };
            let _turn = slot.turn.lock().await;
            let command = Command::from_target(&c.target);
            let result = match command {
                // The password is never journalled: a customer not yet created cannot be
                // created from here. Its sender sends it again (same id); the check then
                // finds a customer an interrupted call did create.
                Some(Command::CreateCustomer(body)) => {
                    let outcome = match self.find_customer(&slot.account.client, &body.username).await {
                        Ok(Some(id)) => Ok((CommandOutcome::NothingToDo, Some(id))),
                        Ok(None) => Err(Problem::new(
                            ProblemKind::Interrupted,
                            "the bridge stopped before PM created the customer; send the command again with the same id",
                        )),
                        Err(p) => Err(p),
                    };
                    let cmd = Command::CreateCustomer(body);
                    self.finish(slot, &c, Some(&cmd), c.attempts, outcome).await
                }
                Some(cmd) => self.run(slot, &c, &cmd).await,
                None => {
                    self.finish(
                        slot,
                        &c,
                        None,
                        c.attempts,
                        Err(Problem::new(
                            ProblemKind::Interrupted,
                            "the journalled command could not be read back",
                        )),
                    )
                    .await
                }
            };
            match result {
                Ok(v) => {
                    finished += 1;
                    tracing::info!(command = %v.id, state = %v.state, "unfinished command reconciled");
                }
                Err(e) => {
                    tracing::warn!(command = %c.id, error = %e, "unfinished command not reconciled; tried again at the next start")
                }
            }
        }
        Ok(finished)
    }

    /// Check (when a call may have landed before), call PM if needed, finish.
    async fn run(
        &self,
        slot: &Slot,
        stored: &StoredCommand,
        command: &Command,
    ) -> Result<CommandView, CommandError> {
        let client = &slot.account.client;
        let mut attempts = stored.attempts;
        let checked = if attempts > 0 {
            Some(self.check(client, command).await)
        } else {
            None
        };
        let outcome = match checked {
            Some(Ok(Check::AlreadySo(account_id))) => Ok((
                CommandOutcome::NothingToDo,
                account_id.or(command.account_id()),
            )),
            Some(Err(p)) => Err(p),
            None | Some(Ok(Check::NeedsCall)) => {
                let id = stored.id.clone();
                attempts = self
                    .inner
                    .journal
                    .call(move |j| j.begin_attempt(&id))
                    .await?;
                call_pm(client, command).await
            }
        };
        self.finish(slot, stored, Some(command), attempts, outcome)
            .await
    }

    /// Is what the command asks already so? Read-only PM calls.
    async fn check(&self, client: &PmClient, command: &Command) -> Result<Check, Problem> {
        let pm = |e: ClientError| Problem::from_client_error(&e);
        match command {
            Command::Answer {
                kind, request_id, ..
            } => {
                let pages = client.pending_all(*kind).await.map_err(pm)?;
                let listed = pages.iter().any(|p| match kind {
                    PendingKind::Connection => {
                        p.accounts.iter().any(|a| a.account_id == *request_id)
                    }
                    PendingKind::PropertyShare => {
                        p.properties.iter().any(|a| a.property_id == *request_id)
                    }
                    PendingKind::MeterShare => p.meters.iter().any(|a| a.meter_id == *request_id),
                });
                Ok(if listed {
                    Check::NeedsCall
                } else {
                    Check::AlreadySo(None)
                })
            }
            Command::Disconnect { customer_id, .. } => {
                let customers = client.customers().await.map_err(pm)?;
                Ok(if customers.iter().any(|c| c.id == *customer_id) {
                    Check::NeedsCall
                } else {
                    Check::AlreadySo(Some(*customer_id))
                })
            }
            Command::UnshareProperty { property_id, .. } => {
                shared(client, CustomFieldTarget::Property(*property_id)).await
            }
            Command::UnshareMeter { meter_id, .. } => {
                shared(client, CustomFieldTarget::Meter(*meter_id)).await
            }
            Command::CreateCustomer(body) => {
                Ok(match self.find_customer(client, &body.username).await? {
                    Some(id) => Check::AlreadySo(Some(id)),
                    None => Check::NeedsCall,
                })
            }
        }
    }

    /// The connected customer with this username (the username is only in `GET /customer/{id}`).
    async fn find_customer(
        &self,
        client: &PmClient,
        username: &str,
    ) -> Result<Option<i64>, Problem> {
        let pm = |e: ClientError| Problem::from_client_error(&e);
        for link in client.customers().await.map_err(pm)? {
            match client.customer(link.id).await {
                Ok(c) if c.username.as_deref().map(str::trim) == Some(username.trim()) => {
                    return Ok(Some(link.id))
                }
                Ok(_) => {}
                // A customer that just disconnected is not the one we look for.
                Err(e) if e.is_access_denied() => {}
                Err(e) => return Err(pm(e)),
            }
        }
        Ok(None)
    }

    /// Journal the result, its event and (for an answer PM took) who answered, in one go.
    async fn finish(
        &self,
        slot: &Slot,
        stored: &StoredCommand,
        command: Option<&Command>,
        attempts: u32,
        outcome: Outcome,
    ) -> Result<CommandView, CommandError> {
        let mut target = match &stored.target {
            Value::Object(m) => m.clone().into_iter().collect::<BTreeMap<_, _>>(),
            _ => BTreeMap::new(),
        };
        target.remove("action");
        let (state, outcome_v, account_id, error) = match &outcome {
            Ok((o, acct)) => (CommandState::Completed, Some(*o), *acct, None),
            Err(p) => (
                CommandState::Failed,
                None,
                command.and_then(Command::account_id),
                Some(p.to_data()),
            ),
        };
        let data = CommandResultData {
            command_id: stored.id.clone(),
            action: command.map(Command::action),
            target,
            account_id,
            requester: stored.requester.clone(),
            origin: stored.origin.clone(),
            outcome: outcome_v,
            error,
            attempts,
            finished_at: rfc3339(SystemTime::now()),
        };
        let subject = command
            .and_then(Command::subject)
            .or_else(|| account_id.map(|id| format!("account/{id}")));
        let event = command_event(&slot.account.origin, &data, subject);
        let answer = match (command, &outcome) {
            (
                Some(Command::Answer {
                    kind,
                    request_id,
                    decision,
                    ..
                }),
                Ok((CommandOutcome::Done, _)),
            ) => Some(AnswerRecord {
                kind: kind.as_str().to_string(),
                id: *request_id,
                action: decision.resolution().to_string(),
            }),
            _ => None,
        };
        let result = serde_json::to_value(&data).unwrap_or(Value::Null);
        let id = stored.id.clone();
        let finished = self
            .inner
            .journal
            .call(move |j| j.finish_command(&id, state, &result, &[event], answer.as_ref()))
            .await?;
        for w in &self.inner.wakes {
            w.notify_one();
        }
        let action = command.map(|c| c.action().as_str()).unwrap_or("malformed");
        metrics::counter!(
            "espm_bridge_commands_total",
            "action" => action,
            "origin" => door_label(&stored.origin),
            "state" => state.as_str()
        )
        .increment(1);
        match &outcome {
            Ok((o, _)) => {
                tracing::info!(command = %stored.id, action, outcome = ?o, "command completed")
            }
            Err(p) => {
                tracing::warn!(command = %stored.id, action, problem = p.kind.slug(), detail = %p.detail, "command failed")
            }
        }
        Ok(CommandView::of(&finished))
    }

    /// Pending requests from the journal's latest walk of the lists (no PM call), optionally of
    /// one kind and one customer account.
    pub async fn pending(
        &self,
        account: &str,
        kind: Option<PendingKind>,
        customer: Option<i64>,
    ) -> Result<Vec<PendingItem>, CommandError> {
        let scope = self.slot(account)?.account.scope.clone();
        let kinds: Vec<PendingKind> = match kind {
            Some(k) => vec![k],
            None => PendingKind::ALL.to_vec(),
        };
        let items = self
            .inner
            .journal
            .call(move |j| {
                let mut out = Vec::new();
                for k in kinds {
                    for (_, stored) in j.pending_snapshot(&scope, k.as_str())? {
                        let t = TrackedRequest::from_stored(stored);
                        if t.resolved {
                            continue;
                        }
                        let id_field = match k {
                            PendingKind::Connection => "accountId",
                            PendingKind::PropertyShare => "propertyId",
                            PendingKind::MeterShare => "meterId",
                        };
                        let Some(request_id) = t.data.get(id_field).and_then(Value::as_i64) else {
                            continue;
                        };
                        let account_id = t.data.get("accountId").and_then(Value::as_i64);
                        if customer.is_some() && customer != account_id {
                            continue;
                        }
                        out.push(PendingItem {
                            kind: k,
                            request_id,
                            account_id,
                            request: t.data,
                        });
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(items)
    }

    /// The PM client of an account, for read-only calls (customer list, customer).
    pub fn client(&self, account: &str) -> Result<PmClient, CommandError> {
        Ok(self.slot(account)?.account.client.clone())
    }

    /// PM's `GET /customer/{id}` as `account`, and the answer refreshes the journal's customer
    /// cache that share events are enriched from: asking for a customer is how an operator or
    /// a service refreshes it on demand. A cache that cannot be written only logs.
    pub async fn customer(
        &self,
        account: &str,
        customer_id: i64,
    ) -> Result<espm_model::Customer, CommandError> {
        let slot = self.slot(account)?;
        let customer = slot.account.client.customer(customer_id).await?;
        let cached = espm_journal::CachedCustomer {
            customer: espm_events::CustomerData::from_pm(&customer),
            fetched_at: std::time::SystemTime::now(),
        };
        let scope = slot.account.scope.clone();
        if let Err(e) = self
            .inner
            .journal
            .call(move |j| j.store_customers(&scope, &[(customer_id, cached)]))
            .await
        {
            tracing::warn!(account = %account, customer_id, error = %e, "refreshing the customer cache failed");
        }
        Ok(customer)
    }
}

fn door_label(origin: &str) -> &'static str {
    match origin {
        "api" => "api",
        "kafka" => "kafka",
        "nats" => "nats",
        "cli" => "cli",
        "policy" => "policy",
        _ => "other",
    }
}

/// Whether a property or meter is still shared with us: its custom fields are readable.
async fn shared(client: &PmClient, target: CustomFieldTarget) -> Result<Check, Problem> {
    match client.custom_fields(target).await {
        Ok(_) => Ok(Check::NeedsCall),
        Err(e) if e.is_access_denied() => Ok(Check::AlreadySo(None)),
        Err(e) => Err(Problem::from_client_error(&e)),
    }
}

/// The PM call of a command. PM's "already so" answers complete it as `nothing_to_do`.
async fn call_pm(client: &PmClient, command: &Command) -> Outcome {
    let done = |acct: Option<i64>| Ok((CommandOutcome::Done, acct));
    let already = |acct: Option<i64>| Ok((CommandOutcome::NothingToDo, acct));
    let acct = command.account_id();
    match command {
        Command::Answer {
            kind,
            request_id,
            decision,
            note,
        } => {
            let action = match decision {
                crate::Decision::Accept => espm_model::Action::Accept,
                crate::Decision::Reject => espm_model::Action::Reject,
            };
            match client
                .answer(*kind, *request_id, action, note.as_deref())
                .await
            {
                Ok(()) => done(acct),
                Err(e) if e.is_already_resolved() => already(acct),
                Err(e) => Err(Problem::from_client_error(&e)),
            }
        }
        Command::Disconnect {
            customer_id,
            keep_shares,
            note,
        } => match client
            .disconnect(*customer_id, *keep_shares, note.as_deref())
            .await
        {
            Ok(()) => done(acct),
            Err(e) if e.is_not_connected() => already(acct),
            Err(e) => Err(Problem::from_client_error(&e)),
        },
        Command::UnshareProperty { property_id, note } => {
            match client.unshare_property(*property_id, note.as_deref()).await {
                Ok(()) => done(acct),
                Err(e) if e.is_not_shared() => already(acct),
                Err(e) => Err(Problem::from_client_error(&e)),
            }
        }
        Command::UnshareMeter { meter_id, note } => {
            match client.unshare_meter(*meter_id, note.as_deref()).await {
                Ok(()) => done(acct),
                Err(e) if e.is_not_shared() => already(acct),
                Err(e) => Err(Problem::from_client_error(&e)),
            }
        }
        Command::CreateCustomer(body) => match client.create_customer(&body.to_pm()).await {
            Ok(id) => done(Some(id)),
            Err(e) => Err(Problem::from_client_error(&e)),
        },
    }
}
