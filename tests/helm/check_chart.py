#!/usr/bin/env python3
"""Lint charts/espm-bridge with Helm (helm-python-sdk: Helm v4 as a library), render it with several
value sets and validate every rendered manifest with kubernetes-validate (strict: unknown fields are
errors) for several Kubernetes minor versions. Also checks what the chart promises: probes,
extras, labels, the derived grace period and the render failures for impossible values.

Run by `cargo test -p espm-config --test chart` (chart_renders_with_helm_and_validates); exits
non-zero with every failure listed. Needs the packages of tests/requirements.txt
(`bash tests/setup.sh` installs them).
"""

import copy
import os
import sys

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - the message is the point
    sys.exit(f"check_chart.py: {e}: run `bash tests/setup.sh` (pip install -r tests/requirements.txt)")

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "espm-bridge")
# The oldest and newest minors we promise; the chart uses nothing outside these APIs.
KUBE_VERSIONS = ["1.29.0", "1.34.0"]
# CRDs kubernetes-validate has no schema for; checked structurally below instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL: {msg}", file=sys.stderr)


def merged(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


# The chart's own default config names /run/secrets/espm-bridge/pm-password, so every installable
# value set provides it.
BASE = {"secrets": {"pm-password": "not-a-real-password"}}

ACCOUNT = {
    "name": "live",
    "environment": "live",
    "username": "provider",
    "password_file": "/run/secrets/espm-bridge/pm-password",
}

VALUE_SETS = {
    "minimal": BASE,
    "existing-secret": {"existingSecret": "pm-credentials"},
    "no-persistence": merged(BASE, {"persistence": {"enabled": False}}),
    "existing-claim": merged(BASE, {"persistence": {"existingClaim": "journal-pvc"}}),
    "everything": merged(
        BASE,
        {
            "serviceAccount": {"create": True, "annotations": {"example.com/role": "bridge"}},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "commonLabels": {"team": "energy", "cost-center": "42"},
            "podLabels": {"tier": "backend"},
            "podAnnotations": {"example.com/scrape": "true"},
            "podPriorityClassName": "high-priority",
            "imagePullSecrets": [{"name": "regcred"}],
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
            "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
            "initContainers": [
                {"name": "wait", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}
            ],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 30},
            "readinessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 7},
            "startupProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "failureThreshold": 3},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "bridge", "effect": "NoSchedule"}],
            "secrets": {"pm-password": "x", "hook-secret": "whsec_" + "A" * 32, "kafka-pass": "y"},
            "shutdownGraceSeconds": 40,
            "config": {
                "accounts": [
                    dict(ACCOUNT, request_timeout="1m 30s"),
                    dict(ACCOUNT, name="test", environment="test", username="other", request_timeout="45s"),
                ],
                "sinks": [
                    {
                        "name": "events",
                        "type": "kafka",
                        "brokers": "kafka:9092",
                        "topic": "espm.{type}",
                        "secret_files": {"sasl.password": "/run/secrets/espm-bridge/kafka-pass"},
                    },
                    {
                        "name": "hook",
                        "type": "webhook",
                        "url": "https://example.com/hook",
                        "secret_file": "/run/secrets/espm-bridge/hook-secret",
                    },
                ],
            },
        },
    ),
    "command-api": merged(
        BASE,
        {
            "secrets": {"pm-password": "x", "api-tokens": "crm=0123456789abcdef0123"},
            "config": {
                "accounts": [ACCOUNT],
                "api": {"listen": "0.0.0.0:8080", "token_file": "/run/secrets/espm-bridge/api-tokens"},
            },
        },
    ),
    "policy": merged(
        BASE,
        {
            "secrets": {
                "pm-password": "x",
                "decision-whsec": "whsec_" + "A" * 32,
                "customers.txt": "C-1\nC-2\n",
            },
            "config": {
                "accounts": [
                    dict(
                        ACCOUNT,
                        policy={
                            "dry_run": True,
                            "webhook": {
                                "url": "https://billing.example.com/decide",
                                "secret_file": "/run/secrets/espm-bridge/decision-whsec",
                                "timeout": "5s",
                            },
                            "rules": [
                                {
                                    "name": "known",
                                    "kinds": ["connection"],
                                    "decision": "accept",
                                    "fields": [
                                        {
                                            "name": "Customer Number",
                                            "in_file": "/run/secrets/espm-bridge/customers.txt",
                                        }
                                    ],
                                },
                                {
                                    "decision": "reject",
                                    "note": "Please fill in your customer number.",
                                    "fields": [{"name": "Customer Number", "present": False}],
                                },
                                {"decision": "ask"},
                            ],
                        },
                    )
                ],
            },
        },
    ),
}

# value set -> a substring the render error must contain.
MUST_FAIL = {
    "secret-file-not-provided": (
        {"config": {"accounts": [dict(ACCOUNT, password_file="/run/secrets/espm-bridge/missing")]},
         "secrets": {"pm-password": "x"}},
        "neither `secrets` nor `existingSecret` provides it",
    ),
    "no-secret-at-all": ({}, "secrets.pm-password"),
    "map-secret-not-provided": (
        merged(BASE, {"config": {"sinks": [{
            "name": "k", "type": "kafka", "brokers": "kafka:9092", "topic": "espm",
            "secret_files": {"sasl.password": "/run/secrets/espm-bridge/kafka-pass"},
        }]}}),
        "/run/secrets/espm-bridge/kafka-pass",
    ),
    "grace-too-short": (
        merged(BASE, {"terminationGracePeriodSeconds": 30}),
        "terminationGracePeriodSeconds 30 is too short",
    ),
    "schema-rejects-typo": (merged(BASE, {"replicaCount": 2}), "replicaCount"),
}


def docs(manifests):
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


def find(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def container(sts):
    return sts["spec"]["template"]["spec"]["containers"][0]


def check_semantics(name, values, objs):
    sts = find(objs, "StatefulSet")
    if len(sts) != 1:
        fail(f"{name}: expected one StatefulSet, got {len(sts)}")
        return
    sts = sts[0]
    pod = sts["spec"]["template"]["spec"]
    c = container(sts)
    if sts["spec"]["replicas"] != 1:
        fail(f"{name}: replicas must stay 1")

    # The grace period covers --grace plus the longest PM request timeout plus 10 s.
    grace = values.get("shutdownGraceSeconds", 20)
    timeouts = [30]
    for a in values.get("config", {}).get("accounts", []):
        t = a.get("request_timeout")
        if t == "1m 30s":
            timeouts.append(90)
        elif t == "45s":
            timeouts.append(45)
    want = grace + max(timeouts) + 10
    if pod["terminationGracePeriodSeconds"] != want:
        fail(f"{name}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']}, want {want}")
    if c["args"][-2:] != ["--grace", f"{grace}s"]:
        fail(f"{name}: container args {c['args']} do not pass --grace {grace}s")

    if not values.get("readinessProbe") and c["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail(f"{name}: default readiness probe is not /readyz")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if values.get(probe):
            # A configured probe replaces the default whole (no merged handlers).
            if c.get(probe) != values[probe]:
                fail(f"{name}: {probe} {c.get(probe)} is not the configured {values[probe]}")
        elif probe not in c:
            fail(f"{name}: default {probe} missing")

    # The command API gets its own container and Service port only when configured.
    api = values.get("config", {}).get("api")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    svc = [o for o in find(objs, "Service") if not o["metadata"]["name"].endswith("-headless")]
    svc_ports = {p["name"]: p for p in svc[0]["spec"]["ports"]} if svc else {}
    if api:
        want_port = int(api["listen"].rsplit(":", 1)[1])
        if ports.get("api") != want_port:
            fail(f"{name}: container api port {ports.get('api')}, want {want_port}")
        if svc_ports.get("api", {}).get("targetPort") != "api":
            fail(f"{name}: Service does not expose the command API: {svc_ports}")
    elif "api" in ports or "api" in svc_ports:
        fail(f"{name}: api port without config.api")

    vol_names = [v["name"] for v in pod["volumes"]]
    claim_templates = sts["spec"].get("volumeClaimTemplates", [])
    persistence = values.get("persistence", {})
    if persistence.get("existingClaim"):
        data = [v for v in pod["volumes"] if v["name"] == "data"]
        if not data or data[0].get("persistentVolumeClaim", {}).get("claimName") != persistence["existingClaim"]:
            fail(f"{name}: data volume is not the existing claim: {pod['volumes']}")
        if claim_templates:
            fail(f"{name}: existingClaim must not also create a claim template")
    elif persistence.get("enabled", True):
        if [t["metadata"]["name"] for t in claim_templates] != ["data"]:
            fail(f"{name}: expected the data claim template, got {claim_templates}")
    elif "data" not in vol_names:
        fail(f"{name}: no data volume without persistence")
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    if "/var/lib/espm-bridge" not in mounts:
        fail(f"{name}: journal volume not mounted")

    for v in values.get("extraVolumes", []):
        if v not in pod["volumes"]:
            fail(f"{name}: extra volume {v} missing")
    for m in values.get("extraVolumeMounts", []):
        if m not in c["volumeMounts"]:
            fail(f"{name}: extra mount {m} missing")
    if values.get("initContainers") and pod.get("initContainers") != values["initContainers"]:
        fail(f"{name}: initContainers {pod.get('initContainers')}")
    if values.get("podPriorityClassName") and pod.get("priorityClassName") != values["podPriorityClassName"]:
        fail(f"{name}: priorityClassName {pod.get('priorityClassName')}")
    for k, v in values.get("commonLabels", {}).items():
        for o in objs:
            if o["metadata"].get("labels", {}).get(k) != v:
                fail(f"{name}: {o['kind']} {o['metadata']['name']} lacks common label {k}={v}")
        if sts["spec"]["template"]["metadata"]["labels"].get(k) != v:
            fail(f"{name}: pod lacks common label {k}={v}")
        if k in sts["spec"]["selector"]["matchLabels"]:
            fail(f"{name}: common label {k} must not enter the immutable selector")


def validate(name, objs):
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_KINDS:
            if not obj.get("spec", {}).get("endpoints"):
                fail(f"{name}: ServiceMonitor without endpoints")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                fail(f"{name}: {obj['kind']} {obj['metadata']['name']} invalid for Kubernetes {version} at {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                fail(f"{name}: {obj['kind']}: no schema for Kubernetes {version}: {e}")


def main():
    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate for {', '.join(KUBE_VERSIONS)}")
    chart = helm.Chart.load(CHART)
    rendered = 0
    validated = 0
    for name, values in VALUE_SETS.items():
        report = helm.lint(CHART, values, strict=True, namespace="bridge")
        # Severity 3 is an error, 2 a warning; strict lint fails on both. "icon is recommended" is info.
        for m in report["messages"]:
            if m["severity"] >= 2:
                fail(f"{name}: helm lint: {m['path']}: {m['error']}")
        for e in report.get("errors") or []:
            fail(f"{name}: helm lint: {e}")
        try:
            manifests = chart.render(values=values, name="bridge", namespace="bridge", is_install=True)
        except helm.HelmError as e:
            fail(f"{name}: render failed: {e}")
            continue
        rendered += 1
        objs = [doc for _, doc in docs(manifests)]
        validate(name, objs)
        validated += len(objs)
        check_semantics(name, values, objs)

    for name, (values, needle) in MUST_FAIL.items():
        try:
            chart.render(values=values, name="bridge", namespace="bridge", is_install=True)
            fail(f"{name}: rendered, but must fail with {needle!r}")
        except helm.HelmError as e:
            if needle not in str(e):
                fail(f"{name}: failed with {e}, expected a message containing {needle!r}")

    print(f"{rendered} value sets rendered, {validated} manifests validated, {len(MUST_FAIL)} rejections checked")
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
