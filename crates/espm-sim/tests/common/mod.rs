//! Shared helpers: a running simulator, an authenticated client, xmllint validation.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use espm_model::{to_xml, Action, SharingResponse, TerminateSharingResponse};
use espm_sim::{SimConfig, SimServer};
use espm_testkit::SimControl;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const USER: &str = "sim_provider";
pub const PASS: &str = "sim_password";

pub struct Sim {
    pub server: SimServer,
    pub http: reqwest::Client,
    pub ctl: SimControl,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Sim {
    pub async fn start(scenario: bool) -> Sim {
        Self::start_seeded(scenario, 42).await
    }

    pub async fn start_seeded(scenario: bool, seed: u64) -> Sim {
        let cfg = SimConfig {
            scenario,
            seed,
            ..SimConfig::default()
        };
        let server = espm_testkit::sim::start_sim_with(cfg).await;
        Sim {
            ctl: SimControl::of(&server),
            server,
            http: reqwest::Client::new(),
        }
    }

    fn ws(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url(), path)
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Authenticated GET under /ws.
    pub async fn get(&self, path: &str) -> Reply {
        let resp = self
            .http
            .get(self.ws(path))
            .basic_auth(USER, Some(PASS))
            .send()
            .await
            .unwrap();
        Self::reply(resp).await
    }

    /// Authenticated POST of an XML body under /ws.
    pub async fn post_xml(&self, path: &str, xml: &str) -> Reply {
        let resp = self
            .http
            .post(self.ws(path))
            .basic_auth(USER, Some(PASS))
            .header("Content-Type", "application/xml")
            .body(xml.to_string())
            .send()
            .await
            .unwrap();
        Self::reply(resp).await
    }

    pub async fn accept(&self, path: &str) -> Reply {
        self.post_xml(
            path,
            &to_xml(&SharingResponse::new(Action::Accept, Some("ok"))),
        )
        .await
    }

    pub async fn reject(&self, path: &str) -> Reply {
        self.post_xml(path, &to_xml(&SharingResponse::new(Action::Reject, None)))
            .await
    }

    pub async fn terminate(&self, path: &str) -> Reply {
        self.post_xml(path, &to_xml(&TerminateSharingResponse::new(Some("done"))))
            .await
    }

    /// Control API call: (status, JSON).
    pub async fn ctl(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = match method {
            "GET" => Method::GET,
            "PUT" => Method::PUT,
            _ => Method::POST,
        };
        // GETs send no body, as before.
        let body = body.filter(|_| method != Method::GET);
        let r = self.ctl.request(method, path, body.as_ref()).await;
        (r.status, r.body)
    }

    /// Control API call that must succeed.
    pub async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.ctl(method, path, Some(body)).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    pub async fn new_customer(&self) -> i64 {
        self.ok("POST", "/customers", serde_json::json!({})).await["accountId"]
            .as_i64()
            .unwrap()
    }

    pub async fn connected_customer(&self) -> i64 {
        let a = self.new_customer().await;
        self.ok(
            "POST",
            "/connections",
            serde_json::json!({ "accountId": a }),
        )
        .await;
        let r = self.accept(&format!("/connect/account/{a}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        a
    }

    pub async fn notifications(&self, query: &str) -> espm_model::NotificationList {
        let r = self.get(&format!("/notification/list{query}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        espm_model::parse(r.body.as_bytes()).unwrap()
    }

    pub async fn set_faults(&self, faults: Value) {
        self.ok("PUT", "/faults", faults).await;
    }
}

pub fn xsd(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/xsd")
        .join(rel)
        .canonicalize()
        .unwrap()
}

/// Validate with xmllint (libxml2-utils, installed by tests/run.sh).
pub fn assert_valid(xml: &str, schema: &str) {
    let dir = std::env::temp_dir().join(format!(
        "espm-sim-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("doc.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd(schema))
        .arg(&file)
        .output()
        .expect("xmllint is required: run `bash tests/run.sh` or apt-get install libxml2-utils");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{xml}\nfails {schema}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const AUTH_XSD: &str = "authorization/authorization.xsd";
pub const RESPONSE_XSD: &str = "response/response.xsd";
pub const CUSTOMER_XSD: &str = "account/customer.xsd";
pub const FIELDS_XSD: &str = "common/customField.xsd";

/// Assert a PM error response with this status and error number, valid against response.xsd.
pub fn assert_pm_error(r: &Reply, status: u16, number: Option<&str>) -> espm_model::Response {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_valid(&r.body, RESPONSE_XSD);
    let doc: espm_model::Response = espm_model::parse(r.body.as_bytes()).unwrap();
    assert_eq!(doc.status, espm_model::ResponseStatus::Error);
    if let Some(n) = number {
        assert_eq!(
            doc.error_list()[0].error_number.as_deref(),
            Some(n),
            "{}",
            r.body
        );
    }
    doc
}
