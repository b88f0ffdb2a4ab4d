//! Commands asked of PM through the bridge: journalled before the PM call, finished with their
//! result and result event in one transaction.

#[allow(unused_imports)]
use super::*;

/// Where a command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// Journalled; its PM call has not finished (or was interrupted, see `attempts`).
    Pending,
    /// PM did what was asked, or it was already so ("nothing to do").
    Completed,
    /// PM refused, or could not be reached.
    Failed,
}

impl CommandState {
    /// `pending`, `completed` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Pending => "pending",
            CommandState::Completed => "completed",
            CommandState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, JournalError> {
        match s {
            "pending" => Ok(CommandState::Pending),
            "completed" => Ok(CommandState::Completed),
            "failed" => Ok(CommandState::Failed),
            other => Err(JournalError::Corrupt(format!("command state {other:?}"))),
        }
    }
}

/// A command about to be journalled.
#[derive(Debug, Clone, Copy)]
pub struct NewCommand<'a> {
    /// Its id: the caller's idempotency key or command id.
    pub id: &'a str,
    /// The provider account it runs as.
    pub scope: &'a Scope,
    /// What it does, e.g. `answer`, `disconnect`.
    pub action: &'a str,
    /// What it acts on, as JSON (never a password).
    pub target: &'a serde_json::Value,
    /// Digest of the whole request, so one id reused for another request is refused.
    pub fingerprint: &'a str,
    /// Who asked (the API token's name, a topic, `cli`, a policy rule).
    pub requester: Option<&'a str>,
    /// Which door it came in by: `api`, `kafka`, `nats`, `cli`, `policy`.
    pub origin: &'a str,
}

/// A journalled command.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCommand {
    /// Its id.
    pub id: String,
    /// The provider account it runs as.
    pub scope: Scope,
    /// What it does.
    pub action: String,
    /// What it acts on.
    pub target: serde_json::Value,
    /// Digest of the request.
    pub fingerprint: String,
    /// Who asked.
    pub requester: Option<String>,
    /// Which door it came in by.
    pub origin: String,
    /// Where it stands.
    pub state: CommandState,
    /// PM calls begun for it.
    pub attempts: u32,
    /// Its result, once finished.
    pub result: Option<serde_json::Value>,
    /// When it was first journalled.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
}

/// What [`Journal::begin_command`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// The id was new: the command is journalled as pending.
    New(StoredCommand),
    /// The id was taken: the command journalled under it (compare its fingerprint).
    Existing(StoredCommand),
}

/// An answer a command gave PM, remembered so a `resolved` event can say who answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRecord {
    /// The pending list: `connection`, `property_share`, `meter_share`.
    pub kind: String,
    /// The request's id.
    pub id: i64,
    /// `accepted` or `rejected`.
    pub action: String,
}

/// Who answered a pending request through the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerBy {
    /// `accepted` or `rejected`.
    pub action: String,
    /// The command, if the answer went through the command path.
    pub command_id: Option<String>,
    /// Who asked for it.
    pub requester: Option<String>,
}

const COLUMNS: &str = "id, environment, account, action, target, fingerprint, requester, origin, \
                       state, attempts, result, created_at, updated_at";

fn row_to_command(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredCommand, String, String)> {
    let target: String = r.get(4)?;
    let result: Option<String> = r.get(10)?;
    let state: String = r.get(8)?;
    Ok((
        StoredCommand {
            id: r.get(0)?,
            scope: Scope::new(r.get::<_, String>(1)?, r.get::<_, String>(2)?),
            action: r.get(3)?,
            target: serde_json::Value::Null,
            fingerprint: r.get(5)?,
            requester: r.get(6)?,
            origin: r.get(7)?,
            state: CommandState::Pending,
            attempts: r.get::<_, i64>(9)?.clamp(0, u32::MAX as i64) as u32,
            result: result.map(serde_json::Value::String),
            created_at: from_ms(r.get(11)?),
            updated_at: from_ms(r.get(12)?),
        },
        target,
        state,
    ))
}

fn finish_row(
    (mut c, target, state): (StoredCommand, String, String),
) -> Result<StoredCommand, JournalError> {
    c.state = CommandState::parse(&state)?;
    c.target = serde_json::from_str(&target)
        .map_err(|e| JournalError::Corrupt(format!("command {} target: {e}", c.id)))?;
    if let Some(serde_json::Value::String(raw)) = c.result.take() {
        c.result = Some(
            serde_json::from_str(&raw)
                .map_err(|e| JournalError::Corrupt(format!("command {} result: {e}", c.id)))?,
        );
    }
    Ok(c)
}

fn load(conn: &Connection, id: &str) -> Result<Option<StoredCommand>, JournalError> {
    let row = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM commands WHERE id = ?1"))
        .j()?
        .query_row([id], row_to_command)
        .optional()
        .j()?;
    row.map(finish_row).transpose()
}

impl Journal {
    /// Journal a command as pending, unless its id is taken: then return what is journalled
    /// under it. Durable when it returns.
    pub fn begin_command(&self, c: NewCommand<'_>) -> Result<Begun, JournalError> {
        let target = serde_json::to_string(c.target)
            .map_err(|e| JournalError::Corrupt(format!("command target: {e}")))?;
        self.write(|tx| {
            if let Some(found) = load(tx, c.id)? {
                return Ok(Begun::Existing(found));
            }
            let now = now_ms();
            tx.prepare_cached(
                "INSERT INTO commands(id, environment, account, action, target, fingerprint, \
                 requester, origin, state, attempts, result, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, NULL, ?9, ?9)",
            )
            .j()?
            .execute(params![
                c.id,
                c.scope.environment,
                c.scope.account,
                c.action,
                target,
                c.fingerprint,
                c.requester,
                c.origin,
                now
            ])
            .j()?;
            let stored = load(tx, c.id)?
                .ok_or_else(|| JournalError::Corrupt(format!("command {} vanished", c.id)))?;
            Ok(Begun::New(stored))
        })
    }

    /// Record, durably and before the PM call, that a call for this command begins (the
    /// command becomes pending again if it had failed). Returns the attempts begun so far,
    /// this one included.
    pub fn begin_attempt(&self, id: &str) -> Result<u32, JournalError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE commands SET attempts = attempts + 1, state = 'pending', \
                     updated_at = ?2 WHERE id = ?1 RETURNING attempts",
                )
                .j()?
                .query_row(params![id, now_ms()], |r| r.get::<_, i64>(0))
                .optional()
                .j()?
                .ok_or_else(|| JournalError::Corrupt(format!("no command {id}")))?;
            Ok(n.clamp(0, u32::MAX as i64) as u32)
        })
    }

    /// Finish a command: its state and result, its result events and (for an answer) who
    /// answered, in one transaction.
    pub fn finish_command(
        &self,
        id: &str,
        state: CommandState,
        result: &serde_json::Value,
        events: &[CloudEvent],
        answer: Option<&AnswerRecord>,
    ) -> Result<StoredCommand, JournalError> {
        let result_json = serde_json::to_string(result)
            .map_err(|e| JournalError::Corrupt(format!("command result: {e}")))?;
        self.write(|tx| {
            let now = now_ms();
            let changed = tx
                .prepare_cached(
                    "UPDATE commands SET state = ?2, result = ?3, updated_at = ?4 WHERE id = ?1",
                )
                .j()?
                .execute(params![id, state.as_str(), result_json, now])
                .j()?;
            if changed == 0 {
                return Err(JournalError::Corrupt(format!("no command {id}")));
            }
            let stored = load(tx, id)?
                .ok_or_else(|| JournalError::Corrupt(format!("command {id} vanished")))?;
            append_events(tx, events, now)?;
            if let Some(a) = answer {
                tx.prepare_cached(
                    "INSERT INTO answers(environment, account, kind, id, action, answered_at, \
                     command_id, requester) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT(environment, account, kind, id) DO UPDATE SET \
                     action = excluded.action, answered_at = excluded.answered_at, \
                     command_id = excluded.command_id, requester = excluded.requester",
                )
                .j()?
                .execute(params![
                    stored.scope.environment,
                    stored.scope.account,
                    a.kind,
                    a.id,
                    a.action,
                    now,
                    stored.id,
                    stored.requester
                ])
                .j()?;
            }
            Ok(stored)
        })
    }

    /// The command journalled under `id`.
    pub fn command(&self, id: &str) -> Result<Option<StoredCommand>, JournalError> {
        load(&self.reader(), id)
    }

    /// Commands not finished (a crash or shutdown mid-call), oldest first.
    pub fn unfinished_commands(&self) -> Result<Vec<StoredCommand>, JournalError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM commands WHERE state <> 'completed' AND state <> 'failed' \
                 ORDER BY created_at, id"
            ))
            .j()?;
        let rows = stmt
            .query_map([], row_to_command)
            .j()?
            .collect::<Result<Vec<_>, _>>()
            .j()?;
        rows.into_iter().map(finish_row).collect()
    }

    /// Who answered a pending request through the bridge, if it did.
    pub fn answer_by(
        &self,
        scope: &Scope,
        kind: &str,
        id: i64,
    ) -> Result<Option<AnswerBy>, JournalError> {
        let conn = self.reader();
        let found = conn
            .prepare_cached(
                "SELECT action, command_id, requester FROM answers \
             WHERE environment = ?1 AND account = ?2 AND kind = ?3 AND id = ?4",
            )
            .j()?
            .query_row(params![scope.environment, scope.account, kind, id], |r| {
                Ok(AnswerBy {
                    action: r.get(0)?,
                    command_id: r.get(1)?,
                    requester: r.get(2)?,
                })
            })
            .optional()
            .j();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        (dir, j)
    }

    #[test]
    fn a_command_is_journalled_once_and_finished_with_its_answer() {
        let (_d, j) = journal();
        let scope = Scope::new("sim", "main");
        let target = serde_json::json!({"kind": "connection", "requestId": 7});
        let new = NewCommand {
            id: "cmd-1",
            scope: &scope,
            action: "answer",
            target: &target,
            fingerprint: "f1",
            requester: Some("billing"),
            origin: "api",
        };
        let Begun::New(first) = j.begin_command(new).unwrap() else {
            panic!("a new id must be journalled")
        };
        assert_eq!(first.state, CommandState::Pending);
        assert_eq!(first.attempts, 0);
        assert_eq!(j.unfinished_commands().unwrap().len(), 1);

        assert_eq!(j.begin_attempt("cmd-1").unwrap(), 1);
        let Begun::Existing(again) = j.begin_command(new).unwrap() else {
            panic!("a taken id must not be journalled twice")
        };
        assert_eq!(again.attempts, 1);
        assert_eq!(again.target, target);

        let answer = AnswerRecord {
            kind: "connection".into(),
            id: 7,
            action: "accepted".into(),
        };
        let done = j
            .finish_command(
                "cmd-1",
                CommandState::Completed,
                &serde_json::json!({"outcome": "done"}),
                &[],
                Some(&answer),
            )
            .unwrap();
        assert_eq!(done.state, CommandState::Completed);
        assert_eq!(done.result, Some(serde_json::json!({"outcome": "done"})));
        assert!(j.unfinished_commands().unwrap().is_empty());
        let by = j.answer_by(&scope, "connection", 7).unwrap().unwrap();
        assert_eq!(by.action, "accepted");
        assert_eq!(by.command_id.as_deref(), Some("cmd-1"));
        assert_eq!(by.requester.as_deref(), Some("billing"));
        // The older reader still sees the answer.
        assert_eq!(
            j.answer_for(&scope, "connection", 7).unwrap().as_deref(),
            Some("accepted")
        );
        assert!(j.command("nope").unwrap().is_none());
    }
}
