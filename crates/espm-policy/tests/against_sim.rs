//! The policy against the embedded simulator, a real journal and the real command path: requests
//! end accepted, rejected or pending as the rules say, each answered by one PM call however
//! often the policy runs (and after a "restart": a new policy over the same journal); PM's
//! coupling is announced, never sent twice; a dry run calls nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use espm_client::{ClientConfig, PmClient, RetryPolicy};
use espm_command::{Account, Commander};
use espm_config::PolicyConfig;
use espm_events::{CloudEvent, Origin, PendingKind, POLICY_DECIDED};
use espm_journal::{Journal, Scope};
use espm_policy::{Policy, RunReport};
use espm_poller::{DrainMode, Poller, PollerConfig};
use espm_sim::control_api::{MeterShareRequest, PropertyShareRequest};
use espm_sim::{Access, CustomerSpec, SimServer};
use espm_testkit::sim::{fields, start_sim};
use espm_testkit::SimControl;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const USER: &str = "policy_provider";
const PASS: &str = "policy_password";

struct World {
    sim: SimServer,
    ctl: SimControl,
    journal: Journal,
    commander: Commander,
    poller: Poller,
    dir: tempfile::TempDir,
}

fn client(sim: &SimServer) -> PmClient {
    let mut cfg = ClientConfig::new(sim.base_url(), USER, PASS);
    cfg.retry = RetryPolicy::none();
    cfg.timeout = Duration::from_secs(10);
    PmClient::new(cfg).unwrap()
}

impl World {
    async fn new(seed: u64) -> World {
        let sim = start_sim(USER, PASS, seed).await;
        let ctl = SimControl::of(&sim);
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal.db")).unwrap();
        let client = client(&sim);
        let commander = Commander::new(
            journal.clone(),
            [Account {
                client: client.clone(),
                scope: Scope::new("sim", "main"),
                origin: Origin::new("sim", "main"),
            }],
        );
        let poller = Poller::new(
            client,
            journal.clone(),
            PollerConfig {
                scope: Scope::new("sim", "main"),
                drain_mode: DrainMode::Clear,
                poll_interval: Duration::from_millis(50),
                pending_interval: Duration::from_secs(60),
                max_error_backoff: Duration::from_secs(1),
                min_free: 0,
                spool: espm_journal::Spool::for_journal(journal.path(), None),
            },
            vec![],
        );
        World {
            sim,
            ctl,
            journal,
            commander,
            poller,
            dir,
        }
    }

    fn policy(&self, toml_text: &str) -> Policy {
        let cfg: PolicyConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"));
        Policy::new(
            "main",
            Origin::new("sim", "main"),
            &cfg,
            self.commander.clone(),
            self.journal.clone(),
        )
        .unwrap()
    }

    /// A walk of the pending lists, then one run of the policy.
    async fn walk_and_decide(&self, policy: &Policy) -> RunReport {
        self.poller.pending_once().await.unwrap();
        policy
            .decide_pending(&CancellationToken::new())
            .await
            .unwrap()
    }

    async fn customer(&self, username: &str) -> i64 {
        self.ctl
            .create_customer(&CustomerSpec {
                username: Some(username.into()),
                ..CustomerSpec::default()
            })
            .await
    }

    fn calls(&self, key: &str) -> u64 {
        self.sim.state().calls().get(key).copied().unwrap_or(0)
    }

    /// Every PM answer call made so far (`POST /connect/…`, `POST /share/…`).
    fn answer_calls(&self) -> BTreeMap<String, u64> {
        self.sim
            .state()
            .calls()
            .into_iter()
            .filter(|(k, _)| k.starts_with("POST /connect/") || k.starts_with("POST /share/"))
            .collect()
    }

    /// What is pending after a fresh walk: `(kind, id)`.
    async fn pending(&self) -> Vec<(PendingKind, i64)> {
        self.poller.pending_once().await.unwrap();
        let mut out: Vec<_> = self
            .commander
            .pending("main", None, None)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.kind, p.request_id))
            .collect();
        out.sort();
        out
    }

    fn decisions(&self) -> Vec<CloudEvent> {
        self.journal
            .read_outbox("test", 0, 10_000)
            .unwrap()
            .into_iter()
            .map(|r| std::sync::Arc::unwrap_or_clone(r.event))
            .filter(|e| e.ty == POLICY_DECIDED)
            .collect()
    }

    fn decision_of(&self, kind: PendingKind, id: i64) -> Vec<Value> {
        self.decisions()
            .into_iter()
            .filter(|e| e.data["kind"] == kind.as_str() && e.data["requestId"] == id)
            .map(|e| e.data.into_value())
            .collect()
    }
}

fn rules(lookup: &std::path::Path, dry_run: bool) -> String {
    format!(
        r#"
dry_run = {dry_run}

[[rules]]
name = "known customer number"
kinds = ["connection"]
decision = "accept"
[[rules.fields]]
name = "Customer Number"
in_file = {lookup:?}

[[rules]]
name = "no customer number"
kinds = ["connection"]
decision = "reject"
note = "Please fill in your customer number."
[[rules.fields]]
name = "Customer Number"
present = false

[[rules]]
name = "metered property"
kinds = ["property_share"]
access_levels = ["Read"]
decision = "accept"
[[rules.fields]]
name = "Customer Number"
regex = '^C-\d+$'
"#,
        lookup = lookup.display().to_string()
    )
}

#[tokio::test]
async fn requests_end_accepted_rejected_or_pending_once_each_across_a_restart() {
    let w = World::new(21).await;
    let lookup = w.dir.path().join("customers.txt");
    std::fs::write(&lookup, "# customer numbers\nC-1\nC-2\n").unwrap();
    let known = w.customer("known_co").await;
    let blank = w.customer("blank_co").await;
    let stranger = w.customer("stranger_co").await;
    w.ctl
        .request_connection(known, &[("Customer Number", "C-1")])
        .await;
    w.ctl.request_connection(blank, &[]).await;
    w.ctl
        .request_connection(stranger, &[("Customer Number", "C-9")])
        .await;

    let policy = w.policy(&rules(&lookup, false));
    let first = w.walk_and_decide(&policy).await;
    assert_eq!(first.decided.len(), 2, "{first:?}");
    assert_eq!(first.unmatched, 1, "{first:?}");
    // The walk after the answers, again and again, and a restarted policy: no second call.
    for _ in 0..2 {
        let again = w.walk_and_decide(&policy).await;
        assert!(again.decided.is_empty(), "{again:?}");
    }
    let restarted = w.policy(&rules(&lookup, false));
    assert!(w.walk_and_decide(&restarted).await.decided.is_empty());

    assert_eq!(w.calls(&format!("POST /connect/account/{known}")), 1);
    assert_eq!(w.calls(&format!("POST /connect/account/{blank}")), 1);
    assert_eq!(w.calls(&format!("POST /connect/account/{stranger}")), 0);
    assert_eq!(
        w.pending().await,
        vec![(PendingKind::Connection, stranger)],
        "only the unmatched request stays pending"
    );
    // The customer list says who was accepted.
    let customers: Vec<i64> = client(&w.sim)
        .customers()
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert!(customers.contains(&known) && !customers.contains(&blank));

    // Each decision announced once, naming its rule; the rejection carries its note.
    let k = w.decision_of(PendingKind::Connection, known);
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0]["decision"], "accept");
    assert_eq!(k[0]["decidedBy"]["source"], "rule");
    assert_eq!(k[0]["decidedBy"]["ruleIndex"], 0);
    assert_eq!(k[0]["decidedBy"]["ruleName"], "known customer number");
    assert_eq!(k[0]["dryRun"], false);
    let b = w.decision_of(PendingKind::Connection, blank);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["decision"], "reject");
    assert_eq!(b[0]["note"], "Please fill in your customer number.");
    assert!(w.decision_of(PendingKind::Connection, stranger).is_empty());

    // The command result names the decision's command id as its causation and the rule as
    // the requester.
    let command_id = k[0]["commandId"].as_str().unwrap().to_string();
    assert!(command_id.starts_with(&format!("policy:main:connection:{known}:")));
    let results: Vec<CloudEvent> = w
        .journal
        .read_outbox("test", 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|r| std::sync::Arc::unwrap_or_clone(r.event))
        .filter(|e| e.causationid.as_deref() == Some(command_id.as_str()))
        .collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].ty, espm_events::COMMAND_COMPLETED);
    assert_eq!(results[0].data["origin"], "policy");
    assert_eq!(
        results[0].data["requester"],
        "policy rules[0] (known customer number)"
    );

    // The lookup file changes: the next walk accepts the stranger.
    std::fs::write(&lookup, "C-1\nC-2\nC-9\n").unwrap();
    let later = w.walk_and_decide(&restarted).await;
    assert_eq!(later.decided.len(), 1, "{later:?}");
    assert_eq!(w.calls(&format!("POST /connect/account/{stranger}")), 1);

    // A connected customer's property shares: the regex and the access level decide.
    let good = w
        .ctl
        .share_property(&PropertyShareRequest {
            custom_fields: fields(&[("Customer Number", "C-77")]),
            ..PropertyShareRequest::new(known, Access::Read)
        })
        .await;
    let wrong_level = w
        .ctl
        .share_property(&PropertyShareRequest {
            custom_fields: fields(&[("Customer Number", "C-78")]),
            ..PropertyShareRequest::new(known, Access::ReadWrite)
        })
        .await;
    let bad = w
        .ctl
        .share_property(&PropertyShareRequest {
            custom_fields: fields(&[("Customer Number", "no number")]),
            ..PropertyShareRequest::new(known, Access::Read)
        })
        .await;
    for _ in 0..2 {
        w.walk_and_decide(&restarted).await;
    }
    assert_eq!(w.calls(&format!("POST /share/property/{good}")), 1);
    assert_eq!(w.calls(&format!("POST /share/property/{wrong_level}")), 0);
    assert_eq!(w.calls(&format!("POST /share/property/{bad}")), 0);
    assert_eq!(
        w.pending().await,
        vec![
            (PendingKind::PropertyShare, wrong_level.min(bad)),
            (PendingKind::PropertyShare, wrong_level.max(bad)),
        ]
    );
    w.sim.shutdown().await;
}

#[tokio::test]
async fn pm_coupling_is_announced_as_implied_and_never_sent_twice() {
    let w = World::new(22).await;
    // An unconnected owner shares a property and a meter on it: three pending requests (the
    // connection comes along). Accepting the meter share accepts the other two in PM.
    let metered = w.customer("metered_co").await;
    let property = w
        .ctl
        .share_property(&PropertyShareRequest::new(metered, Access::Read))
        .await;
    let meter = w
        .ctl
        .share_meter(&MeterShareRequest {
            property_id: Some(property),
            custom_fields: fields(&[("Meter Number", "M-1")]),
            ..MeterShareRequest::new(metered, Access::Read)
        })
        .await
        .meter_id;
    // Another owner's connection is rejected: its pending share goes with it.
    let refused = w.customer("refused_co").await;
    let refused_property = w
        .ctl
        .share_property(&PropertyShareRequest::new(refused, Access::Read))
        .await;
    assert_eq!(w.pending().await.len(), 5);

    let toml_text = r#"
[[rules]]
name = "metered"
kinds = ["meter_share"]
decision = "accept"
[[rules.fields]]
name = "Meter Number"

[[rules]]
name = "refused"
kinds = ["connection"]
requesters = ["REFUSED_CO"]
decision = "reject"
note = "Not a customer of ours."

[[rules]]
name = "properties too"
kinds = ["property_share"]
decision = "accept"
"#;
    let policy = w.policy(toml_text);
    let report = w.walk_and_decide(&policy).await;
    assert_eq!(report.decided.len(), 5, "{report:?}");
    for _ in 0..2 {
        assert!(w.walk_and_decide(&policy).await.decided.is_empty());
    }

    // One PM call for each decision that was not implied.
    let calls = w.answer_calls();
    assert_eq!(
        calls,
        BTreeMap::from([
            (format!("POST /share/meter/{meter}"), 1),
            (format!("POST /connect/account/{refused}"), 1),
        ]),
        "implied answers must not be sent"
    );
    assert!(
        w.pending().await.is_empty(),
        "PM's coupling resolved the rest"
    );

    let implied = |kind: PendingKind, id: i64| {
        let d = w.decision_of(kind, id);
        assert_eq!(d.len(), 1, "{kind:?} {id}: {d:?}");
        d[0].clone()
    };
    let p = implied(PendingKind::PropertyShare, property);
    assert_eq!(p["decision"], "accept");
    assert_eq!(p["decidedBy"]["source"], "implied");
    assert_eq!(p["impliedBy"]["kind"], "meter_share");
    assert_eq!(p["impliedBy"]["requestId"], meter);
    // Its own rule (index 2) agreed, and is named too.
    assert_eq!(p["decidedBy"]["ruleIndex"], 2);
    let c = implied(PendingKind::Connection, metered);
    assert_eq!(c["decision"], "accept");
    assert_eq!(c["impliedBy"]["requestId"], meter);
    let r = implied(PendingKind::PropertyShare, refused_property);
    assert_eq!(r["decision"], "reject");
    assert_eq!(r["impliedBy"]["kind"], "connection");
    assert_eq!(r["impliedBy"]["requestId"], refused);
    let m = implied(PendingKind::MeterShare, meter);
    assert_eq!(m["decidedBy"]["source"], "rule");
    assert!(m.get("impliedBy").is_none());
    w.sim.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_decides_and_announces_but_calls_nothing() {
    let w = World::new(23).await;
    let lookup = w.dir.path().join("customers.txt");
    std::fs::write(&lookup, "C-1\n").unwrap();
    let known = w.customer("dry_known").await;
    let blank = w.customer("dry_blank").await;
    w.ctl
        .request_connection(known, &[("Customer Number", "C-1")])
        .await;
    w.ctl.request_connection(blank, &[]).await;
    let policy = w.policy(&rules(&lookup, true));
    let first = w.walk_and_decide(&policy).await;
    assert_eq!(first.decided.len(), 2, "{first:?}");
    assert!(first.decided.iter().all(|d| d.state.is_none()));
    for _ in 0..2 {
        assert!(w.walk_and_decide(&policy).await.decided.is_empty());
    }
    // Restarted: decided again in memory, but the events are the same ones.
    let restarted = w.policy(&rules(&lookup, true));
    w.walk_and_decide(&restarted).await;

    assert!(w.answer_calls().is_empty(), "{:?}", w.answer_calls());
    assert_eq!(w.pending().await.len(), 2);
    let k = w.decision_of(PendingKind::Connection, known);
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0]["dryRun"], true);
    assert_eq!(k[0]["decision"], "accept");
    let b = w.decision_of(PendingKind::Connection, blank);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["decision"], "reject");
    // No command was journalled.
    let id = k[0]["commandId"].as_str().unwrap();
    assert!(w.commander.command(id).await.unwrap().is_none());
    w.sim.shutdown().await;
}

#[tokio::test]
async fn check_config_problems_are_keyed_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: PolicyConfig = toml::from_str(&format!(
        r#"
[[rules]]
decision = "ask"

[[rules]]
decision = "reject"
note = "{long}"
[[rules.fields]]
name = "Customer Number"
regex = "(unclosed"
[[rules.fields]]
name = "Meter Number"
in_file = {missing:?}
[[rules.fields]]
name = "Other"
equals = "x"
regex = "y"
"#,
        long = "n".repeat(1001),
        missing = dir.path().join("missing.txt").display().to_string()
    ))
    .unwrap();
    let paths: Vec<String> = cfg
        .validate("accounts[0].policy")
        .into_iter()
        .map(|p| p.path)
        .collect();
    for want in [
        "accounts[0].policy.rules[0].decision",
        "accounts[0].policy.rules[1].note",
        "accounts[0].policy.rules[1].fields[0].regex",
        "accounts[0].policy.rules[1].fields[1].in_file",
        "accounts[0].policy.rules[1].fields[2].regex",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} missing: {paths:?}");
    }
    // The constructor refuses the same configuration.
    let w_journal = Journal::open(&dir.path().join("j.db")).unwrap();
    let commander = Commander::new(w_journal.clone(), []);
    let err = Policy::new(
        "main",
        Origin::new("sim", "main"),
        &cfg,
        commander,
        w_journal,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rules[1].fields[0].regex"), "{err}");
}
