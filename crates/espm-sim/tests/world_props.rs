//! Random sequences of world operations keep the invariants, and every notification is handed
//! out at most once by committed clear=true reads and never disappears from the ledger.

use std::collections::BTreeSet;

use espm_sim::world::{Access, CustomerSpec, Target, World};
use espm_sim::FaultKind;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    NewCustomer,
    RequestConnection(usize),
    ShareProperty(usize, Option<usize>, bool),
    ShareMeter(usize, Option<usize>, Option<usize>, bool),
    AnswerConnection(usize, bool),
    AnswerProperty(usize, bool),
    AnswerMeter(usize, bool),
    ProviderDisconnect(usize, bool),
    ProviderUnshareProperty(usize),
    ProviderUnshareMeter(usize),
    Edit(bool, usize, bool),
    CustomerUnshare(bool, usize),
    CustomerDisconnect(usize),
    Transfer(usize, usize, bool),
    Bulk(usize),
    Read(bool, bool, Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0usize..64;
    prop_oneof![
        2 => Just(Op::NewCustomer),
        2 => i.clone().prop_map(Op::RequestConnection),
        3 => (i.clone(), proptest::option::of(i.clone()), any::<bool>()).prop_map(|(a, p, r)| Op::ShareProperty(a, p, r)),
        3 => (i.clone(), proptest::option::of(i.clone()), proptest::option::of(i.clone()), any::<bool>()).prop_map(|(a, p, m, r)| Op::ShareMeter(a, p, m, r)),
        2 => (i.clone(), any::<bool>()).prop_map(|(a, b)| Op::AnswerConnection(a, b)),
        2 => (i.clone(), any::<bool>()).prop_map(|(a, b)| Op::AnswerProperty(a, b)),
        2 => (i.clone(), any::<bool>()).prop_map(|(a, b)| Op::AnswerMeter(a, b)),
        1 => (i.clone(), any::<bool>()).prop_map(|(a, b)| Op::ProviderDisconnect(a, b)),
        1 => i.clone().prop_map(Op::ProviderUnshareProperty),
        1 => i.clone().prop_map(Op::ProviderUnshareMeter),
        1 => (any::<bool>(), i.clone(), any::<bool>()).prop_map(|(p, x, r)| Op::Edit(p, x, r)),
        1 => (any::<bool>(), i.clone()).prop_map(|(p, x)| Op::CustomerUnshare(p, x)),
        1 => i.clone().prop_map(Op::CustomerDisconnect),
        1 => (i.clone(), i.clone(), any::<bool>()).prop_map(|(p, a, r)| Op::Transfer(p, a, r)),
        1 => (0usize..5).prop_map(Op::Bulk),
        2 => (any::<bool>(), any::<bool>(), proptest::option::of(0u8..5)).prop_map(|(c, k, f)| Op::Read(c, k, f)),
    ]
}

fn nth(ids: &[i64], i: usize) -> Option<i64> {
    (!ids.is_empty()).then(|| ids[i % ids.len()])
}

fn access(rw: bool) -> Access {
    if rw {
        Access::ReadWrite
    } else {
        Access::Read
    }
}

const FAULTS: [FaultKind; 5] = [
    FaultKind::Http429,
    FaultKind::Http500,
    FaultKind::Http502,
    FaultKind::Truncated,
    FaultKind::Drop,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn operations_keep_invariants_and_the_ledger_whole(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        let mut w = World::new(seed);
        let mut handed_out = BTreeSet::new();
        for op in ops {
            let customers = w.customer_ids();
            let properties = w.property_ids();
            let meters = w.meter_ids();
            // Refusals are fine; what matters is that state stays consistent.
            match op {
                Op::NewCustomer => { let _ = w.create_customer(CustomerSpec::default()); }
                Op::RequestConnection(a) => if let Some(a) = nth(&customers, a) { let _ = w.request_connection(a, vec![]); },
                Op::ShareProperty(a, p, rw) => if let Some(a) = nth(&customers, a) {
                    let p = p.and_then(|p| nth(&properties, p));
                    let _ = w.share_property(a, p, None, access(rw), vec![]);
                },
                Op::ShareMeter(a, p, m, rw) => if let Some(a) = nth(&customers, a) {
                    let m = m.and_then(|m| nth(&meters, m));
                    let p = if m.is_some() { None } else { p.and_then(|p| nth(&properties, p)) };
                    let _ = w.share_meter(a, p, m, access(rw), vec![]);
                },
                Op::AnswerConnection(a, ok) => if let Some(a) = nth(&customers, a) {
                    let was_pending = w.has_pending_connection(a);
                    let r = w.answer_connection(a, ok);
                    prop_assert_eq!(r.is_ok(), was_pending);
                    if ok && was_pending { prop_assert!(w.is_connected(a)); }
                },
                Op::AnswerProperty(p, ok) => if let Some(p) = nth(&properties, p) {
                    let was_pending = w.has_pending_property(p);
                    let r = w.answer_property_share(p, ok);
                    prop_assert_eq!(r.is_ok(), was_pending);
                    if ok && was_pending {
                        prop_assert!(w.property_share(p).is_some());
                        prop_assert!(w.is_connected(w.property_owner(p).unwrap()));
                    }
                },
                Op::AnswerMeter(m, ok) => if let Some(m) = nth(&meters, m) {
                    let was_pending = w.has_pending_meter(m);
                    let r = w.answer_meter_share(m, ok);
                    prop_assert_eq!(r.is_ok(), was_pending);
                    if ok && was_pending {
                        let p = w.meter_property(m).unwrap();
                        prop_assert!(w.meter_share(m).is_some());
                        prop_assert!(!w.has_pending_property(p));
                        prop_assert!(w.is_connected(w.property_owner(p).unwrap()));
                    }
                },
                Op::ProviderDisconnect(a, keep) => if let Some(a) = nth(&customers, a) {
                    let was = w.is_connected(a);
                    prop_assert_eq!(w.provider_disconnect(a, keep).is_ok(), was);
                    if was && !keep {
                        for p in w.property_ids() {
                            if w.property_owner(p) == Some(a) { prop_assert!(w.property_share(p).is_none()); }
                        }
                    }
                },
                Op::ProviderUnshareProperty(p) => if let Some(p) = nth(&properties, p) {
                    if w.provider_unshare_property(p).is_ok() {
                        for m in w.meter_ids() {
                            if w.meter_property(m) == Some(p) { prop_assert!(w.meter_share(m).is_none()); }
                        }
                    }
                },
                Op::ProviderUnshareMeter(m) => if let Some(m) = nth(&meters, m) { let _ = w.provider_unshare_meter(m); },
                Op::Edit(is_p, x, rw) => {
                    let t = if is_p { nth(&properties, x).map(Target::Property) } else { nth(&meters, x).map(Target::Meter) };
                    if let Some(t) = t {
                        if let Ok(ids) = w.edit_share(t, access(rw), None) { prop_assert_eq!(ids.len(), 1); }
                    }
                },
                Op::CustomerUnshare(is_p, x) => {
                    let t = if is_p { nth(&properties, x).map(Target::Property) } else { nth(&meters, x).map(Target::Meter) };
                    if let Some(t) = t { let _ = w.customer_unshare(t); }
                },
                Op::CustomerDisconnect(a) => if let Some(a) = nth(&customers, a) {
                    if let Ok(ids) = w.customer_disconnect(a) { prop_assert!(!ids.is_empty()); }
                },
                Op::Transfer(p, a, rm) => if let (Some(p), Some(a)) = (nth(&properties, p), nth(&customers, a)) {
                    let _ = w.transfer(p, a, rm);
                },
                Op::Bulk(n) => { w.bulk_notifications(n, &[]); },
                Op::Read(clear, commit, fault) => {
                    let fault = fault.map(|f| FAULTS[f as usize]);
                    let queued = w.queue_len();
                    let (read_id, list) = w.read_notifications(clear, commit, fault);
                    prop_assert_eq!(list.notifications.len(), queued);
                    if clear && commit {
                        prop_assert_eq!(w.queue_len(), 0);
                        for n in &list.notifications {
                            prop_assert!(handed_out.insert(n.notification_id), "handed out twice");
                        }
                    } else {
                        prop_assert_eq!(w.queue_len(), queued);
                    }
                    w.settle_read(read_id, true);
                },
            }
            if let Err(e) = w.check_invariants() {
                prop_assert!(false, "invariant broken: {}", e);
            }
        }
        // Ledger: everything created is either still queued or was handed out, by exactly one read.
        let l = w.ledger();
        let s = l.summary();
        prop_assert_eq!(s.created, l.notifications.len());
        prop_assert_eq!(s.pending, w.queue_len());
        prop_assert_eq!(s.handed_out, handed_out.len());
        let ids: BTreeSet<i64> = l.notifications.iter().map(|e| e.id).collect();
        prop_assert_eq!(ids.len(), l.notifications.len());
        for id in &handed_out {
            prop_assert!(l.entry(*id).and_then(|e| e.read_id).is_some());
        }
    }
}
