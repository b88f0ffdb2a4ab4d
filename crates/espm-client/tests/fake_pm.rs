//! The client against an in-test fake PM (axum on 127.0.0.1:0, plus raw TCP servers for broken
//! connections): every error kind, retries, pagination, auth and bodies.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use espm_client::{
    Action, ClientConfig, ClientError, CustomFieldTarget, NewCustomer, PendingKind, PmClient,
    RetryPolicy,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const USER: &str = "provider_user";
const PASS: &str = "s3cr3t-P@ss";

const OK: &str =
    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><response status="Ok"/>"#;
const EMPTY_NOTIFICATIONS: &str = "<notificationList/>";
const ONE_NOTIFICATION: &str = "<notificationList><notification><notificationTypeCode>UNSHARE</notificationTypeCode><notificationId>8833843022</notificationId><description>x</description></notification></notificationList>";
const HTML: &str = "<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>\n<body><h1>Portfolio Manager is down for scheduled maintenance</h1></body></html>";

fn pm_error(number: &str, text: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><response status="Error"><errors><error errorNumber="{number}" errorDescription="{text}"/></errors></response>"#
    )
}

#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Option<Duration>,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/xml".into())],
        body: body.into(),
        delay: None,
    }
}

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: String,
    at: Instant,
}

#[derive(Default)]
struct FakeState {
    /// Consumed first, in order.
    queue: VecDeque<Reply>,
    /// Then a fixed reply per "path?query".
    by_path: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    addr: SocketAddr,
}

async fn handle(
    State(st): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let r = {
        let mut s = st.lock().unwrap();
        s.seen.push(Seen {
            method: method.to_string(),
            path_and_query: pq.clone(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        });
        match s.queue.pop_front() {
            Some(r) => r,
            None => s
                .by_path
                .get(&pq)
                .cloned()
                .unwrap_or_else(|| reply(404, pm_error("-200", "no route in the fake"))),
        }
    };
    if let Some(d) = r.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = (StatusCode::from_u16(r.status).unwrap(), r.body).into_response();
    for (k, v) in r.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

impl Fake {
    async fn start(queue: Vec<Reply>) -> Fake {
        let state = Arc::new(Mutex::new(FakeState {
            queue: queue.into(),
            ..FakeState::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fake { state, addr }
    }

    fn route(&self, path_and_query: &str, r: Reply) {
        self.state
            .lock()
            .unwrap()
            .by_path
            .insert(path_and_query.to_string(), r);
    }

    fn base(&self) -> String {
        format!("http://{}/ws", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn client(&self, retry: RetryPolicy) -> PmClient {
        client_for(&self.base(), retry)
    }
}

fn client_for(base: &str, retry: RetryPolicy) -> PmClient {
    let mut cfg = ClientConfig::new(base, USER, PASS);
    cfg.retry = retry;
    cfg.timeout = Duration::from_secs(10);
    cfg.user_agent = "espm-client-test/1".into();
    PmClient::new(cfg).unwrap()
}

/// Fast retries for tests: waits are milliseconds unless PM's Retry-After says otherwise.
fn fast(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn ok_read_sends_basic_auth_accept_and_user_agent() {
    let fake = Fake::start(vec![reply(200, ONE_NOTIFICATION)]).await;
    let list = fake.client(fast(3)).notifications(false).await.unwrap();
    assert_eq!(list.notifications.len(), 1);
    assert_eq!(list.notifications[0].notification_id, 8_833_843_022);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path_and_query, "/ws/notification/list?clear=false");
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );
    assert_eq!(seen[0].headers["authorization"], want.as_str());
    assert_eq!(seen[0].headers["user-agent"], "espm-client-test/1");
    assert_eq!(seen[0].headers["accept"], "application/xml");
}

#[tokio::test]
async fn raw_read_returns_exact_bytes_unparsed() {
    // Not even XML: the raw call must still hand the 2xx bytes back for journaling.
    let body = "<notificationList><notification><notif";
    let fake = Fake::start(vec![reply(200, body)]).await;
    let raw = fake.client(fast(3)).notifications_raw(true).await.unwrap();
    assert_eq!(raw.status, 200);
    assert_eq!(&raw.bytes[..], body.as_bytes());
    assert_eq!(raw.content_type.as_deref(), Some("application/xml"));
    assert!(
        raw.url.ends_with("/ws/notification/list?clear=true"),
        "{}",
        raw.url
    );
}

#[tokio::test]
async fn error_400_minus_100_is_http_with_details_not_resolved() {
    let fake = Fake::start(vec![reply(
        400,
        pm_error("-100", "cvc-complex-type.2.4.a: Invalid content"),
    )])
    .await;
    let err = fake
        .client(fast(5))
        .answer(PendingKind::PropertyShare, 5, Action::Accept, None)
        .await
        .unwrap_err();
    match &err {
        ClientError::Http { status, errors, .. } => {
            assert_eq!(*status, 400);
            assert_eq!(errors[0].error_number.as_deref(), Some("-100"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_already_resolved());
    assert!(!err.is_retryable());
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn error_400_minus_200_already_resolved_is_recognised() {
    let fake = Fake::start(vec![reply(
        400,
        pm_error(
            "-200",
            "The pending request doesn't exist or has been fulfilled",
        ),
    )])
    .await;
    let err = fake
        .client(fast(5))
        .answer(PendingKind::Connection, 77, Action::Reject, Some("no"))
        .await
        .unwrap_err();
    assert!(err.is_already_resolved(), "{err}");
    assert_eq!(err.status(), Some(400));
    assert_eq!(fake.seen().len(), 1);

    // Another -200 is not "already resolved".
    let fake = Fake::start(vec![reply(
        400,
        pm_error("-200", "You are not connected to this account"),
    )])
    .await;
    let err = fake
        .client(fast(5))
        .disconnect(77, false, None)
        .await
        .unwrap_err();
    assert!(!err.is_already_resolved());
    assert!(err.is_not_connected());
}

#[tokio::test]
async fn other_4xx_are_never_retried() {
    for status in [400u16, 401, 403, 404, 405, 406, 409, 415] {
        let fake = Fake::start(vec![
            reply(status, pm_error("-200", "nope")),
            reply(200, EMPTY_NOTIFICATIONS),
        ])
        .await;
        let err = fake.client(fast(5)).notifications(false).await.unwrap_err();
        assert_eq!(err.status(), Some(status), "{err}");
        assert!(!err.is_retryable());
        if status == 403 {
            assert!(matches!(err, ClientError::AccessDenied { .. }), "{err:?}");
        } else {
            assert!(matches!(err, ClientError::Http { .. }));
        }
        assert_eq!(fake.seen().len(), 1, "status {status} was retried");
    }
}

#[tokio::test]
async fn status_401_403_404_415_are_typed() {
    // 401 typically comes with an empty body, 403 with PM's "Access Denied".
    let fake = Fake::start(vec![reply(401, "")]).await;
    let err = fake.client(fast(0)).customers().await.unwrap_err();
    assert!(matches!(err, ClientError::Http { status: 401, ref errors, .. } if errors.is_empty()));

    let fake = Fake::start(vec![reply(403, pm_error("-200", "Access Denied"))]).await;
    let err = fake.client(fast(0)).customer(9).await.unwrap_err();
    assert!(err.is_access_denied());
    assert_eq!(
        err.pm_errors()[0].error_description.as_deref(),
        Some("Access Denied")
    );

    let fake = Fake::start(vec![reply(404, pm_error("-200", "Not found"))]).await;
    let err = fake
        .client(fast(0))
        .custom_fields(CustomFieldTarget::Meter(3))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));

    let fake = Fake::start(vec![reply(415, "")]).await;
    let err = fake
        .client(fast(0))
        .unshare_meter(3, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(415));
}

#[tokio::test]
async fn status_429_honours_retry_after_then_succeeds() {
    let mut limited = reply(429, pm_error("-200", "Too many requests"));
    limited.headers.push(("retry-after", "1".into()));
    let fake = Fake::start(vec![limited, reply(200, ONE_NOTIFICATION)]).await;
    // The computed backoff is at most 50 ms: only Retry-After can make the gap a second.
    let list = fake.client(fast(3)).notifications(true).await.unwrap();
    assert_eq!(list.notifications.len(), 1);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After not honoured: {gap:?}"
    );
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let mut limited = reply(503, "");
    // HTTP dates have 1 s resolution: 3 s ahead is at least 2 s of wait.
    let when = std::time::SystemTime::now() + Duration::from_secs(3);
    limited.headers.push(("retry-after", httpdate_fmt(when)));
    let fake = Fake::start(vec![limited, reply(200, EMPTY_NOTIFICATIONS)]).await;
    fake.client(fast(3)).notifications(false).await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].at.duration_since(seen[0].at) >= Duration::from_secs(2));
}

fn httpdate_fmt(t: std::time::SystemTime) -> String {
    // RFC 7231 IMF-fixdate, computed by hand to avoid another dev-dependency.
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // civil-from-days (Howard Hinnant)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{weekday}, {d:02} {month} {y} {h:02}:{m:02}:{s:02} GMT")
}

#[tokio::test]
async fn status_500_and_502_html_pages_are_not_xml_with_snippet() {
    for status in [500u16, 502] {
        let mut html = reply(status, HTML);
        html.headers = vec![("content-type", "text/html".into())];
        let fake = Fake::start(vec![html.clone(), html.clone(), html]).await;
        let err = fake.client(fast(2)).notifications(false).await.unwrap_err();
        match &err {
            ClientError::NotXml {
                status: s, snippet, ..
            } => {
                assert_eq!(*s, status);
                assert!(
                    snippet.contains("down for scheduled maintenance"),
                    "{snippet}"
                );
                assert!(snippet.len() <= 200 * 4);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.is_retryable());
        // 1 attempt + 2 retries.
        assert_eq!(fake.seen().len(), 3);
    }
}

#[tokio::test]
async fn status_503_then_success_is_retried() {
    let fake = Fake::start(vec![reply(503, ""), reply(200, ONE_NOTIFICATION)]).await;
    let list = fake.client(fast(3)).notifications(false).await.unwrap();
    assert_eq!(list.notifications.len(), 1);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn html_on_200_is_not_xml() {
    let fake = Fake::start(vec![reply(200, HTML)]).await;
    let err = fake.client(fast(3)).notifications(false).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NotXml { status: 200, .. }),
        "{err:?}"
    );
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn truncated_xml_is_an_xml_error_and_not_retried() {
    let fake = Fake::start(vec![reply(
        200,
        "<notificationList><notification><notificationTypeCode>UNSHARE</notificationTypeCode><notificationId>12",
    )])
    .await;
    let err = fake.client(fast(3)).notifications(false).await.unwrap_err();
    assert!(matches!(err, ClientError::Xml(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn timeout_is_timeout() {
    let mut slow = reply(200, EMPTY_NOTIFICATIONS);
    slow.delay = Some(Duration::from_secs(3));
    let fake = Fake::start(vec![slow]).await;
    let mut cfg = ClientConfig::new(fake.base(), USER, PASS);
    cfg.timeout = Duration::from_millis(200);
    cfg.retry = RetryPolicy::none();
    let err = PmClient::new(cfg)
        .unwrap()
        .notifications(false)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
}

/// A raw TCP "server": for each accepted connection, the next action.
enum Conn {
    /// Read the request, then close without answering.
    Drop,
    /// Read the request, then send these bytes and close.
    Send(&'static str),
}

async fn raw_server(script: Vec<Conn>) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0usize));
    let c2 = count.clone();
    tokio::spawn(async move {
        for action in script {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            *c2.lock().unwrap() += 1;
            let mut buf = vec![0u8; 8192];
            let _ = sock.read(&mut buf).await;
            if let Conn::Send(bytes) = action {
                let _ = sock.write_all(bytes.as_bytes()).await;
                let _ = sock.flush().await;
            }
            drop(sock);
        }
    });
    (addr, count)
}

#[tokio::test]
async fn dropped_connection_is_transport_and_retried() {
    let (addr, count) = raw_server(vec![Conn::Drop]).await;
    let err = client_for(&format!("http://{addr}/ws"), RetryPolicy::none())
        .notifications(false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Transport { connect: false, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(*count.lock().unwrap(), 1);

    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: 19\r\nconnection: close\r\n\r\n<notificationList/>";
    let (addr, count) = raw_server(vec![Conn::Drop, Conn::Send(ok)]).await;
    let list = client_for(&format!("http://{addr}/ws"), fast(3))
        .notifications(false)
        .await
        .unwrap();
    assert!(list.notifications.is_empty());
    assert_eq!(*count.lock().unwrap(), 2);
}

#[tokio::test]
async fn body_cut_midway_is_transport_with_partial_bytes() {
    let cut = "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: 500\r\nconnection: close\r\n\r\n<notificationList><notification><notificationTypeCode>UNSHARE";
    let (addr, _) = raw_server(vec![Conn::Send(cut)]).await;
    let err = client_for(&format!("http://{addr}/ws"), RetryPolicy::none())
        .notifications_raw(false)
        .await
        .unwrap_err();
    let partial = err.partial_body().cloned();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert_eq!(
        partial.as_deref(),
        Some(&b"<notificationList><notification><notificationTypeCode>UNSHARE"[..])
    );
}

#[tokio::test]
async fn refused_connection_is_transport_connect() {
    // Bind then drop a listener: its port is (almost certainly) closed now.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let err = client_for(&format!("http://{addr}/ws"), RetryPolicy::none())
        .customers()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Transport { connect: true, .. }),
        "{err:?}"
    );
}

fn page(ids: &[i64], next: Option<&str>) -> Reply {
    let mut s = String::from("<pendingList>");
    for id in ids {
        s.push_str(&format!(
            "<property><propertyId>{id}</propertyId><accessLevel>Read</accessLevel><accountId>1</accountId><username>u</username><propertyInfo><name>P{id}</name></propertyInfo></property>"
        ));
    }
    if let Some(n) = next {
        s.push_str(&format!(
            r#"<links><link linkDescription="next page" link="{n}" httpMethod="GET"/></links>"#
        ));
    }
    s.push_str("</pendingList>");
    reply(200, s)
}

#[tokio::test]
async fn pagination_follows_next_page_links_across_three_pages() {
    let fake = Fake::start(vec![]).await;
    fake.route(
        "/ws/share/property/pending/list",
        page(&[1, 2], Some("/share/property/pending/list?page=2")),
    );
    fake.route(
        "/ws/share/property/pending/list?page=2",
        page(
            &[3, 8_833_843_022],
            Some("/share/property/pending/list?page=3"),
        ),
    );
    fake.route("/ws/share/property/pending/list?page=3", page(&[5], None));
    let pages = fake
        .client(fast(0))
        .pending_all(PendingKind::PropertyShare)
        .await
        .unwrap();
    let ids: Vec<i64> = pages
        .iter()
        .flat_map(|p| p.properties.iter().map(|x| x.property_id))
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 8_833_843_022, 5]);
    let paths: Vec<String> = fake.seen().into_iter().map(|s| s.path_and_query).collect();
    assert_eq!(
        paths,
        vec![
            "/ws/share/property/pending/list",
            "/ws/share/property/pending/list?page=2",
            "/ws/share/property/pending/list?page=3",
        ]
    );
}

#[tokio::test]
async fn pagination_link_loop_is_a_clear_error() {
    let fake = Fake::start(vec![]).await;
    fake.route(
        "/ws/share/meter/pending/list",
        page(&[1], Some("/share/meter/pending/list?page=2")),
    );
    fake.route(
        "/ws/share/meter/pending/list?page=2",
        page(&[2], Some("/share/meter/pending/list?page=2")),
    );
    let items: Vec<_> = fake
        .client(fast(0))
        .pending_stream(PendingKind::MeterShare)
        .collect()
        .await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items[0].is_ok() && items[1].is_ok());
    match &items[2] {
        Err(ClientError::Pagination(msg)) => assert!(msg.contains("loop"), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fake.seen().len(), 2);
    let err = fake
        .client(fast(0))
        .pending_all(PendingKind::MeterShare)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Pagination(_)));
}

#[tokio::test]
async fn pagination_error_mid_stream_ends_the_stream() {
    let fake = Fake::start(vec![]).await;
    fake.route(
        "/ws/connect/account/pending/list",
        page(&[1], Some("/connect/account/pending/list?page=2")),
    );
    fake.route(
        "/ws/connect/account/pending/list?page=2",
        reply(403, pm_error("-200", "Access Denied")),
    );
    let items: Vec<_> = fake
        .client(fast(0))
        .pending_stream(PendingKind::Connection)
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].as_ref().unwrap_err().status(), Some(403));
}

#[tokio::test]
async fn post_bodies_are_xml_and_omit_empty_notes() {
    let fake = Fake::start(vec![]).await;
    for p in [
        "/ws/share/meter/42",
        "/ws/connect/account/8833843022",
        "/ws/disconnect/account/7?keepShares=true",
        "/ws/disconnect/account/7?keepShares=false",
        "/ws/unshare/property/9",
        "/ws/unshare/meter/10",
    ] {
        fake.route(p, reply(200, OK));
    }
    let c = fake.client(fast(0));
    c.answer(PendingKind::MeterShare, 42, Action::Accept, Some("  "))
        .await
        .unwrap();
    c.answer(
        PendingKind::Connection,
        8_833_843_022,
        Action::Reject,
        Some("a < b & \"c\""),
    )
    .await
    .unwrap();
    c.disconnect(7, true, None).await.unwrap();
    c.disconnect(7, false, Some("bye")).await.unwrap();
    c.unshare_property(9, Some("")).await.unwrap();
    c.unshare_meter(10, Some("gone")).await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.headers["content-type"], "application/xml");
        assert!(s.headers.contains_key("authorization"));
    }
    assert!(
        seen[0]
            .body
            .contains("<sharingResponse><action>Accept</action></sharingResponse>"),
        "{}",
        seen[0].body
    );
    assert!(!seen[0].body.contains("<note"));
    let answer: espm_model::SharingResponse = espm_model::parse(seen[1].body.as_bytes()).unwrap();
    assert_eq!(answer.action, Action::Reject);
    assert_eq!(answer.note.as_deref(), Some("a < b & \"c\""));
    assert_eq!(
        seen[2].path_and_query,
        "/ws/disconnect/account/7?keepShares=true"
    );
    assert!(seen[2].body.contains("terminateSharingResponse") && !seen[2].body.contains("<note"));
    assert!(seen[3].body.contains("<note>bye</note>"));
    assert!(!seen[4].body.contains("<note"));
    assert!(seen[5].body.contains("<note>gone</note>"));
}

#[tokio::test]
async fn ok_status_error_body_on_post_is_an_error() {
    let fake = Fake::start(vec![reply(200, pm_error("-200", "Something odd"))]).await;
    let err = fake
        .client(fast(0))
        .unshare_meter(1, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 200, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn customers_customer_custom_fields_and_create() {
    let fake = Fake::start(vec![]).await;
    fake.route(
        "/ws/customer/list",
        reply(
            200,
            r#"<response status="Ok"><links><link id="143" hint="Org &amp; Co" httpMethod="GET" link="/customer/143" linkDescription="This is the GET url for this Customer."/><link httpMethod="GET" link="/customer/8833843022"/></links></response>"#,
        ),
    );
    fake.route(
        "/ws/customer/143",
        reply(
            200,
            "<customer><username>jane</username><accountInfo><firstName>Jane</firstName></accountInfo></customer>",
        ),
    );
    fake.route(
        "/ws/property/5/customFieldList",
        reply(
            200,
            r#"<customFieldList><customField name="Customer Number">D987</customField></customFieldList>"#,
        ),
    );
    fake.route(
        "/ws/customer",
        reply(
            201,
            r#"<response status="Ok"><id>9000000001</id><links><link httpMethod="GET" link="/customer/9000000001" linkDescription="x"/></links></response>"#,
        ),
    );
    let c = fake.client(fast(0));
    let list = c.customers().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, 143);
    assert_eq!(list[0].hint.as_deref(), Some("Org & Co"));
    assert_eq!(list[1].id, 8_833_843_022);
    assert_eq!(list[1].hint, None);
    let cust = c.customer(143).await.unwrap();
    assert_eq!(cust.username.as_deref(), Some("jane"));
    let fields = c
        .custom_fields(CustomFieldTarget::Property(5))
        .await
        .unwrap();
    assert_eq!(fields[0].name, "Customer Number");
    assert_eq!(fields[0].value, "D987");
    let nc = NewCustomer {
        username: "newco".into(),
        password: "pw".into(),
        ..NewCustomer::default()
    };
    assert_eq!(c.create_customer(&nc).await.unwrap(), 9_000_000_001);
    let seen = fake.seen();
    let post = seen.last().unwrap();
    assert_eq!(post.method, "POST");
    assert!(
        post.body.contains("<account><username>newco</username>"),
        "{}",
        post.body
    );
}

#[tokio::test]
async fn create_customer_is_not_retried_when_pm_may_have_acted() {
    let fake = Fake::start(vec![reply(500, ""), reply(200, OK)]).await;
    let err = fake
        .client(fast(5))
        .create_customer(&NewCustomer::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(fake.seen().len(), 1);

    // A 503 means PM did not act: retried.
    let fake = Fake::start(vec![
        reply(503, ""),
        reply(201, r#"<response status="Ok"><id>5</id></response>"#),
    ])
    .await;
    let id = fake
        .client(fast(5))
        .create_customer(&NewCustomer::default())
        .await
        .unwrap();
    assert_eq!(id, 5);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn retries_stop_at_max_retries() {
    let fake = Fake::start(vec![reply(504, ""); 10]).await;
    let err = fake.client(fast(3)).notifications(false).await.unwrap_err();
    assert_eq!(err.status(), Some(504));
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn retry_after_beyond_the_budget_gives_up_with_retry_after() {
    let mut limited = reply(429, "");
    limited.headers.push(("retry-after", "3600".into()));
    let fake = Fake::start(vec![limited, reply(200, EMPTY_NOTIFICATIONS)]).await;
    let err = fake.client(fast(3)).notifications(false).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn an_absurd_retry_after_neither_panics_nor_waits() {
    let mut limited = reply(429, "");
    limited.headers.push(("retry-after", u64::MAX.to_string()));
    let fake = Fake::start(vec![limited, reply(200, EMPTY_NOTIFICATIONS)]).await;
    let err = fake.client(fast(3)).notifications(false).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(fake.seen().len(), 1);
}

#[test]
fn retries_are_counted_in_the_metric() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        // A current-thread runtime keeps every poll on this thread, where the local recorder is.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let fake = Fake::start(vec![
                reply(503, ""),
                reply(502, HTML),
                reply(200, EMPTY_NOTIFICATIONS),
            ])
            .await;
            fake.client(fast(5)).notifications(true).await.unwrap();
        });
    });
    let mut found = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if key.name() != "espm_bridge_pm_retries_total" {
            continue;
        }
        let labels: HashMap<_, _> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        assert_eq!(labels["endpoint"], "notification/list");
        if let DebugValue::Counter(n) = value {
            found.insert(labels["reason"].clone(), n);
        }
    }
    assert_eq!(found.get("http_503"), Some(&1), "{found:?}");
    assert_eq!(found.get("http_502"), Some(&1), "{found:?}");
}

#[tokio::test]
async fn password_never_in_debug_or_errors() {
    let cfg = ClientConfig::new("http://127.0.0.1:1/ws", USER, PASS);
    let cfg_debug = format!("{cfg:?}");
    assert!(!cfg_debug.contains(PASS), "{cfg_debug}");
    assert!(cfg_debug.contains("***"));
    assert_eq!(format!("{}", cfg.password), "***");
    assert_eq!(format!("{:?}", cfg.password), "***");
    assert_eq!(cfg.password.expose(), PASS);
    let client = PmClient::new(cfg).unwrap();
    let client_debug = format!("{client:?} {client:#?}");
    assert!(!client_debug.contains(PASS), "{client_debug}");
    assert!(client_debug.contains(USER));

    let fake = Fake::start(vec![reply(401, "")]).await;
    let err = fake.client(fast(0)).customers().await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(PASS));
}

#[tokio::test]
async fn a_body_cut_midway_is_never_retried_so_its_bytes_reach_the_caller() {
    let cut = "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: 500\r\nconnection: close\r\n\r\n<notificationList><notification><notificationTypeCode>UNSHARE";
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: 19\r\nconnection: close\r\n\r\n<notificationList/>";
    let (addr, count) = raw_server(vec![Conn::Send(cut), Conn::Send(ok)]).await;
    // Retries on (the bridge's default): a retry would answer with the empty rest of PM's queue.
    let err = client_for(&format!("http://{addr}/ws"), fast(3))
        .notifications_raw(true)
        .await
        .unwrap_err();
    assert_eq!(
        *count.lock().unwrap(),
        1,
        "a half-received clear=true body must not be retried"
    );
    assert!(
        err.partial_body()
            .is_some_and(|b| b.starts_with(b"<notificationList>")),
        "{err:?}"
    );
}

#[tokio::test]
async fn create_customer_reads_the_id_from_a_link_only_response() {
    // PM's documented example of a create answer: a link to the customer, no <id>.
    let link_only = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><response status="Ok"><links><link httpMethod="GET" link="/customer/8833843022" linkDescription="This is the GET url for this Customer."/></links></response>"#;
    let fake = Fake::start(vec![
        reply(201, link_only),
        reply(
            201,
            r#"<response status="Ok"><links><link link="/somewhere/else"/></links></response>"#,
        ),
    ])
    .await;
    let c = fake.client(fast(0));
    assert_eq!(
        c.create_customer(&NewCustomer::default()).await.unwrap(),
        8_833_843_022
    );
    let err = c
        .create_customer(&NewCustomer::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Xml(_)), "{err:?}");
}

#[tokio::test]
async fn property_reads_pm_property_and_maps_refusals() {
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/responses/property.xml"
    ))
    .unwrap();
    let fake = Fake::start(vec![
        reply(200, body),
        reply(403, pm_error("-200", "Access Denied")),
    ])
    .await;
    let c = fake.client(fast(0));
    let p = c.property(5_000_206).await.unwrap();
    assert_eq!(p.name.as_deref(), Some("Harbor Office Suite 4"));
    assert_eq!(fake.seen()[0].path_and_query, "/ws/property/5000206");
    let err = c.property(5_000_206).await.unwrap_err();
    assert!(err.is_access_denied(), "{err:?}");
}
