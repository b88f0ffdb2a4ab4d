//! The ground-truth ledger: every notification ever created, and every notification read, so
//! tests can prove that nothing was lost or handed out twice.

use serde::{Deserialize, Serialize};

use crate::faults::FaultKind;

/// Whether a read's response reached the client intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// The response is still being written (or was never polled).
    Pending,
    /// The whole body was handed to the connection.
    Delivered,
    /// The body was lost: an injected fault, or the client went away before the end.
    Lost,
}

/// One notification in the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Notification id.
    pub id: i64,
    /// `notificationTypeCode`.
    #[serde(rename = "type")]
    pub type_code: String,
    /// `notificationCreatedDate`.
    pub created_at: String,
    /// When a committed `clear=true` read handed it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_out_at: Option<String>,
    /// Which read handed it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_id: Option<u64>,
    /// Whether that read's response reached the client intact (filled in when the JSON is built).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

/// One `GET /notification/list` call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadRecord {
    /// Sequence number, from 1.
    pub read_id: u64,
    /// When it was answered.
    pub at: String,
    /// The `clear` parameter.
    pub clear: bool,
    /// Whether the returned notifications were marked read (removed from the queue).
    pub committed: bool,
    /// The injected fault, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultKind>,
    /// Ids in the response body, in order.
    pub notification_ids: Vec<i64>,
    /// Whether the response reached the client intact.
    pub delivery: Delivery,
}

/// Counts only (`GET /sim/ledger?summary=true`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSummary {
    /// Notifications ever created.
    pub created: usize,
    /// Still waiting in the queue.
    pub pending: usize,
    /// Handed out by a committed `clear=true` read.
    pub handed_out: usize,
    /// Handed out and delivered intact.
    pub delivered: usize,
    /// Handed out, but the response was lost (the client never saw them).
    pub lost: usize,
    /// Handed out, delivery not yet known.
    pub in_flight: usize,
    /// Notification reads of any kind.
    pub reads: usize,
    /// Reads with an injected fault.
    pub faulted_reads: usize,
}

/// The ledger (`GET /sim/ledger`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Every notification ever created, by id.
    pub notifications: Vec<LedgerEntry>,
    /// Every read.
    pub reads: Vec<ReadRecord>,
}

impl Ledger {
    /// Record a new notification. Ids must be allocated consecutively (they index the ledger).
    pub fn created(&mut self, id: i64, type_code: &str, created_at: &str) {
        debug_assert!(self
            .notifications
            .first()
            .is_none_or(|first| id - first.id == self.notifications.len() as i64));
        self.notifications.push(LedgerEntry {
            id,
            type_code: type_code.to_string(),
            created_at: created_at.to_string(),
            handed_out_at: None,
            read_id: None,
            delivery: None,
        });
    }

    fn index(&self, id: i64) -> Option<usize> {
        let i = usize::try_from(id - self.notifications.first()?.id).ok()?;
        (i < self.notifications.len()).then_some(i)
    }

    /// The entry of a notification.
    pub fn entry(&self, id: i64) -> Option<&LedgerEntry> {
        self.index(id).map(|i| &self.notifications[i])
    }

    /// Record a read. For a committed read, its notifications are marked handed out by it.
    /// Returns the read id. Panics in debug builds if a notification is handed out twice.
    pub fn read(
        &mut self,
        at: &str,
        clear: bool,
        committed: bool,
        fault: Option<FaultKind>,
        ids: Vec<i64>,
    ) -> u64 {
        let read_id = self.reads.len() as u64 + 1;
        if committed {
            for id in &ids {
                if let Some(i) = self.index(*id) {
                    let e = &mut self.notifications[i];
                    debug_assert!(e.read_id.is_none(), "notification {id} handed out twice");
                    e.read_id = Some(read_id);
                    e.handed_out_at = Some(at.to_string());
                }
            }
        }
        self.reads.push(ReadRecord {
            read_id,
            at: at.to_string(),
            clear,
            committed,
            fault,
            notification_ids: ids,
            delivery: if fault.is_some() {
                Delivery::Lost
            } else {
                Delivery::Pending
            },
        });
        read_id
    }

    /// Settle a read's delivery (only a pending one changes).
    pub fn settle(&mut self, read_id: u64, delivered: bool) {
        let Some(r) = read_id
            .checked_sub(1)
            .and_then(|i| self.reads.get_mut(i as usize))
        else {
            return;
        };
        if r.delivery == Delivery::Pending {
            r.delivery = if delivered {
                Delivery::Delivered
            } else {
                Delivery::Lost
            };
        }
    }

    /// The delivery state of a read.
    pub fn delivery(&self, read_id: u64) -> Option<Delivery> {
        read_id
            .checked_sub(1)
            .and_then(|i| self.reads.get(i as usize))
            .map(|r| r.delivery)
    }

    /// A copy with each handed-out notification's delivery filled in, for the JSON view.
    pub fn snapshot(&self) -> Ledger {
        let mut out = self.clone();
        for e in &mut out.notifications {
            e.delivery = e.read_id.and_then(|r| self.delivery(r));
        }
        out
    }

    /// Counts.
    pub fn summary(&self) -> LedgerSummary {
        let mut s = LedgerSummary {
            created: self.notifications.len(),
            reads: self.reads.len(),
            faulted_reads: self.reads.iter().filter(|r| r.fault.is_some()).count(),
            ..LedgerSummary::default()
        };
        for e in &self.notifications {
            match e.read_id.and_then(|r| self.delivery(r)) {
                None => s.pending += 1,
                Some(d) => {
                    s.handed_out += 1;
                    match d {
                        Delivery::Delivered => s.delivered += 1,
                        Delivery::Lost => s.lost += 1,
                        Delivery::Pending => s.in_flight += 1,
                    }
                }
            }
        }
        s
    }
}
