//! The auto-accept policy of an account (`[accounts.policy]`): ordered rules over pending
//! requests and the decision webhook they may ask. Owned by `espm-policy`: extend here.

use std::path::PathBuf;
use std::time::Duration;

use espm_model::PendingKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::Problems;
use crate::{ConfigProblem, SecretSource};

/// The auto-accept policy of one account: after every walk of the pending lists, each pending
/// request goes through `rules` in order; the first rule that matches decides. A request no rule
/// matches stays pending. Every decision is sent to PM through the journalled command path
/// (idempotent: a request is answered once, across restarts) and announced as a
/// `gov.energystar.pm.policy.decided` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Decide, log and emit `policy.decided` events, but send nothing to PM.
    #[serde(default)]
    pub dry_run: bool,
    /// Where rules with `decision = "ask"` send the request. Required when a rule asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<DecisionWebhookConfig>,
    /// The rules, in order: the first that matches a request decides it.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// The decision webhook: a `POST` of the pending request (JSON), signed per Standard Webhooks
/// like the webhook sink (`webhook-id`, `webhook-timestamp`, `webhook-signature`). It answers
/// `2xx` with `{"decision": "accept" | "reject" | "defer", "note": "..."}`. A timeout, an error
/// status or an answer that does not read as that defers: the request stays pending and is
/// asked again after the next walk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionWebhookConfig {
    /// The endpoint, `http` or `https`.
    pub url: String,
    /// File holding the signing secret(s), `whsec_<base64>`, one per line (several during a
    /// rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Name of an environment variable holding the signing secret(s), separated by spaces or
    /// commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// How long one request may take before it counts as `defer`.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::DurationString")]
    pub timeout: Duration,
}

impl DecisionWebhookConfig {
    /// Where the signing secret comes from; `None` when neither is set.
    pub fn secret_source(&self) -> Option<SecretSource> {
        SecretSource::from_options(self.secret_file.as_ref(), self.secret_env.as_ref())
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyDecision {
    /// Accept the request.
    Accept,
    /// Reject the request, with the rule's `note` for the customer.
    Reject,
    /// Ask the decision webhook (`policy.webhook`).
    Ask,
}

/// One rule. Every condition given must hold (an absent condition always holds); a rule without
/// conditions matches every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// A name for logs, metrics and the `policy.decided` event (the rule's position is always
    /// recorded too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pending lists it applies to: `connection`, `property_share`, `meter_share`. Empty:
    /// all three.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<PendingKind>,
    /// The requesting customer's PM username is one of these (case-insensitive). For shares, the
    /// property data administrator's username as the pending list gives it. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requesters: Vec<String>,
    /// The share's access level is one of these (`Read`, `Read Write`; case-insensitive).
    /// Connection requests have no access level and never match a rule that sets this. Empty:
    /// any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_levels: Vec<String>,
    /// Conditions on the custom fields the customer filled in; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldCondition>,
    /// `accept`, `reject` or `ask`.
    pub decision: PolicyDecision,
    /// Note sent to the customer with the answer, at most 1,000 characters (PM's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A condition on one custom field. Values are compared after trimming surrounding whitespace.
/// Give at most one of `equals`, `regex` and `in_file`; with none of them the field only has to
/// be present (non-empty). `present = false` instead requires it to be absent or empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldCondition {
    /// The custom field's name as the customer sees it, e.g. `Customer Number`.
    pub name: String,
    /// `true` (the default): the field must have a non-empty value; `false`: it must not.
    #[serde(default = "default_present")]
    pub present: bool,
    /// The value equals this exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The value matches this regular expression (Rust `regex` syntax; anchor it with `^…$` to
    /// match the whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The value is one of the lines of this file (trimmed; blank lines and `#` comments
    /// skipped). The file is read again whenever it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_file: Option<PathBuf>,
}

fn default_present() -> bool {
    true
}

impl PolicyConfig {
    /// Every problem of this policy, with key paths under `path` (`accounts[0].policy`): rules
    /// that ask without a webhook, regexes that do not compile, lookup files that cannot be read,
    /// notes over PM's limit. `check-config` and the policy's constructor both call this.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut v = Problems::default();
        if let Some(w) = &self.webhook {
            let p = format!("{path}.webhook");
            v.http_url(format!("{p}.url"), &w.url);
            v.one_source(
                &p,
                &[
                    ("secret_file", w.secret_file.is_some()),
                    ("secret_env", w.secret_env.is_some()),
                ],
                true,
            );
            v.duration(format!("{p}.timeout"), w.timeout);
        }
        for (i, r) in self.rules.iter().enumerate() {
            let p = format!("{path}.rules[{i}]");
            if r.decision == PolicyDecision::Ask && self.webhook.is_none() {
                v.push(
                    format!("{p}.decision"),
                    format!("`ask` needs a decision webhook: add [{path}.webhook] with a url"),
                );
            }
            if let Some(note) = &r.note {
                let n = note.chars().count();
                if n > espm_model::NOTE_MAX_CHARS {
                    v.push(
                        format!("{p}.note"),
                        format!(
                            "has {n} characters; PM accepts at most {}",
                            espm_model::NOTE_MAX_CHARS
                        ),
                    );
                } else if note.trim().is_empty() {
                    v.push(format!("{p}.note"), "must not be blank (omit it instead)");
                }
                if r.decision == PolicyDecision::Ask {
                    v.push(
                        format!("{p}.note"),
                        "an `ask` rule has no note: the decision webhook's answer carries it",
                    );
                }
            }
            for (j, f) in r.fields.iter().enumerate() {
                check_field(&mut v, &format!("{p}.fields[{j}]"), f);
            }
        }
        v.0
    }
}

fn check_field(v: &mut Problems, p: &str, f: &FieldCondition) {
    if f.name.trim().is_empty() {
        v.push(format!("{p}.name"), "must name a custom field");
    }
    let set: Vec<&str> = [
        ("equals", f.equals.is_some()),
        ("regex", f.regex.is_some()),
        ("in_file", f.in_file.is_some()),
    ]
    .into_iter()
    .filter(|(_, s)| *s)
    .map(|(k, _)| k)
    .collect();
    if set.len() > 1 {
        v.push(
            format!("{p}.{}", set[1]),
            format!(
                "give only one of `equals`, `regex` and `in_file` (both {} given)",
                set.join(" and ")
            ),
        );
    }
    if !f.present && !set.is_empty() {
        v.push(
            format!("{p}.present"),
            format!("`present = false` cannot be combined with `{}`", set[0]),
        );
    }
    if let Some(re) = &f.regex {
        if let Err(e) = regex::Regex::new(re) {
            v.push(
                format!("{p}.regex"),
                format!("does not compile: {}", one_line(&e.to_string())),
            );
        }
    }
    if let Some(file) = &f.in_file {
        if let Err(e) = std::fs::read_to_string(file) {
            v.push(
                format!("{p}.in_file"),
                format!("cannot read {}: {e}", file.display()),
            );
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
