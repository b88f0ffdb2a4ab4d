//! Custom field values for `share.updated`: a pre-pass before a body's commit.
//!
//! PM's SHAREUPDATE says that a share changed (its access level, or the custom field values the
//! customer edited), not what the values are now: only `GET /meter|property|account/{id}/
//! customFieldList` says that. The commit of a body runs in one blocking journal closure, so the
//! values are read before it, from the journalled body:
//! 1. [`mentions_share_update`]: a byte scan of the body as a stream; most bodies stop here;
//! 2. [`scan`]: the body parsed as a stream for the targets of its SHAREUPDATEs (see
//!    [`share_update_target`]), at most [`MAX_TARGETS`] distinct ones per body;
//! 3. [`read_custom_fields`]: their lists read from PM, at most [`CONCURRENCY`] requests
//!    queued at a time (the account's client itself calls PM one call at a time), all within
//!    the account's lookup budget (`customer_lookup_timeout`);
//! 4. the normalizer attaches them as it builds the events
//!    ([`espm_events::NotificationCorrelator::with_custom_fields`]).
//!
//! The invariant: the pre-pass starts after the body is journalled, so it never delays the
//! journal of a body, nor the `clear=true` that handed it out (in peek-then-clear the peek's
//! pre-pass comes before the clear, by at most the budget: the peek clears nothing); it never
//! holds an event back longer than the budget and never drops one. A read that fails, runs out of time or is skipped (over
//! the cap, or no PM client: `journal reprocess`) leaves its events without `customFields`,
//! flagged `enrichment: "unavailable"`. Nothing is cached: the point is the values after the
//! edit. Event ids do not depend on any of it, so a recovered or re-read body gives the same ids.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::time::Duration;

use espm_client::{CustomFieldTarget, PmClient};
use espm_events::{share_update_target, CustomFieldsByTarget};
use espm_journal::{Journal, RawId, Scope};
use espm_model::{ListItem, NotificationStream};
use futures::StreamExt;

/// The most distinct SHAREUPDATE targets whose values are read for one body; the SHAREUPDATEs
/// of any further target are emitted flagged.
pub(crate) const MAX_TARGETS: usize = 1000;

/// The most `customFieldList` reads queued at once for one body (the client runs them one at a
/// time: PM is never called concurrently for one account).
pub(crate) const CONCURRENCY: usize = 8;

/// What every SHAREUPDATE's code contains, compared ASCII case-insensitively (PM's code is
/// read the same way, see `notification_event_type`).
const MARKER: &[u8] = b"shareupdate";

/// The SHAREUPDATE targets of one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Distinct targets in body order, at most the cap.
    pub targets: Vec<CustomFieldTarget>,
    /// SHAREUPDATEs whose target did not fit under the cap (their events go out flagged).
    pub skipped: usize,
    /// The SHAREUPDATEs of `targets`: notification id and target.
    pub notifications: Vec<(i64, CustomFieldTarget)>,
}

impl Scan {
    /// Keep only the targets with a notification outside `known` (notifications committed
    /// already, whose events went out: the clear of peek-then-clear re-reads nothing the peek
    /// read).
    pub(crate) fn without_known(mut self, known: &HashSet<i64>) -> Scan {
        let wanted: HashSet<CustomFieldTarget> = self
            .notifications
            .iter()
            .filter(|(id, _)| !known.contains(id))
            .map(|(_, t)| *t)
            .collect();
        self.targets.retain(|t| wanted.contains(t));
        self.notifications.retain(|(_, t)| wanted.contains(t));
        self
    }
}

/// Whether the bytes mention SHAREUPDATE anywhere (ASCII case-insensitive), read as a stream
/// with a window of the marker's length across buffer boundaries. A read error answers `true`:
/// the scan that follows finds out.
pub(crate) fn mentions_share_update<R: BufRead>(mut input: R) -> bool {
    let overlap = MARKER.len() - 1;
    // The last `overlap` bytes read so far.
    let mut tail: Vec<u8> = Vec::with_capacity(2 * overlap);
    loop {
        let chunk = match input.fill_buf() {
            Ok([]) => return false,
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        };
        let n = chunk.len();
        tail.extend_from_slice(&chunk[..n.min(overlap)]);
        if contains_marker(&tail) || contains_marker(chunk) {
            return true;
        }
        if n >= overlap {
            tail.clear();
            tail.extend_from_slice(&chunk[n - overlap..]);
        } else {
            let excess = tail.len().saturating_sub(overlap);
            tail.drain(..excess);
        }
        input.consume(n);
    }
}

fn contains_marker(haystack: &[u8]) -> bool {
    haystack
        .windows(MARKER.len())
        .any(|w| w.eq_ignore_ascii_case(MARKER))
}

/// The targets of the SHAREUPDATEs of a notification list, read as a stream (one notification
/// in memory at a time): at most `cap` distinct ones, in body order; what does not parse is
/// passed over (the commit quarantines it). Never panics, whatever the bytes.
pub(crate) fn scan<R: BufRead>(input: R, cap: usize) -> Scan {
    let mut stream = NotificationStream::new(input);
    let mut seen: HashSet<CustomFieldTarget> = HashSet::new();
    let mut out = Scan::default();
    while let Ok(Some(item)) = stream.next_item() {
        let ListItem::Notification(n) = item else {
            continue;
        };
        let Some(target) = share_update_target(&n) else {
            continue;
        };
        if seen.contains(&target) {
            out.notifications.push((n.notification_id, target));
        } else if out.targets.len() < cap {
            seen.insert(target);
            out.targets.push(target);
            out.notifications.push((n.notification_id, target));
        } else {
            out.skipped += 1;
        }
    }
    out
}

/// The SHAREUPDATE targets of a journalled notification body ([`mentions_share_update`], then
/// [`scan`]) whose notifications are not committed yet, read from the journal in its blocking
/// pool. A journal that cannot be read gives none: the commit that follows reads it too, and
/// fails or flags.
pub(crate) async fn scan_journalled(journal: &Journal, scope: &Scope, raw: RawId) -> Scan {
    let sc = scope.clone();
    let scanned = journal
        .call(move |j| {
            if !mentions_share_update(j.raw_reader(raw)) {
                return Ok(Scan::default());
            }
            let found = scan(j.raw_reader(raw), MAX_TARGETS);
            let ids: Vec<i64> = found.notifications.iter().map(|(id, _)| *id).collect();
            let known = j.known_notifications(&sc, &ids)?;
            Ok(found.without_known(&known))
        })
        .await;
    scanned.unwrap_or_else(|e| {
        tracing::warn!(account = %scope.account, raw_id = %raw, error = %e, "scanning a body for SHAREUPDATEs failed; their events go out flagged enrichment=unavailable");
        Scan::default()
    })
}

/// Read the custom field values of `scan`'s targets from PM, at most [`CONCURRENCY`] queued at
/// a time, all within `budget`. Targets whose read failed or did not finish in time are missing from the
/// answer (their events go out flagged). Never fails.
pub(crate) async fn read_custom_fields(
    client: &PmClient,
    scan: &Scan,
    budget: Duration,
    account: &str,
) -> CustomFieldsByTarget {
    count(account, "skipped", scan.skipped as u64);
    if scan.skipped > 0 {
        tracing::warn!(account = %account, skipped = scan.skipped, cap = MAX_TARGETS, "a body names more shares than are re-read at once: the rest of its share.updated events go out flagged enrichment=unavailable");
    }
    let deadline = tokio::time::Instant::now() + budget;
    let mut reads = futures::stream::iter(scan.targets.iter().copied())
        .map(|target| async move {
            let r = tokio::time::timeout_at(deadline, client.custom_fields(target)).await;
            (target, r)
        })
        .buffer_unordered(CONCURRENCY);
    let mut out = CustomFieldsByTarget::new();
    while let Some((target, r)) = reads.next().await {
        match r {
            Ok(Ok(fields)) => {
                let values: BTreeMap<String, String> =
                    fields.into_iter().map(|f| (f.name, f.value)).collect();
                out.insert(target, values);
                count(account, "fetched", 1);
            }
            Ok(Err(e)) => {
                tracing::warn!(account = %account, target = ?target, error = %e, "custom field read failed; its share.updated events go out flagged enrichment=unavailable");
                count(account, "failed", 1);
            }
            Err(_) => {
                tracing::warn!(account = %account, target = ?target, budget = ?budget, "custom field reads took too long; share.updated events go out flagged enrichment=unavailable");
                count(account, "timeout", 1);
            }
        }
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

    /// A reader that hands out `step` bytes per `fill_buf`, so the marker straddles buffers.
    fn tiny(bytes: &[u8], step: usize) -> BufReader<&[u8]> {
        BufReader::with_capacity(step, bytes)
    }

    #[test]
    fn the_marker_is_found_across_buffer_boundaries_in_any_case() {
        let body = list(&[share_update(1, Some(5), None, "ShareUpdate")]);
        for step in 1..=40 {
            assert!(mentions_share_update(tiny(&body, step)), "step {step}");
        }
        let other = list(&[share_update(1, Some(5), None, "UNSHARE")]);
        for step in 1..=40 {
            assert!(!mentions_share_update(tiny(&other, step)), "step {step}");
        }
        assert!(!mentions_share_update(&b""[..]));
        assert!(!mentions_share_update(&b"SHAREUPDAT"[..]));
        assert!(mentions_share_update(&b"xxSHAREUPDATE"[..]));
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
            share_update(6, None, None, "SHAREUPDATE").replace("<accountId>7</accountId>", ""),
        ]);
        let s = scan(tiny(&body, 7), MAX_TARGETS);
        assert_eq!(
            s.targets,
            vec![
                CustomFieldTarget::Meter(9),
                CustomFieldTarget::Property(5),
                CustomFieldTarget::Account(7)
            ]
        );
        assert_eq!(s.skipped, 0);
    }

    #[test]
    fn the_cap_keeps_the_first_targets_and_counts_the_rest() {
        let items: Vec<String> = (0..10)
            .map(|i| share_update(i, Some(100 + i % 6), None, "SHAREUPDATE"))
            .collect();
        let s = scan(&list(&items)[..], 4);
        assert_eq!(
            s.targets,
            (100..104)
                .map(CustomFieldTarget::Property)
                .collect::<Vec<_>>()
        );
        // 104 and 105 (notifications 4 and 5) are over the cap; 6..=9 repeat 100..=103.
        assert_eq!(s.skipped, 2);
    }

    #[test]
    fn targets_whose_notifications_are_all_committed_are_not_read_again() {
        let body = list(&[
            share_update(1, Some(5), None, "SHAREUPDATE"),
            share_update(2, Some(6), None, "SHAREUPDATE"),
            share_update(3, Some(5), None, "SHAREUPDATE"),
        ]);
        let s = scan(&body[..], MAX_TARGETS);
        assert_eq!(s.notifications.len(), 3);
        let known: HashSet<i64> = [1, 2].into();
        let left = s.without_known(&known);
        // 5 still has notification 3 to emit; 6 is done.
        assert_eq!(left.targets, vec![CustomFieldTarget::Property(5)]);
        let all: HashSet<i64> = [1, 2, 3].into();
        assert!(scan(&body[..], MAX_TARGETS)
            .without_known(&all)
            .targets
            .is_empty());
    }

    #[test]
    fn bodies_that_are_not_lists_or_break_off_give_what_parsed() {
        assert_eq!(scan(&b"not xml at all"[..], 10), Scan::default());
        assert_eq!(scan(&b"<other/>"[..], 10), Scan::default());
        let whole = list(&[
            share_update(1, Some(5), None, "SHAREUPDATE"),
            share_update(2, Some(6), None, "SHAREUPDATE"),
        ]);
        let cut = &whole[..whole.len() - 60];
        assert_eq!(scan(cut, 10).targets, vec![CustomFieldTarget::Property(5)]);
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

            /// Any bytes at all: no panic, never more than the cap, no duplicates.
            #[test]
            fn any_bytes_never_panic_nor_exceed_the_cap(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                cap in 0usize..8,
                step in 1usize..64,
            ) {
                let s = scan(tiny(&bytes, step), cap);
                prop_assert!(s.targets.len() <= cap);
                let _ = mentions_share_update(tiny(&bytes, step));
            }

            /// Lists of real notifications, cut anywhere: at most the cap, distinct, and found
            /// by the byte scan whenever the parse found any.
            #[test]
            fn lists_cut_anywhere_stay_under_the_cap(
                items in proptest::collection::vec(notification(), 0..40),
                cut in any::<proptest::sample::Index>(),
                cap in 0usize..12,
                step in 1usize..64,
            ) {
                let body = list(&items);
                let body = &body[..cut.index(body.len() + 1)];
                let s = scan(tiny(body, step), cap);
                prop_assert!(s.targets.len() <= cap);
                let distinct: HashSet<_> = s.targets.iter().collect();
                prop_assert_eq!(distinct.len(), s.targets.len());
                if !s.targets.is_empty() || s.skipped > 0 {
                    prop_assert!(mentions_share_update(tiny(body, step)));
                }
            }
        }
    }
}
