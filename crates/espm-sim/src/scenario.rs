//! The seeded demo scenario: a small but complete provider portfolio, built only through the
//! world's own operations so it obeys the same rules as everything else.

use crate::world::{Access, CustomFields, CustomerSpec, SimError, Target, World};

/// Connected customers with accepted properties and meters.
pub const CONNECTED_CUSTOMERS: usize = 4;
/// Pending connection requests from fresh customers (more than a page of 20).
pub const PENDING_CONNECTIONS: usize = 25;

fn fields(name: &str, value: String) -> CustomFields {
    vec![(name.to_string(), value)]
}

fn access(i: usize) -> Access {
    if i % 2 == 0 {
        Access::Read
    } else {
        Access::ReadWrite
    }
}

/// Populate `world`:
/// - 4 connected customers, each with 1-3 shared properties holding 1-2 shared meters;
/// - 25 pending connection requests (two pages), with a `Customer Number` custom field;
/// - 3 pending property shares from a connected customer;
/// - a share forward: a customer forwards another, unconnected customer's property and one of
///   its meters (the pending shares name the owner, `shareAudit` the forwarder; the owner's
///   connection request comes along);
/// - 2 pending meter shares on an already shared property;
/// - waiting notifications: SHAREUPDATE (edited by a colleague, not the owner), UNSHARE,
///   DISCONNECT (+ its UNSHAREs), TRANSFERPROPERTY.
pub fn populate(world: &mut World) -> Result<(), SimError> {
    let mut connected = Vec::new();
    let mut first_meters = Vec::new();
    let mut properties_of = Vec::new();
    for i in 0..CONNECTED_CUSTOMERS {
        let a = world.create_customer(CustomerSpec::default())?;
        world.request_connection(a, fields("Customer Number", format!("C-{:04}", 100 + i)))?;
        world.answer_connection(a, true)?;
        let mut props = Vec::new();
        for j in 0..(1 + (i % 3)) {
            let p = world.share_property(
                a,
                None,
                None,
                access(i + j),
                fields("Lot Number", format!("{}", 900 + 10 * i + j)),
            )?;
            world.answer_property_share(p, true)?;
            for k in 0..(1 + (j % 2)) {
                let (m, _) = world.share_meter(
                    a,
                    Some(p),
                    None,
                    access(k),
                    fields("Meter Number", format!("M-{i}{j}{k}")),
                )?;
                world.answer_meter_share(m, true)?;
                if j == 0 && k == 0 {
                    first_meters.push(m);
                }
            }
            props.push(p);
        }
        connected.push(a);
        properties_of.push(props);
    }

    for i in 0..PENDING_CONNECTIONS {
        let a = world.create_customer(CustomerSpec::default())?;
        world.request_connection(a, fields("Customer Number", format!("P-{:04}", 500 + i)))?;
    }

    for i in 0..3 {
        world.share_property(
            connected[0],
            None,
            None,
            access(i),
            fields("Lot Number", format!("{}", 700 + i)),
        )?;
    }

    // Share forward: the sender is not the owner, who is not connected to us (a pending
    // connection request from the owner comes along).
    let stranger = world.create_customer(CustomerSpec::default())?;
    let forwarder = world.create_customer(CustomerSpec::default())?;
    let sp = world.create_property(stranger, None)?;
    world.share_property(forwarder, Some(sp), None, Access::Read, Vec::new())?;
    world.share_meter(forwarder, Some(sp), None, Access::Read, Vec::new())?;

    let shared = properties_of[1][0];
    for k in 0..2 {
        world.share_meter(
            connected[1],
            Some(shared),
            None,
            access(k),
            fields("Meter Number", format!("N-{k}")),
        )?;
    }

    // Notifications waiting for the first poll.
    // PM's example: the editor (notificationCreatedBy...) is not the owner (accountId).
    let colleague = world.create_customer(CustomerSpec::default())?;
    world.edit_share(
        Target::Property(properties_of[2][0]),
        Access::ReadWrite,
        Some(colleague),
    )?;
    world.customer_unshare(Target::Meter(first_meters[0]))?;
    let leaver = world.create_customer(CustomerSpec::default())?;
    world.request_connection(leaver, Vec::new())?;
    world.answer_connection(leaver, true)?;
    let lp = world.share_property(leaver, None, None, Access::Read, Vec::new())?;
    world.answer_property_share(lp, true)?;
    let (lm, _) = world.share_meter(leaver, Some(lp), None, Access::Read, Vec::new())?;
    world.answer_meter_share(lm, true)?;
    world.customer_disconnect(leaver)?;
    world.transfer(properties_of[3][0], connected[0], false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_is_consistent_and_reproducible() {
        let mut a = World::new(42);
        populate(&mut a).unwrap();
        a.check_invariants().unwrap();
        let (conns, props, meters) = a.pending_counts();
        assert!(conns > 20, "{conns}");
        assert!(props >= 4 && meters >= 3, "{props} {meters}");
        // SHAREUPDATE, UNSHARE, DISCONNECT + 2 UNSHARE, TRANSFERPROPERTY
        assert_eq!(a.queue_len(), 6);
        let mut b = World::new(42);
        populate(&mut b).unwrap();
        assert_eq!(a.customer_ids(), b.customer_ids());
        assert_eq!(a.meter_ids(), b.meter_ids());
        assert!(a.customer_ids().iter().any(|id| *id > i64::from(i32::MAX)));
    }

    #[test]
    fn scenario_has_a_real_share_forward_and_a_shareupdate_by_someone_else() {
        let mut w = World::new(42);
        populate(&mut w).unwrap();
        let forwarded: Vec<_> = w
            .pending_properties_page(1)
            .properties
            .into_iter()
            .filter(|p| {
                p.share_audit.as_ref().and_then(|a| a.created_by_account_id) != Some(p.account_id)
            })
            .collect();
        assert_eq!(forwarded.len(), 1, "one forwarded property share");
        assert!(w.has_pending_connection(forwarded[0].account_id));
        assert!(!w.has_pending_connection(
            forwarded[0]
                .share_audit
                .as_ref()
                .unwrap()
                .created_by_account_id
                .unwrap()
        ));
        let (_, list) = w.read_notifications(false, true, None);
        let update = list
            .notifications
            .iter()
            .find(|n| n.notification_type_code == "SHAREUPDATE")
            .unwrap();
        assert_ne!(
            update.account_id.map(|a| a.to_string()),
            update.notification_created_by_account_id
        );
        assert_eq!(
            update.account_id,
            w.property_owner(update.property_id.unwrap())
        );
    }
}
