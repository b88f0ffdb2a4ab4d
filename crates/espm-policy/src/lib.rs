//! The auto-accept policy of one provider account: after every walk of PM's pending lists, each
//! pending request goes through the configured rules in order and the first that matches
//! decides `accept`, `reject` or `ask` (the decision webhook answers `accept`, `reject` or
//! `defer`). No match, or a deferral, leaves the request pending for the next walk.
//!
//! The invariants this crate guards:
//! 1. **Once.** Every answer goes through the journalled command path ([`Commander`]) under a
//!    deterministic id, `policy:{account}:{kind}:{requestId}:{digest}` (the digest names this
//!    request, so a request made again later is decided again). A request whose command already
//!    finished is neither asked about nor answered again, by the next walk or after a restart.
//! 2. **Recorded.** Every decision is journalled as a `gov.energystar.pm.policy.decided` event
//!    (once per command id) naming the rule or the webhook that decided; the command's own
//!    `command.completed` event carries the command id as `causationid`.
//! 3. **PM's coupling.** Accepting a meter share accepts its property share; accepting a share
//!    accepts its owner's pending connection; rejecting a connection rejects that owner's pending
//!    shares. Such an answer is *implied*: it is announced (with `impliedBy`) but never sent as a
//!    PM call of its own. Decisions are taken in the order that lets the coupling work:
//!    connection rejections, then meter shares, property shares and the other connections.
//! 4. **Dry run** decides and announces, and calls nothing in PM.

#![deny(missing_docs)]

mod rules;
mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use espm_command::{Command, CommandError, Commander, Decision, Door, Submission};
use espm_config::{ConfigProblem, PolicyConfig};
use espm_events::{
    policy_event, Origin, PendingKind, PolicyAnswer, PolicyDecidedBy, PolicyDecidedData,
    PolicyImpliedBy, PolicySource,
};
use espm_journal::{Journal, JournalError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use rules::{first_match, parse_lookup, LookupFile, Request, Rule, RuleDecision};
pub use webhook::{read_answer, Answer, DecisionWebhook, Question};

/// Why a policy cannot be built or run.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The configuration has problems (the same `check-config` reports).
    #[error("invalid policy: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigProblem>),
    /// One part of the configuration cannot be used (a lookup file unreadable, a secret bad).
    #[error("{path}: {message}")]
    Config {
        /// Key path under the policy, e.g. `rules[0].fields[1]`.
        path: String,
        /// What is wrong (never a secret).
        message: String,
    },
    /// The command path refused (journal unavailable, unknown account).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

/// One decision a run of the policy took (or found already taken by an earlier run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The request's list.
    pub kind: PendingKind,
    /// The request's id.
    pub request_id: i64,
    /// Accept or reject.
    pub answer: PolicyAnswer,
    /// Rule, webhook or implied.
    pub source: PolicySource,
    /// The command id.
    pub command_id: String,
    /// The command's state after this run (`completed`, `failed`, `pending`); `None` for a dry
    /// run or an implied answer.
    pub state: Option<String>,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Decisions taken in this run (not those an earlier run took).
    pub decided: Vec<Decided>,
    /// Requests the webhook deferred (asked again after the next walk).
    pub deferred: usize,
    /// Requests no rule matched (left pending).
    pub unmatched: usize,
}

/// One account's policy.
pub struct Policy {
    account: String,
    origin: Origin,
    rules: Vec<Rule>,
    webhook: Option<DecisionWebhook>,
    dry_run: bool,
    commander: Commander,
    journal: Journal,
    wakes: Vec<Arc<Notify>>,
    /// Dry run: command ids already decided by this process, and how (nothing is journalled as
    /// a command, so the webhook is not asked again while the process lives).
    dry_decided: Mutex<HashMap<String, PolicyAnswer>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("account", &self.account)
            .field("rules", &self.rules.len())
            .field("webhook", &self.webhook.is_some())
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Where an evaluated request stands before it is decided.
struct Eval {
    req: Request,
    data: Value,
    rule: Option<usize>,
    command_id: String,
}

impl Policy {
    /// The policy of `account` (a name the commander knows), journalling its decision events in
    /// `journal`. Validates `cfg` as `check-config` does, compiles the rules and reads the lookup
    /// files and the webhook's secret.
    pub fn new(
        account: &str,
        origin: Origin,
        cfg: &PolicyConfig,
        commander: Commander,
        journal: Journal,
    ) -> Result<Self, PolicyError> {
        let problems = cfg.validate("policy");
        if !problems.is_empty() {
            return Err(PolicyError::Invalid(problems));
        }
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let webhook = cfg.webhook.as_ref().map(DecisionWebhook::new).transpose()?;
        Ok(Self {
            account: account.to_string(),
            origin,
            rules,
            webhook,
            dry_run: cfg.dry_run,
            commander,
            journal,
            wakes: Vec::new(),
            dry_decided: Mutex::new(HashMap::new()),
        })
    }

    /// Wake these (the sink drivers) when a decision event is journalled.
    pub fn with_wakes(mut self, wakes: Vec<Arc<Notify>>) -> Self {
        self.wakes = wakes;
        self
    }

    /// Run after every pending walk (`walked`, see `Poller::with_pending_walk_notify`) until
    /// `stop`. A run stops between two requests; a command already begun finishes.
    pub async fn run(self, walked: Arc<Notify>, stop: CancellationToken) {
        tracing::info!(account = %self.account, rules = self.rules.len(), dry_run = self.dry_run, "policy started");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = walked.notified() => {}
            }
            match self.decide_pending(&stop).await {
                Ok(r) => {
                    metrics::gauge!("espm_policy_unmatched_requests", "account" => self.account.clone())
                        .set(r.unmatched as f64);
                    tracing::debug!(account = %self.account, decided = r.decided.len(), deferred = r.deferred, unmatched = r.unmatched, "policy run finished");
                }
                Err(e) => {
                    tracing::warn!(account = %self.account, error = %e, "policy run failed; tried again after the next walk")
                }
            }
        }
        tracing::info!(account = %self.account, "policy stopped");
    }

    /// Decide every pending request of the journal's latest walk once.
    pub async fn decide_pending(&self, stop: &CancellationToken) -> Result<RunReport, PolicyError> {
        let items = self.commander.pending(&self.account, None, None).await?;
        let mut evals: Vec<Eval> = items
            .into_iter()
            .filter_map(|it| {
                let req = Request::from_data(it.kind, &it.request)?;
                let rule = first_match(&self.rules, &req).map(|r| r.index);
                let command_id = command_id(&self.account, &req, &it.request);
                Some(Eval {
                    req,
                    data: it.request,
                    rule,
                    command_id,
                })
            })
            .collect();
        evals.sort_by_key(|e| (self.phase(e), e.req.request_id));

        let mut report = RunReport::default();
        let mut implied: HashMap<(PendingKind, i64), (PolicyAnswer, PolicyImpliedBy)> =
            HashMap::new();
        let pending: HashMap<(PendingKind, i64), Option<i64>> = evals
            .iter()
            .map(|e| ((e.req.kind, e.req.request_id), e.req.account_id))
            .collect();
        for e in &evals {
            if stop.is_cancelled() {
                break;
            }
            let key = (e.req.kind, e.req.request_id);
            if let Some((answer, by)) = implied.get(&key) {
                self.record_implied(e, *answer, by, &mut report).await?;
                continue;
            }
            let Some(index) = e.rule else {
                report.unmatched += 1;
                continue;
            };
            let rule = &self.rules[index];
            // Decided before (an earlier walk, an earlier process): never again.
            if let Some(answer) = self.already_decided(&e.command_id).await? {
                if let Some(answer) = answer {
                    couple(&mut implied, &pending, e, answer);
                }
                continue;
            }
            let (answer, note, source) = match &rule.decision {
                RuleDecision::Accept(n) => (PolicyAnswer::Accept, n.clone(), PolicySource::Rule),
                RuleDecision::Reject(n) => (PolicyAnswer::Reject, n.clone(), PolicySource::Rule),
                RuleDecision::Ask => match self.ask(e, rule).await {
                    Answer::Accept(n) => (PolicyAnswer::Accept, n, PolicySource::Webhook),
                    Answer::Reject(n) => (PolicyAnswer::Reject, n, PolicySource::Webhook),
                    Answer::Defer(why) => {
                        report.deferred += 1;
                        metrics::counter!("espm_policy_decisions_total", "account" => self.account.clone(), "decision" => "defer", "source" => "webhook").increment(1);
                        tracing::info!(account = %self.account, kind = e.req.kind.as_str(), request = e.req.request_id, rule = %rule.label(), reason = %why, "policy: decision deferred; asked again after the next walk");
                        continue;
                    }
                },
            };
            let data = PolicyDecidedData {
                kind: e.req.kind,
                request_id: e.req.request_id,
                account_id: e.req.account_id,
                decision: answer,
                note: note.clone(),
                decided_by: PolicyDecidedBy {
                    source,
                    rule_index: u32::try_from(index).ok(),
                    rule_name: rule.name.clone(),
                },
                implied_by: None,
                command_id: e.command_id.clone(),
                dry_run: self.dry_run,
                decided_at: now(),
            };
            self.announce(&data).await?;
            let requester = match source {
                PolicySource::Webhook => format!("policy webhook via {}", rule.label()),
                _ => format!("policy {}", rule.label()),
            };
            tracing::info!(account = %self.account, kind = e.req.kind.as_str(), request = e.req.request_id, decision = answer.as_str(), by = %requester, command = %e.command_id, dry_run = self.dry_run, "policy decision");
            let state = if self.dry_run {
                self.lock_dry().insert(e.command_id.clone(), answer);
                couple(&mut implied, &pending, e, answer);
                None
            } else {
                let view = self.submit(e, answer, note, requester).await?;
                if view.state == "completed" {
                    couple(&mut implied, &pending, e, answer);
                }
                Some(view.state)
            };
            report.decided.push(Decided {
                kind: e.req.kind,
                request_id: e.req.request_id,
                answer,
                source,
                command_id: e.command_id.clone(),
                state,
            });
        }
        Ok(report)
    }

    /// Connection rejections first (they imply the owner's shares), then connections the
    /// webhook decides, meter shares (they imply their property share), property shares, and
    /// last the other connections (a share's acceptance implies them).
    fn phase(&self, e: &Eval) -> u8 {
        let decision = e.rule.map(|i| &self.rules[i].decision);
        match (e.req.kind, decision) {
            (PendingKind::Connection, Some(RuleDecision::Reject(_))) => 0,
            (PendingKind::Connection, Some(RuleDecision::Ask)) => 1,
            (PendingKind::MeterShare, _) => 2,
            (PendingKind::PropertyShare, _) => 3,
            (PendingKind::Connection, _) => 4,
        }
    }

    fn lock_dry(&self) -> std::sync::MutexGuard<'_, HashMap<String, PolicyAnswer>> {
        self.dry_decided.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(answer)` when the command id already finished (`Some(None)` when it did not
    /// complete, e.g. PM refused it for good); `None` when it still has to be decided.
    async fn already_decided(&self, id: &str) -> Result<Option<Option<PolicyAnswer>>, PolicyError> {
        if self.dry_run {
            return Ok(self.lock_dry().get(id).map(|a| Some(*a)));
        }
        let Some(view) = self.commander.command(id).await? else {
            return Ok(None);
        };
        if !view.is_final() {
            return Ok(None);
        }
        let answer = match view.target.get("decision").and_then(Value::as_str) {
            Some("accept") if view.state == "completed" => Some(PolicyAnswer::Accept),
            Some("reject") if view.state == "completed" => Some(PolicyAnswer::Reject),
            _ => None,
        };
        Ok(Some(answer))
    }

    async fn ask(&self, e: &Eval, rule: &Rule) -> Answer {
        let Some(webhook) = &self.webhook else {
            return Answer::Defer("no decision webhook is configured".into());
        };
        let answer = webhook
            .ask(&Question {
                account: &self.account,
                kind: e.req.kind.as_str(),
                request_id: e.req.request_id,
                account_id: e.req.account_id,
                command_id: &e.command_id,
                rule: rule.label(),
                request: &e.data,
            })
            .await;
        let label = match &answer {
            Answer::Accept(_) => "accept",
            Answer::Reject(_) => "reject",
            Answer::Defer(_) => "defer",
        };
        metrics::counter!("espm_policy_webhook_requests_total", "account" => self.account.clone(), "answer" => label).increment(1);
        answer
    }

    async fn submit(
        &self,
        e: &Eval,
        answer: PolicyAnswer,
        note: Option<String>,
        requester: String,
    ) -> Result<espm_command::CommandView, PolicyError> {
        let kind = e.req.kind;
        let view = self
            .commander
            .submit(Submission {
                id: Some(e.command_id.clone()),
                account: self.account.clone(),
                command: Command::Answer {
                    kind,
                    request_id: e.req.request_id,
                    decision: match answer {
                        PolicyAnswer::Accept => Decision::Accept,
                        PolicyAnswer::Reject => Decision::Reject,
                    },
                    note,
                },
                requester: Some(requester),
                door: Door::Policy,
            })
            .await?;
        Ok(view)
    }

    /// Journal a decision event (once per command id) and wake the sinks. True when new.
    async fn announce(&self, data: &PolicyDecidedData) -> Result<bool, PolicyError> {
        let event = policy_event(&self.origin, data);
        let added = self.journal.call(move |j| j.enqueue(&[event])).await?;
        if added > 0 {
            for w in &self.wakes {
                w.notify_one();
            }
            metrics::counter!(
                "espm_policy_decisions_total",
                "account" => self.account.clone(),
                "decision" => data.decision.as_str(),
                "source" => data.decided_by.source.as_str()
            )
            .increment(1);
        }
        Ok(added > 0)
    }

    async fn record_implied(
        &self,
        e: &Eval,
        answer: PolicyAnswer,
        by: &PolicyImpliedBy,
        report: &mut RunReport,
    ) -> Result<(), PolicyError> {
        let own = e.rule.map(|i| &self.rules[i]);
        let data = PolicyDecidedData {
            kind: e.req.kind,
            request_id: e.req.request_id,
            account_id: e.req.account_id,
            decision: answer,
            note: None,
            decided_by: PolicyDecidedBy {
                source: PolicySource::Implied,
                rule_index: own.and_then(|r| u32::try_from(r.index).ok()),
                rule_name: own.and_then(|r| r.name.clone()),
            },
            implied_by: Some(by.clone()),
            command_id: e.command_id.clone(),
            dry_run: self.dry_run,
            decided_at: now(),
        };
        if self.announce(&data).await? {
            let conflict = match own.map(|r| &r.decision) {
                Some(RuleDecision::Accept(_)) => answer != PolicyAnswer::Accept,
                Some(RuleDecision::Reject(_)) => answer != PolicyAnswer::Reject,
                _ => false,
            };
            if conflict {
                tracing::warn!(account = %self.account, kind = e.req.kind.as_str(), request = e.req.request_id, decision = answer.as_str(), implied_by = %by.command_id, "policy: PM answers this request along with another answer, against its own rule");
            } else {
                tracing::info!(account = %self.account, kind = e.req.kind.as_str(), request = e.req.request_id, decision = answer.as_str(), implied_by = %by.command_id, "policy decision implied by another answer; no PM call of its own");
            }
            report.decided.push(Decided {
                kind: e.req.kind,
                request_id: e.req.request_id,
                answer,
                source: PolicySource::Implied,
                command_id: e.command_id.clone(),
                state: None,
            });
        }
        Ok(())
    }
}

/// Mark what PM answers along with `answer` to `e`, among the requests still pending.
fn couple(
    implied: &mut HashMap<(PendingKind, i64), (PolicyAnswer, PolicyImpliedBy)>,
    pending: &HashMap<(PendingKind, i64), Option<i64>>,
    e: &Eval,
    answer: PolicyAnswer,
) {
    let by = PolicyImpliedBy {
        kind: e.req.kind,
        request_id: e.req.request_id,
        command_id: e.command_id.clone(),
    };
    let mut mark = |key: (PendingKind, i64), a: PolicyAnswer| {
        if pending.contains_key(&key) {
            implied.entry(key).or_insert_with(|| (a, by.clone()));
        }
    };
    match (e.req.kind, answer) {
        (PendingKind::Connection, PolicyAnswer::Reject) => {
            if let Some(owner) = e.req.account_id {
                let shares: Vec<(PendingKind, i64)> = pending
                    .iter()
                    .filter(|((kind, _), account)| {
                        *kind != PendingKind::Connection && **account == Some(owner)
                    })
                    .map(|(key, _)| *key)
                    .collect();
                for key in shares {
                    mark(key, PolicyAnswer::Reject);
                }
            }
        }
        (PendingKind::MeterShare, PolicyAnswer::Accept) => {
            if let Some(p) = e.req.property_id {
                mark((PendingKind::PropertyShare, p), PolicyAnswer::Accept);
            }
            if let Some(owner) = e.req.account_id {
                mark((PendingKind::Connection, owner), PolicyAnswer::Accept);
            }
        }
        (PendingKind::PropertyShare, PolicyAnswer::Accept) => {
            if let Some(owner) = e.req.account_id {
                mark((PendingKind::Connection, owner), PolicyAnswer::Accept);
            }
        }
        _ => {}
    }
}

/// `policy:{account}:{kind}:{requestId}:{digest}`: the digest (12 hex digits of SHA-256) covers
/// what tells this request from an earlier one with the same id (its audit: who sent it, when),
/// so a request withdrawn and made again is decided again, while the same request is decided
/// once.
pub fn command_id(account: &str, req: &Request, data: &Value) -> String {
    let audit = data
        .get("connectionAudit")
        .or_else(|| data.get("shareAudit"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut h = Sha256::new();
    h.update(req.kind.as_str().as_bytes());
    h.update(b"\0");
    h.update(req.request_id.to_string().as_bytes());
    h.update(b"\0");
    h.update(req.account_id.unwrap_or(0).to_string().as_bytes());
    h.update(b"\0");
    h.update(audit.to_string().as_bytes());
    let digest: String = h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "policy:{account}:{}:{}:{digest}",
        req.kind.as_str(),
        req.request_id
    )
}

fn now() -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
