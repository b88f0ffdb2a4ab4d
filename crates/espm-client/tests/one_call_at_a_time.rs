//! PM asks providers never to call one account concurrently: clones of a client (the poller, the
//! command API, the command topics) take turns, including while a streamed body is being read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use espm_client::{ClientConfig, PmClient, RetryPolicy};

#[derive(Default)]
struct Seen {
    now: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
}

async fn slow(State(seen): State<Arc<Seen>>) -> &'static str {
    let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most.fetch_max(now, Ordering::SeqCst);
    seen.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(40)).await;
    seen.now.fetch_sub(1, Ordering::SeqCst);
    "<notificationList/>"
}

#[tokio::test]
async fn clones_of_a_client_never_call_pm_at_the_same_time() {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/ws/notification/list", get(slow))
        .route("/ws/customer/list", get(slow))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cfg = ClientConfig::new(format!("http://{addr}/ws"), "u", "p");
    cfg.retry = RetryPolicy::none();
    let client = PmClient::new(cfg).unwrap();

    // A streamed body holds the turn until it is dropped.
    let stream = client.notifications_stream(false).await.unwrap();
    let blocked = {
        let c = client.clone();
        tokio::spawn(async move { c.notifications_raw(false).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !blocked.is_finished(),
        "a second call went out while a streamed body was still open"
    );
    drop(stream);
    blocked.await.unwrap().unwrap();

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.notifications_raw(false).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 10);
    assert_eq!(
        seen.most.load(Ordering::SeqCst),
        1,
        "PM saw concurrent calls from one account"
    );
}
