//! Custom field values for `share.updated`: read per part of a body, before its commit.
//!
//! PM's SHAREUPDATE says that a share changed (its access level, or the custom field values the
//! customer edited), not what the values are now: only `GET /meter|property|account/{id}/
//! customFieldList` says that. A body is parsed and committed in parts (see `drain.rs`); between
//! the parse of a part and its commit:
//! 1. [`BodyTargets::choose`]: the targets of the part's SHAREUPDATEs (see
//!    [`share_update_target`]) not read for an earlier part of the body, nor already committed,
//!    at most [`MAX_TARGETS`] distinct ones per body;
//! 2. [`read_custom_fields`]: their lists read from PM, at most [`CONCURRENCY`] requests
//!    queued at a time (the account's client itself calls PM one call at a time), all the
//!    body's reads within the account's lookup budget (`customer_lookup_timeout`);
//! 3. the normalizer attaches them as it builds the part's events
//!    ([`espm_events::NotificationCorrelator::add_custom_fields`]).
//!
//! The body is parsed once: an earlier pre-pass parsed every body with a SHAREUPDATE twice.
//!
//! The invariant: reads start after the body is journalled, so they never delay the journal of
//! a body, nor the `clear=true` that handed it out; they never hold an event back longer than
//! the budget and never drop one. A read that fails, runs out of time or is skipped (over the
//! cap, or no PM client: `journal reprocess`) leaves its events without `customFields`, flagged
//! `enrichment: "unavailable"`. Nothing is cached: the point is the values after the edit. Event
//! ids do not depend on any of it, so a recovered or re-read body gives the same ids.

use std::collections::{BTreeMap, HashSet};

use espm_client::{CustomFieldTarget, PmClient};
use espm_events::{share_update_target, CustomFieldsByTarget};
use espm_model::Notification;
use futures::StreamExt;

/// The most distinct SHAREUPDATE targets whose values are read for one body; the SHAREUPDATEs
/// of any further target are emitted flagged.
pub(crate) const MAX_TARGETS: usize = 1000;

/// The most `customFieldList` reads queued at once for one body (the client runs them one at a
/// time: PM is never called concurrently for one account).
pub(crate) const CONCURRENCY: usize = 8;

/// The targets of one part to read now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Distinct targets in body order, not chosen for an earlier part.
    pub targets: Vec<CustomFieldTarget>,
    /// SHAREUPDATEs whose target did not fit under the body's cap (their events go out flagged).
    pub skipped: usize,
}

/// The SHAREUPDATEs of a part: notification id and target, in order.
pub(crate) fn share_updates(notes: &[Notification]) -> Vec<(i64, CustomFieldTarget)> {
    notes
        .iter()
        .filter_map(|n| share_update_target(n).map(|t| (n.notification_id, t)))
        .collect()
}

/// The targets chosen for one body so far, across its parts.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyTargets {
    cap: usize,
    chosen: HashSet<CustomFieldTarget>,
}

impl BodyTargets {
    /// At most `cap` distinct targets for the whole body.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            chosen: HashSet::new(),
        }
    }

    /// Of a part's SHAREUPDATEs, the targets to read: not chosen for an earlier part, with a
    /// notification outside `known` (committed already, its event went out: the clear of
    /// peek-then-clear re-reads nothing the peek read), while the body's cap allows.
    pub(crate) fn choose(
        &mut self,
        updates: &[(i64, CustomFieldTarget)],
        known: &HashSet<i64>,
    ) -> Scan {
        let mut out = Scan::default();
        for (id, target) in updates {
            if known.contains(id) || self.chosen.contains(target) {
                continue;
            }
            if self.chosen.len() < self.cap {
                self.chosen.insert(*target);
                out.targets.push(*target);
            } else {
                out.skipped += 1;
            }
        }
        out
    }
}

/// Read the custom field values of `scan`'s targets from PM, at most [`CONCURRENCY`] queued at
/// a time, all by `deadline` (the body's, shared by its parts). Targets whose read failed or did
/// not finish in time are missing from the answer (their events go out flagged). Never fails.
pub(crate) async fn read_custom_fields(
    client: &PmClient,
    scan: &Scan,
    deadline: tokio::time::Instant,
    account: &str,
) -> CustomFieldsByTarget {
    // Logged once per body by the drain, counted here.
    count(account, "skipped", scan.skipped as u64);
    let mut reads = futures::stream::iter(scan.targets.iter().copied())
        .map(|target| async move {
            let r = tokio::time::timeout_at(deadline, client.custom_fields(target)).await;
            (target, r)
        })
        .buffer_unordered(CONCURRENCY);
    let mut out = CustomFieldsByTarget::new();
    let (mut failed, mut timed_out, mut first_error) = (0u64, 0u64, String::new());
    while let Some((target, r)) = reads.next().await {
        match r {
            Ok(Ok(fields)) => {
                let values: BTreeMap<String, String> =
                    fields.into_iter().map(|f| (f.name, f.value)).collect();
                out.insert(target, values);
                count(account, "fetched", 1);
            }
            Ok(Err(e)) => {
                failed += 1;
                if failed == 1 {
                    first_error = format!("{target:?}: {e}");
                }
            }
            Err(_) => timed_out += 1,
        }
    }
    count(account, "failed", failed);
    count(account, "timeout", timed_out);
    // One line per part, not per target: a burst can name a thousand shares.
    if failed > 0 {
        tracing::warn!(account = %account, failed, first_error = %first_error, "custom field reads failed; their share.updated events go out flagged enrichment=unavailable");
    }
    if timed_out > 0 {
        tracing::warn!(account = %account, timed_out, "custom field reads took too long; their share.updated events go out flagged enrichment=unavailable");
    }
    out
}

fn count(account: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("espm_bridge_custom_field_lookups_total", "account" => account.to_string(), "outcome" => outcome).increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use espm_model::{ListItem, NotificationStream};
    use std::io::BufReader;

    fn share_update(id: i64, property: Option<i64>, meter: Option<i64>, code: &str) -> String {
        let mut x = format!(
            "<notification><notificationTypeCode>{code}</notificationTypeCode>\
             <notificationId>{id}</notificationId><description>d</description><accountId>7</accountId>"
        );
        if let Some(p) = property {
            x.push_str(&format!("<propertyId>{p}</propertyId>"));
        }
        if let Some(m) = meter {
            x.push_str(&format!("<meterId>{m}</meterId>"));
        }
        x.push_str("</notification>");
        x
    }

    fn list(items: &[String]) -> Vec<u8> {
        format!("<notificationList>{}</notificationList>", items.concat()).into_bytes()
    }

    /// A reader that hands out `step` bytes per `fill_buf`.
    fn tiny(bytes: &[u8], step: usize) -> BufReader<&[u8]> {
        BufReader::with_capacity(step, bytes)
    }

    /// What the drain's stream parse gives, in parts of `part` notifications.
    fn parts<R: std::io::BufRead>(input: R, part: usize) -> Vec<Vec<Notification>> {
        let mut stream = NotificationStream::new(input);
        let mut out = vec![Vec::new()];
        while let Ok(Some(item)) = stream.next_item() {
            if let ListItem::Notification(n) = item {
                if out.last().is_some_and(|p| p.len() == part.max(1)) {
                    out.push(Vec::new());
                }
                if let Some(p) = out.last_mut() {
                    p.push(n);
                }
            }
        }
        out
    }

    /// The targets a body's parts choose, all together.
    fn scan<R: std::io::BufRead>(input: R, cap: usize, part: usize) -> Scan {
        let mut body = BodyTargets::new(cap);
        let mut all = Scan::default();
        for p in parts(input, part) {
            let s = body.choose(&share_updates(&p), &HashSet::new());
            all.targets.extend(s.targets);
            all.skipped += s.skipped;
        }
        all
    }

    #[test]
    fn targets_are_the_most_specific_thing_named_distinct_and_in_order() {
        let body = list(&[
            share_update(1, Some(5), Some(9), "SHAREUPDATE"),
            share_update(2, Some(5), None, "SHAREUPDATE"),
            share_update(3, Some(5), Some(9), " shareupdate "),
            share_update(4, Some(6), None, "UNSHARE"),
            "<notification><notificationTypeCode>SHAREUPDATE</notificationTypeCode><notificationId>5</notificationId><description>d</description><accountId>7</accountId></notification>".into(),
            "<notification><notificationTypeCode>SHAREUPDATE</notificationTypeCode><notificationId>x</notificationId></notification>".into(),
        ]);
        for part in [1, 2, 100] {
            let s = scan(tiny(&body, 7), MAX_TARGETS, part);
            assert_eq!(
                s.targets,
                vec![
                    CustomFieldTarget::Meter(9),
                    CustomFieldTarget::Property(5),
                    CustomFieldTarget::Account(7)
                ],
                "parts of {part}"
            );
            assert_eq!(s.skipped, 0);
        }
    }

    #[test]
    fn the_cap_holds_for_the_whole_body_across_its_parts() {
        let items: Vec<String> = (0..10)
            .map(|i| share_update(i, Some(100 + i), None, "SHAREUPDATE"))
            .collect();
        for part in [1, 3, 10] {
            let s = scan(&list(&items)[..], 4, part);
            assert_eq!(
                s.targets,
                (100..104)
                    .map(CustomFieldTarget::Property)
                    .collect::<Vec<_>>(),
                "parts of {part}"
            );
            assert_eq!(s.skipped, 6);
        }
    }

    #[test]
    fn targets_whose_notifications_are_all_committed_are_not_read_again() {
        let body = list(&[
            share_update(1, Some(5), None, "SHAREUPDATE"),
            share_update(2, Some(6), None, "SHAREUPDATE"),
            share_update(3, Some(5), None, "SHAREUPDATE"),
        ]);
        let notes = parts(&body[..], 10).remove(0);
        let updates = share_updates(&notes);
        assert_eq!(updates.len(), 3);
        // 5 still has notification 3 to emit; 6 is done.
        let left = BodyTargets::new(MAX_TARGETS).choose(&updates, &[1, 2].into());
        assert_eq!(left.targets, vec![CustomFieldTarget::Property(5)]);
        assert!(BodyTargets::new(MAX_TARGETS)
            .choose(&updates, &[1, 2, 3].into())
            .targets
            .is_empty());
    }

    #[test]
    fn bodies_that_are_not_lists_or_break_off_give_what_parsed() {
        assert_eq!(scan(&b"not xml at all"[..], 10, 5), Scan::default());
        assert_eq!(scan(&b"<other/>"[..], 10, 5), Scan::default());
        let whole = list(&[
            share_update(1, Some(5), None, "SHAREUPDATE"),
            share_update(2, Some(6), None, "SHAREUPDATE"),
        ]);
        let cut = &whole[..whole.len() - 60];
        assert_eq!(
            scan(cut, 10, 5).targets,
            vec![CustomFieldTarget::Property(5)]
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn notification() -> impl Strategy<Value = String> {
            (
                0i64..50,
                proptest::option::of(0i64..20),
                proptest::option::of(0i64..20),
                proptest::sample::select(vec!["SHAREUPDATE", "UNSHARE", "shareupdate", "X"]),
            )
                .prop_map(|(id, p, m, code)| share_update(id, p, m, code))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bytes at all: no panic, never more than the cap.
            #[test]
            fn any_bytes_never_panic_nor_exceed_the_cap(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                cap in 0usize..8,
                step in 1usize..64,
                part in 1usize..5,
            ) {
                let s = scan(tiny(&bytes, step), cap, part);
                prop_assert!(s.targets.len() <= cap);
            }

            /// Lists of real notifications, cut anywhere, in parts of any size: the same
            /// targets as one part, at most the cap, distinct; every SHAREUPDATE either read
            /// or counted skipped.
            #[test]
            fn lists_cut_anywhere_choose_the_same_in_any_parts(
                items in proptest::collection::vec(notification(), 0..40),
                cut in any::<proptest::sample::Index>(),
                cap in 0usize..12,
                step in 1usize..64,
                part in 1usize..8,
            ) {
                let body = list(&items);
                let body = &body[..cut.index(body.len() + 1)];
                let s = scan(tiny(body, step), cap, part);
                let whole = scan(tiny(body, step), cap, usize::MAX);
                prop_assert_eq!(&s, &whole);
                prop_assert!(s.targets.len() <= cap);
                let distinct: HashSet<_> = s.targets.iter().collect();
                prop_assert_eq!(distinct.len(), s.targets.len());
                let updates = share_updates(&parts(tiny(body, step), usize::MAX).concat());
                let chosen: HashSet<_> = s.targets.iter().collect();
                let over = updates.iter().filter(|(_, t)| !chosen.contains(t)).count();
                prop_assert_eq!(over, s.skipped);
            }
        }
    }
}
