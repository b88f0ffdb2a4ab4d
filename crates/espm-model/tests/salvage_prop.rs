//! Properties of salvaging a notification list: one bad notification or a cut anywhere never
//! costs a good notification, and nothing is invented.

use espm_model::{parse_notifications_salvaging, to_xml, Notification, NotificationList};
use proptest::prelude::*;

fn list(n: usize) -> NotificationList {
    NotificationList {
        notifications: (0..n)
            .map(|i| Notification {
                notification_type_code: ["UNSHARE", "DISCONNECT", "SHAREUPDATE"][i % 3].into(),
                notification_id: 1000 + i as i64,
                description: format!("note {i} <&> é"),
                account_id: Some(7 + i as i64),
                ..Notification::default()
            })
            .collect(),
    }
}

proptest! {
    #[test]
    fn one_bad_notification_costs_only_itself(n in 1usize..40, k in 0usize..40) {
        let k = k % n;
        let good = list(n);
        let bad_id = 1000 + k as i64;
        let body = to_xml(&good).replace(
            &format!("<notificationId>{bad_id}</notificationId>"),
            "<notificationId>not-a-number</notificationId>",
        );
        let s = parse_notifications_salvaging(body.as_bytes()).unwrap();
        let expected: Vec<&Notification> =
            good.notifications.iter().filter(|n| n.notification_id != bad_id).collect();
        prop_assert_eq!(s.notifications.iter().collect::<Vec<_>>(), expected);
        prop_assert_eq!(s.bad.len(), 1);
        let fragment = std::str::from_utf8(&body.as_bytes()[s.bad[0].range.clone()]).unwrap();
        prop_assert!(fragment.contains("not-a-number"));
        prop_assert!(fragment.trim_start().starts_with("<notification>"));
    }

    #[test]
    fn a_cut_anywhere_keeps_every_complete_notification(n in 1usize..30, cut in 0.0f64..1.0) {
        let good = list(n);
        let body = to_xml(&good);
        let at = ((body.len() as f64) * cut) as usize;
        let at = (0..=at).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
        let cut_body = &body.as_bytes()[..at];
        let Ok(s) = parse_notifications_salvaging(cut_body) else {
            // Cut inside the prolog or the root tag: nothing to salvage, nothing complete lost.
            prop_assert!(body[..at].matches("</notification>").count() == 0);
            return Ok(());
        };
        // Every notification whose end tag survived the cut is kept; nothing else appears.
        let complete = body[..at].matches("</notification>").count();
        prop_assert_eq!(&s.notifications[..], &good.notifications[..complete]);
        if at < body.len() {
            prop_assert!(!s.bad.is_empty() || complete == n);
        }
    }
}
