//! Answers the bridge gave PM, so a list walk can attribute a resolution.

#[allow(unused_imports)]
use super::*;

impl Journal {
    /// Remember that the bridge answered a pending request (`kind` e.g. `connection`, `action`
    /// e.g. `accept`), so the next list walk can attribute its disappearance.
    pub fn record_answer(
        &self,
        scope: &Scope,
        kind: &str,
        id: i64,
        action: &str,
    ) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO answers(environment, account, kind, id, action, answered_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(environment, account, kind, id) DO UPDATE SET \
                 action = excluded.action, answered_at = excluded.answered_at",
            )
            .j()?
            .execute(params![
                scope.environment,
                scope.account,
                kind,
                id,
                action,
                now_ms()
            ])
            .j()?;
            Ok(())
        })
    }

    /// The action the bridge took on a pending request, if any.
    pub fn answer_for(
        &self,
        scope: &Scope,
        kind: &str,
        id: i64,
    ) -> Result<Option<String>, JournalError> {
        let conn = self.reader();
        let action = conn
            .prepare_cached(
                "SELECT action FROM answers WHERE environment = ?1 AND account = ?2 AND kind = ?3 AND id = ?4",
            )
            .j()?
            .query_row(params![scope.environment, scope.account, kind, id], |r| {
                r.get(0)
            })
            .optional()
            .j()?;
        Ok(action)
    }
}
