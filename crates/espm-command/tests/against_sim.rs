//! The commander against the real simulator and a real journal: one PM call per command id,
//! "already so" is success, PM's refusals keep their meaning, and a command interrupted after its
//! PM call is reconciled at start-up without a second call.

use std::time::Duration;

use espm_client::{ClientConfig, PmClient, RetryPolicy};
use espm_command::{
    Account, Command, CommandError, Commander, Decision, Door, PendingKind, ProblemKind, Submission,
};
use espm_events::Origin;
use espm_journal::{Journal, NewCommand, Scope};
use espm_sim::SimServer;
use espm_testkit::sim::start_sim;
use espm_testkit::SimControl;

const USER: &str = "sim_provider";
const PASS: &str = "sim_password";

struct World {
    sim: SimServer,
    ctl: SimControl,
    journal: Journal,
    commander: Commander,
    _dir: tempfile::TempDir,
}

fn client(sim: &SimServer) -> PmClient {
    let mut cfg = ClientConfig::new(sim.base_url(), USER, PASS);
    cfg.retry = RetryPolicy::none();
    cfg.timeout = Duration::from_secs(10);
    PmClient::new(cfg).unwrap()
}

impl World {
    async fn new() -> World {
        let sim = start_sim(USER, PASS, 11).await;
        let ctl = SimControl::of(&sim);
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal.db")).unwrap();
        let commander = Commander::new(journal.clone(), [account(&sim)]);
        World {
            sim,
            ctl,
            journal,
            commander,
            _dir: dir,
        }
    }

    fn calls(&self, key: &str) -> u64 {
        self.sim.state().calls().get(key).copied().unwrap_or(0)
    }

    async fn submit(
        &self,
        id: &str,
        command: Command,
    ) -> Result<espm_command::CommandView, CommandError> {
        self.commander
            .submit(Submission {
                id: Some(id.into()),
                account: "main".into(),
                command,
                requester: Some("billing-service".into()),
                door: Door::Api,
            })
            .await
    }

    fn events(&self) -> Vec<espm_events::CloudEvent> {
        self.journal
            .read_outbox("test", 0, 1000)
            .unwrap()
            .into_iter()
            .map(|r| std::sync::Arc::unwrap_or_clone(r.event))
            .collect()
    }
}

fn account(sim: &SimServer) -> Account {
    Account {
        client: client(sim),
        scope: Scope::new("sim", "main"),
        origin: Origin::new("sim", "main"),
    }
}

fn accept(id: i64) -> Command {
    Command::Answer {
        kind: PendingKind::Connection,
        request_id: id,
        decision: Decision::Accept,
        note: Some("welcome".into()),
    }
}

#[tokio::test]
async fn the_same_answer_sent_three_times_calls_pm_once() {
    let w = World::new().await;
    let customer = w.ctl.customer().await;
    w.ctl
        .request_connection(customer, &[("Customer Number", "C-1")])
        .await;
    let path = format!("POST /connect/account/{customer}");

    let mut views = Vec::new();
    for _ in 0..3 {
        views.push(w.submit("answer-1", accept(customer)).await.unwrap());
    }
    assert_eq!(
        w.calls(&path),
        1,
        "a retried command must not call PM again"
    );
    assert!(views.iter().all(|v| v == &views[0]));
    assert_eq!(views[0].state, "completed");
    assert_eq!(views[0].outcome, Some(espm_events::CommandOutcome::Done));
    assert_eq!(views[0].account_id, Some(customer));
    assert!(w
        .sim
        .state()
        .with_world(|world| world.is_connected(customer)));

    let results: Vec<_> = w
        .events()
        .into_iter()
        .filter(|e| e.ty == espm_events::COMMAND_COMPLETED)
        .collect();
    assert_eq!(results.len(), 1, "one result event per command");
    assert_eq!(results[0].causationid.as_deref(), Some("answer-1"));
    assert_eq!(results[0].data["requester"], "billing-service");
    assert_eq!(results[0].data["target"]["requestId"], customer);
    assert!(espm_events::data_schema(&results[0].ty).is_some());

    // Who answered is remembered for the `resolved` event.
    let by = w
        .journal
        .answer_by(&Scope::new("sim", "main"), "connection", customer)
        .unwrap()
        .unwrap();
    assert_eq!(by.action, "accepted");
    assert_eq!(by.command_id.as_deref(), Some("answer-1"));

    // Another id for the same request: PM says it is already resolved, which is success.
    let again = w.submit("answer-2", accept(customer)).await.unwrap();
    assert_eq!(again.state, "completed");
    assert_eq!(
        again.outcome,
        Some(espm_events::CommandOutcome::NothingToDo)
    );

    // One id reused for another command is refused, and nothing is sent.
    let err = w
        .submit(
            "answer-1",
            Command::Disconnect {
                customer_id: customer,
                keep_shares: true,
                note: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::IdReused { .. }), "{err}");
    assert!(w
        .sim
        .state()
        .with_world(|world| world.is_connected(customer)));
}

#[tokio::test]
async fn pm_refusals_keep_their_meaning_and_final_ones_are_not_repeated() {
    let w = World::new().await;
    // A property PM does not know: 404.
    let v = w
        .submit(
            "unshare-unknown",
            Command::UnshareProperty {
                property_id: 987_654_321,
                note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(v.state, "failed");
    assert_eq!(v.problem().unwrap().kind, ProblemKind::PmNotFound);
    assert_eq!(v.error.as_ref().unwrap().pm_status, Some(404));
    let path = "POST /unshare/property/987654321";
    assert_eq!(w.calls(path), 1);
    let again = w
        .submit(
            "unshare-unknown",
            Command::UnshareProperty {
                property_id: 987_654_321,
                note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(again, v);
    assert_eq!(w.calls(path), 1, "a final failure is returned, not retried");
    let failed: Vec<_> = w
        .events()
        .into_iter()
        .filter(|e| e.ty == espm_events::COMMAND_FAILED)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].data["error"]["status"], 404);

    // Disconnecting a customer that is not connected: nothing to do.
    let stranger = w.ctl.customer().await;
    let v = w
        .submit(
            "disconnect-stranger",
            Command::Disconnect {
                customer_id: stranger,
                keep_shares: false,
                note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(v.state, "completed");
    assert_eq!(v.outcome, Some(espm_events::CommandOutcome::NothingToDo));

    // A note over PM's limit never reaches PM.
    let err = w
        .submit(
            "too-long",
            Command::Answer {
                kind: PendingKind::Connection,
                request_id: stranger,
                decision: Decision::Reject,
                note: Some("x".repeat(1001)),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Invalid(_)));
    assert_eq!(w.calls(&format!("POST /connect/account/{stranger}")), 0);
}

#[tokio::test]
async fn a_command_interrupted_after_its_pm_call_is_reconciled_without_a_second_call() {
    let w = World::new().await;
    let customer = w.ctl.customer().await;
    w.ctl.request_connection(customer, &[]).await;
    let path = format!("POST /connect/account/{customer}");

    // A bridge that journalled the command, began its PM call, and was killed after PM acted.
    let command = accept(customer);
    let scope = Scope::new("sim", "main");
    w.journal
        .begin_command(NewCommand {
            id: "killed-mid-call",
            scope: &scope,
            action: "answer",
            target: &command.target(),
            fingerprint: &command.fingerprint(),
            requester: Some("crm"),
            origin: "kafka",
        })
        .unwrap();
    assert_eq!(w.journal.begin_attempt("killed-mid-call").unwrap(), 1);
    client(&w.sim)
        .answer(
            espm_client::PendingKind::Connection,
            customer,
            espm_model::Action::Accept,
            None,
        )
        .await
        .unwrap();
    assert_eq!(w.calls(&path), 1);

    // A command journalled but killed before its call: still pending in PM, so it is sent.
    let other = w.ctl.customer().await;
    w.ctl.request_connection(other, &[]).await;
    let second = accept(other);
    w.journal
        .begin_command(NewCommand {
            id: "killed-before-call",
            scope: &scope,
            action: "answer",
            target: &second.target(),
            fingerprint: &second.fingerprint(),
            requester: None,
            origin: "api",
        })
        .unwrap();

    // The restarted bridge.
    let commander = Commander::new(w.journal.clone(), [account(&w.sim)]);
    assert_eq!(commander.resume().await.unwrap(), 2);
    assert_eq!(w.calls(&path), 1, "the interrupted answer was repeated");
    let first = commander.command("killed-mid-call").await.unwrap().unwrap();
    assert_eq!(first.state, "completed");
    assert_eq!(
        first.outcome,
        Some(espm_events::CommandOutcome::NothingToDo)
    );
    let second = commander
        .command("killed-before-call")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.outcome, Some(espm_events::CommandOutcome::Done));
    assert_eq!(w.calls(&format!("POST /connect/account/{other}")), 1);
    assert!(w.sim.state().with_world(|world| world.is_connected(other)));
    assert!(w.journal.unfinished_commands().unwrap().is_empty());
    // Nothing left: a second start does nothing.
    assert_eq!(commander.resume().await.unwrap(), 0);
}
