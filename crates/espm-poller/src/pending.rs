//! Pending-list walks: every page journalled, then a diff against the stored snapshot.

use std::collections::BTreeMap;

use espm_events::{diff_pending, PendingEntry, PendingKind, Resolution, TrackedRequest};
use espm_model::{parse, PendingList};

use crate::{PollError, Poller};

/// What one pending walk did, per list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingOutcome {
    /// `requested` events emitted, per list.
    pub requested: BTreeMap<&'static str, usize>,
    /// `resolved` events emitted, per list.
    pub resolved: BTreeMap<&'static str, usize>,
}

impl Poller {
    /// Walk the three pending lists once. A list whose walk fails is skipped this round (an
    /// incomplete list would report requests as resolved); the others still run.
    pub async fn pending_once(&self) -> Result<PendingOutcome, PollError> {
        let mut out = PendingOutcome::default();
        let mut first_err = None;
        for kind in PendingKind::ALL {
            match self.walk(kind).await {
                Ok((req, res)) => {
                    out.requested.insert(kind.as_str(), req);
                    out.resolved.insert(kind.as_str(), res);
                }
                Err(e) => {
                    tracing::warn!(account = %self.account(), list = kind.as_str(), error = %e, "pending list walk failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn walk(&self, kind: PendingKind) -> Result<(usize, usize), PollError> {
        let endpoint = kind.list_endpoint();
        let account = self.account().to_string();
        let mut next: Option<String> = None;
        let mut raw_ids = Vec::new();
        let mut visited = std::collections::HashSet::new();
        let mut entries = Vec::new();
        loop {
            let raw = match self.client.pending_page_raw(kind, next.as_deref()).await {
                Ok(r) => r,
                Err(e) => {
                    metrics::counter!("espm_bridge_polls_total", "account" => account.clone(), "endpoint" => endpoint, "outcome" => "error").increment(1);
                    return Err(e.into());
                }
            };
            let raw_id = self
                .store_raw(endpoint, raw.status, raw.bytes.to_vec())
                .await?;
            raw_ids.push(raw_id);
            let page = match parse::<PendingList>(&raw.bytes) {
                Ok(p) => p,
                Err(e) => {
                    metrics::counter!("espm_bridge_polls_total", "account" => account.clone(), "endpoint" => endpoint, "outcome" => "parse_error").increment(1);
                    self.quarantine(endpoint, raw_id, &e.to_string()).await?;
                    return Err(PollError::Client(espm_client::ClientError::Xml(e)));
                }
            };
            metrics::counter!("espm_bridge_polls_total", "account" => account.clone(), "endpoint" => endpoint, "outcome" => "ok").increment(1);
            let next_link = page.next_page().map(str::to_string);
            entries.extend(page.accounts.into_iter().map(PendingEntry::Connection));
            entries.extend(page.properties.into_iter().map(PendingEntry::PropertyShare));
            entries.extend(page.meters.into_iter().map(PendingEntry::MeterShare));
            match next_link {
                None => break,
                // A link loop (or an endless list) would walk forever and never diff: give up on
                // this list for this round instead of reporting an incomplete one.
                Some(l) if !visited.insert(l.clone()) || visited.len() > espm_client::MAX_PAGES => {
                    return Err(PollError::Client(espm_client::ClientError::Pagination(
                        format!(
                            "{endpoint}: next-page link {l:?} repeats or the list exceeds {} pages",
                            espm_client::MAX_PAGES
                        ),
                    )));
                }
                Some(l) => next = Some(l),
            }
        }
        let scope = self.cfg.scope.clone();
        let origin = self.origin.clone();
        let list = kind.as_str();
        let diff = self
            .journal
            .call(move |j| {
                let previous: BTreeMap<String, TrackedRequest> = j
                    .pending_snapshot(&scope, list)?
                    .into_iter()
                    .map(|(k, v)| (k, TrackedRequest::from_stored(v)))
                    .collect();
                let lookup_err = std::cell::RefCell::new(None);
                let diff = diff_pending(
                    &origin,
                    kind,
                    &previous,
                    &entries,
                    |k, id| match j.answer_for(&scope, k.as_str(), id) {
                        Ok(Some(a)) if a == "accepted" => Resolution::Accepted,
                        Ok(Some(a)) if a == "rejected" => Resolution::Rejected,
                        Ok(_) => Resolution::Unknown,
                        Err(e) => {
                            lookup_err.borrow_mut().get_or_insert(e);
                            Resolution::Unknown
                        }
                    },
                    chrono::Utc::now(),
                );
                if let Some(e) = lookup_err.into_inner() {
                    return Err(e);
                }
                let mut diff = diff;
                // Say who answered, when the bridge did: the command and its requester.
                for ev in &mut diff.resolved {
                    let id_field = match kind {
                        PendingKind::Connection => "accountId",
                        PendingKind::PropertyShare => "propertyId",
                        PendingKind::MeterShare => "meterId",
                    };
                    let Some(id) = ev.data.get(id_field).and_then(serde_json::Value::as_i64) else {
                        continue;
                    };
                    let Some(by) = j.answer_by(&scope, kind.as_str(), id)? else {
                        continue;
                    };
                    let Some(command_id) = by.command_id else {
                        continue;
                    };
                    ev.data.edit(|data| {
                        if let Some(obj) = data.as_object_mut() {
                            let mut answered = serde_json::Map::new();
                            answered.insert("commandId".into(), command_id.into());
                            if let Some(r) = by.requester {
                                answered.insert("requester".into(), r.into());
                            }
                            obj.insert("answeredBy".into(), answered.into());
                        }
                    });
                }
                Ok(diff)
            })
            .await?;
        let (requested, resolved, unconfirmed) =
            (diff.requested.len(), diff.resolved.len(), diff.unconfirmed);
        let mut events: Vec<_> = diff.requested.into_iter().chain(diff.resolved).collect();
        // Bounded by one lookup budget for both; a failed lookup flags its events, never holds
        // them. Customers first: finding one clears the flag a property lookup may then set.
        let deadline = tokio::time::Instant::now() + self.customers.budget;
        self.enrich_customers(&mut events, deadline).await;
        self.enrich_properties(&mut events, deadline).await;
        let types: Vec<String> = events.iter().map(|e| e.ty.clone()).collect();
        let stored: BTreeMap<String, serde_json::Value> = diff
            .snapshot
            .iter()
            .map(|(k, t)| (k.clone(), t.to_stored()))
            .collect();
        // Only this account's poller writes this list's snapshot, so the snapshot read above is
        // still the one this commit replaces.
        let scope = self.cfg.scope.clone();
        self.journal
            .call(move |j| j.commit_pending(&scope, list, &raw_ids, &stored, &events))
            .await?;
        if unconfirmed > 0 {
            // Missed by this walk only: a page may have shifted under it. The next walk decides.
            tracing::info!(account = %account, list, unconfirmed, "pending requests missing from one walk; resolved only if the next walk misses them too");
        }
        if requested + resolved > 0 {
            self.wake_sinks();
            tracing::info!(account = %account, list, requested, resolved, "pending list changed");
        }
        for ty in types {
            metrics::counter!("espm_bridge_events_emitted_total", "account" => account.clone(), "type" => ty).increment(1);
        }
        Ok((requested, resolved))
    }
}
