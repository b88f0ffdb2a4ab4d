//! The Helm chart's values, as types: `charts/espm-bridge/values.schema.json` is generated from
//! them, and `config` is the bridge configuration itself, so the chart cannot drift from the binary.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::BridgeConfig;

/// `values.yaml` of `charts/espm-bridge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "espm-bridge Helm chart values")]
pub struct HelmValues {
    /// Container image.
    pub image: ImageValues,
    /// Pull secrets for a private registry (`[{name: regcred}]`).
    #[serde(default)]
    pub image_pull_secrets: Vec<Map<String, Value>>,
    /// Replaces the chart name in resource names.
    #[serde(default)]
    pub name_override: String,
    /// Replaces the full resource name (release-chart).
    #[serde(default)]
    pub fullname_override: String,
    /// Service account of the pod.
    #[serde(default)]
    pub service_account: ServiceAccountValues,
    /// Extra pod annotations.
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// Extra pod labels.
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    /// Labels added to every resource the chart creates (and to the pod).
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// `RUST_LOG` of the container (tracing filter), e.g. `info` or `info,espm_poller=debug`.
    pub rust_log: String,
    /// Extra environment variables (Kubernetes `EnvVar` objects), e.g. `ESPM_BRIDGE__...`
    /// overrides or variables named by `password_env`/`secret_env` taken from other secrets.
    #[serde(default)]
    pub extra_env: Vec<Map<String, Value>>,
    /// Container resources (requests/limits).
    #[serde(default)]
    pub resources: Map<String, Value>,
    /// The journal volume (a PVC from the StatefulSet's volumeClaimTemplates).
    pub persistence: PersistenceValues,
    /// The metrics Service.
    pub service: ServiceValues,
    /// Prometheus Operator ServiceMonitor.
    #[serde(default)]
    pub service_monitor: ServiceMonitorValues,
    /// Name of an existing Secret whose keys are mounted as files under
    /// `/run/secrets/espm-bridge`; when set, `secrets` is ignored.
    #[serde(default)]
    pub existing_secret: String,
    /// Secret files to create: file name -> content, mounted under `/run/secrets/espm-bridge`
    /// (refer to them with `password_file = "/run/secrets/espm-bridge/<name>"`). Prefer
    /// `existingSecret` in production so secrets stay out of values files.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Pod-level securityContext.
    #[serde(default)]
    pub pod_security_context: Map<String, Value>,
    /// Container-level securityContext.
    #[serde(default)]
    pub security_context: Map<String, Value>,
    /// How long the bridge waits on SIGTERM for pollers and in-flight deliveries (`run --grace`).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u32,
    /// The pod's grace period before Kubernetes kills it. `0` (the default) derives it:
    /// `shutdownGraceSeconds` plus the longest `config.accounts[].request_timeout` (a `clear=true`
    /// in flight must be answered and journalled) plus 10 s. A value set here that is shorter than
    /// that fails the render.
    #[serde(default)]
    pub termination_grace_period_seconds: u32,
    /// The container's liveness probe (`/healthz`: the process answers).
    #[serde(default)]
    pub liveness_probe: Map<String, Value>,
    /// The container's readiness probe (`/readyz`: journal writable, configuration loaded; not
    /// PM's or a sink's health, so `helm install --wait` never hangs on a PM outage).
    #[serde(default)]
    pub readiness_probe: Map<String, Value>,
    /// The container's startup probe; the other probes start once it passed.
    #[serde(default)]
    pub startup_probe: Map<String, Value>,
    /// Extra volumes of the pod (Kubernetes `Volume` objects).
    #[serde(default)]
    pub extra_volumes: Vec<Map<String, Value>>,
    /// Extra volume mounts of the container (Kubernetes `VolumeMount` objects).
    #[serde(default)]
    pub extra_volume_mounts: Vec<Map<String, Value>>,
    /// Init containers of the pod (Kubernetes `Container` objects).
    #[serde(default)]
    pub init_containers: Vec<Map<String, Value>>,
    /// PriorityClass of the pod; empty for the cluster default.
    #[serde(default)]
    pub pod_priority_class_name: String,
    /// Node selector.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default)]
    pub tolerations: Vec<Map<String, Value>>,
    /// Affinity.
    #[serde(default)]
    pub affinity: Map<String, Value>,
    /// Values shared with parent charts; unused here, allowed so the chart works as a subchart.
    #[serde(default)]
    pub global: Map<String, Value>,
    /// The espm-bridge configuration, rendered with `toToml` to `/etc/espm-bridge/config.toml`.
    /// Same keys as the TOML file (see config/REFERENCE.md). Keep `journal.path` under
    /// `/var/lib/espm-bridge` (the persistent volume) and secrets under
    /// `/run/secrets/espm-bridge`.
    pub config: BridgeConfig,
}

fn default_shutdown_grace() -> u32 {
    20
}

/// Container image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageValues {
    /// Image repository.
    pub repository: String,
    /// Image tag; empty means the chart's appVersion.
    #[serde(default)]
    pub tag: String,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default = "default_pull_policy")]
    #[schemars(regex(pattern = r"^(Always|IfNotPresent|Never)$"))]
    pub pull_policy: String,
}

fn default_pull_policy() -> String {
    "IfNotPresent".to_string()
}

/// Service account of the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccountValues {
    /// Create a service account.
    #[serde(default)]
    pub create: bool,
    /// Name to use; empty means the full name when `create`, else `default`.
    #[serde(default)]
    pub name: String,
    /// Annotations of a created service account.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The journal volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PersistenceValues {
    /// Use a PersistentVolumeClaim. `false` uses an emptyDir: the journal, and with it every
    /// drained but undelivered notification, is lost when the pod goes away.
    pub enabled: bool,
    /// Requested size, e.g. `5Gi`.
    pub size: String,
    /// StorageClass; empty uses the cluster default.
    #[serde(default)]
    pub storage_class: String,
    /// Access modes of the claim.
    #[serde(default = "default_access_modes")]
    pub access_modes: Vec<String>,
    /// Annotations of the claim.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Use this existing PersistentVolumeClaim instead of the StatefulSet's claim template.
    #[serde(default)]
    pub existing_claim: String,
}

fn default_access_modes() -> Vec<String> {
    vec!["ReadWriteOnce".to_string()]
}

/// The metrics Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceValues {
    /// Service type.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Service port of `/metrics`, `/healthz` and `/readyz` (the container listens on the port of
    /// `config.metrics.listen`).
    pub port: u16,
    /// Service annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Prometheus Operator ServiceMonitor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorValues {
    /// Create a ServiceMonitor (needs the monitoring.coreos.com CRDs).
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval, e.g. `30s`; empty uses Prometheus' default.
    #[serde(default)]
    pub interval: String,
    /// Scrape timeout; empty uses Prometheus' default.
    #[serde(default)]
    pub scrape_timeout: String,
    /// Extra labels, e.g. the `release` label your Prometheus selects on.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
