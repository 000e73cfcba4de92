"""Offline checks of the Helm chart in charts/bucket-registry.

The chart is rendered and linted with Helm's own Go engine (helm-python-sdk
bundles it as a shared library, so no helm binary, cluster or network is
involved), then every manifest is validated against the Kubernetes OpenAPI
schemas that kubernetes-validate ships.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

CHART = Path(__file__).resolve().parents[2] / "charts" / "bucket-registry"
PRODUCTION_VALUES = CHART / "values-production.example.yaml"
SNIPPET = CHART / "gen3" / "revproxy-bucket-registry.conf"
RELEASE = "bucket-registry"
NAMESPACE = "gen3"
# A version kubernetes-validate ships schemas for; also the lint target.
KUBE_VERSION = "1.30.0"
# Custom resources: no upstream schema, checked by hand below.
CRD_KINDS = {"ServiceMonitor"}
IMAGE_UID = 10001
DATA_PATHS = ["/presign", "/resolve/my-bucket", "/resolve", "/multipart/init", "/multipart/abort"]
ADMIN_PATHS = ["/admin/buckets", "/admin/buckets/my-bucket", "/admin/audit", "/admin/audit/x"]
CONSOLE_PATHS = ["/console", "/console/", "/console/buckets/b", "/console/static/console.js"]

Manifest = dict[str, Any]


def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


def render_files(values: dict[str, Any] | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    docs: list[Manifest] = []
    for path, text in sorted(render_files(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of base with overrides deep-merged in (dicts merge, anything else replaces)."""
    result = copy.deepcopy(base)

    def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(result, overrides)
    return result


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str, component: str | None = None) -> Manifest:
    found = [
        doc
        for doc in of_kind(docs, kind)
        if component is None
        or doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
    return found[0]


def pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            yield name, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield name, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def named(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected {kind}/{name}"
    return found[0]


def settings(docs: list[Manifest]) -> dict[str, str]:
    """The env ConfigMap the service reads its settings from."""
    data: dict[str, str] = named(docs, "ConfigMap", "bucket-registry-config")["data"]
    return data


def api_container(docs: list[Manifest]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def default_docs() -> list[Manifest]:
    return render()


@pytest.fixture(scope="module")
def prod_docs() -> list[Manifest]:
    return render(production_values())


@pytest.fixture(scope="module", params=["default", "production"])
def docs(request: pytest.FixtureRequest) -> list[Manifest]:
    return render(production_values() if request.param == "production" else None)


# A values set that switches on every optional branch, so the schema check sees them all.
EVERYTHING = merged(
    production_values(),
    {
        "global": {
            "postgres": {
                "dbCreate": True,
                "master": {"host": "db.internal", "password": "admin-pw"},
            }
        },
        "postgres": {"existingSecret": "", "password": "Sup3r-Secret!pw", "host": "db.internal"},
        "secretsBackend": {
            "type": "k8s",
            "vault": {"addr": "https://vault.vault.svc:8200", "role": "bucket-registry"},
            "gcp": {"project": "my-project"},
            "aws": {"endpointUrl": "https://sts.us-east-1.amazonaws.com"},
            "k8s": {"rbac": {"namedSecrets": [{"namespace": "bucket-keys", "names": ["s1"]}]}},
            "file": {"secrets": ["bucket-keys"]},
        },
        "fenceConfig": {"existingSecret": "", "existingConfigMap": "manifest-fence"},
        "endpointAllowlist": ["minio.storage.svc", "10.0.0.0/8"],
        "auth": {"tokenAudience": "https://data.example.org/user", "legacyAuthzEnabled": False},
        "autoscaling": {"targetMemoryUtilizationPercentage": 80},
        "pdb": {"maxUnavailable": 1},
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "ca-bundle"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/extra", "readOnly": True}],
        "netPolicy": {
            "extraEgress": [{"ports": [{"protocol": "TCP", "port": 9000}]}],
            "egressAllowedCidrs": ["10.30.0.0/16", {"cidr": "192.168.5.0/24", "ports": [9000]}],
        },
    },
)


# --- the tools themselves -----------------------------------------------------------------


def test_kubernetes_version_is_shipped_by_kubernetes_validate() -> None:
    assert KUBE_VERSION in all_versions()


def test_schema_validation_rejects_a_broken_manifest() -> None:
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": "not-a-list"}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


# --- lint and schema ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "production", "everything"])
def test_chart_lints_clean(which: str) -> None:
    values = {"default": None, "production": production_values(), "everything": EVERYTHING}[which]
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("which", ["default", "production", "everything", "netpol-off"])
def test_manifests_match_kubernetes_schemas(which: str) -> None:
    values = {
        "default": None,
        "production": production_values(),
        "everything": EVERYTHING,
        "netpol-off": {"global": {"netPolicy": {"enabled": False}}},
    }[which]
    docs = render(values)
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_values_schema_refuses_a_root_container() -> None:
    with pytest.raises(helm.HelmValuesError):
        render({"securityContext": {"runAsNonRoot": False}})


def test_servicemonitor_scrapes_metrics_of_the_service(prod_docs: list[Manifest]) -> None:
    monitor = one(prod_docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    service = one(prod_docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_servicemonitor_absent_by_default(default_docs: list[Manifest]) -> None:
    assert of_kind(default_docs, "ServiceMonitor") == []


# --- pods ---------------------------------------------------------------------------------


def test_every_pod_runs_non_root_read_only_unprivileged(docs: list[Manifest]) -> None:
    specs = dict(pod_specs(docs))
    assert any(name.startswith("Deployment/") for name in specs)
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == IMAGE_UID, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
            if container["image"].startswith("quay.io/cdis/bucket-registry:"):
                assert ctx["runAsUser"] == IMAGE_UID, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp", name


def test_probes_hit_status_endpoints(docs: list[Manifest]) -> None:
    container = api_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/_status", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/_status/ready", "port": "http"}


def test_deployment_serves_on_8000_with_config_checksum() -> None:
    files = render_files()
    deployment = one(render(), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert container["image"] == "quay.io/cdis/bucket-registry:0.1.0"
    assert container["envFrom"] == [{"configMapRef": {"name": "bucket-registry-config"}}]
    checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    configmap = files[f"{RELEASE}/templates/configmap.yaml"]
    assert checksum == hashlib.sha256(configmap.encode()).hexdigest()
    changed = one(render({"logLevel": "DEBUG"}), "Deployment")
    assert changed["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum


def test_service_maps_port_80_to_the_container(docs: list[Manifest]) -> None:
    service = one(docs, "Service")
    assert service["metadata"]["name"] == "bucket-registry-service"
    assert service["metadata"]["labels"]["app"] == "bucket-registry"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # Job pods must never join the Service.
    for doc in of_kind(docs, "Job") + of_kind(docs, "CronJob"):
        template = (
            doc["spec"]["jobTemplate"]["spec"]["template"]
            if doc["kind"] == "CronJob"
            else doc["spec"]["template"]
        )
        assert not selector.items() <= template["metadata"]["labels"].items(), doc["kind"]


# --- database credentials -----------------------------------------------------------------


PASSWORD = "Sup3r-Secret!pw"


def test_database_url_only_travels_through_a_secret() -> None:
    docs = render({"postgres": {"password": PASSWORD}})
    secret = one(docs, "Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    url = urlsplit(data["database-url"])
    assert url.scheme == "postgresql+asyncpg"
    assert unquote(url.password or "") == PASSWORD
    assert url.hostname == "bucket-registry-postgresql"
    assert (url.port, url.path) == (5432, "/bucket_registry")
    assert data["password"] == PASSWORD

    for configmap in of_kind(docs, "ConfigMap"):
        text = yaml.safe_dump(configmap)
        assert PASSWORD not in text
        assert "postgresql" not in text
        assert not re.search(r"://[^/\s]*:[^@\s]*@", text)
        assert not any("DATABASE_URL" in k or "PASSWORD" in k for k in configmap["data"])

    for name, spec in pod_specs(docs):
        for container in spec["containers"]:
            for entry in container.get("env", []):
                assert PASSWORD not in str(entry.get("value", "")), name
            if container["name"] == "dbcreate":
                continue
            url_env = env_of(container)["BUCKET_REGISTRY_DATABASE_URL"]
            assert "value" not in url_env, name
            assert url_env["valueFrom"]["secretKeyRef"] == {
                "name": "bucket-registry-dbcreds",
                "key": "database-url",
            }, name


def test_existing_secret_replaces_the_chart_secret(prod_docs: list[Manifest]) -> None:
    assert of_kind(prod_docs, "Secret") == []
    assert [d for d in of_kind(prod_docs, "Job") if "dbcreate" in d["metadata"]["name"]] == []
    for name, spec in pod_specs(prod_docs):
        ref = env_of(spec["containers"][0])["BUCKET_REGISTRY_DATABASE_URL"]["valueFrom"]
        assert ref["secretKeyRef"] == {"name": "bucket-registry-database", "key": "database-url"}, (
            name
        )


def test_password_is_required_when_the_chart_does_not_create_the_database() -> None:
    with pytest.raises(helm.HelmError, match=r"postgres\.password"):
        render({"global": {"postgres": {"dbCreate": False}}})


def test_dbcreate_secret_and_jobs_run_in_order() -> None:
    docs = render(EVERYTHING)
    weights = {
        f"{d['kind']}/{d['metadata']['name']}": int(
            d["metadata"]["annotations"]["helm.sh/hook-weight"]
        )
        for d in docs
        if "helm.sh/hook" in d["metadata"].get("annotations", {})
    }
    assert weights == {
        "Secret/bucket-registry-dbcreds": -20,
        "Secret/bucket-registry-dbcreate": -15,
        "Job/bucket-registry-dbcreate": -10,
        "Job/bucket-registry-migrate": 0,
    }
    admin_secret = named(docs, "Secret", "bucket-registry-dbcreate")
    # Admin credentials do not outlive a successful install.
    assert "hook-succeeded" in admin_secret["metadata"]["annotations"]["helm.sh/hook-delete-policy"]


# --- migration hook -----------------------------------------------------------------------


def test_migration_job_is_a_pre_install_pre_upgrade_hook(docs: list[Manifest]) -> None:
    job = one(docs, "Job", component="migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(annotations["helm.sh/hook-weight"]) == 0
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["args"] == ["migrate"]
    assert "command" not in container  # the image's entrypoint is `bucket-registry`
    assert "secretKeyRef" in env_of(container)["BUCKET_REGISTRY_DATABASE_URL"]["valueFrom"]


def test_chart_secret_exists_before_the_migration_hook(default_docs: list[Manifest]) -> None:
    secret = one(default_docs, "Secret")
    job = one(default_docs, "Job", component="migrate")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


# --- network policy -----------------------------------------------------------------------


def _from_apps(rule: dict[str, Any]) -> set[str]:
    apps: set[str] = set()
    for peer in rule["from"]:
        selector = peer.get("podSelector", {})
        if "app" in selector.get("matchLabels", {}):
            apps.add(selector["matchLabels"]["app"])
        for expr in selector.get("matchExpressions", []):
            if expr["key"] == "app" and expr["operator"] == "In":
                apps.update(expr["values"])
    return apps


def test_networkpolicy_admits_only_fence_and_revproxy(docs: list[Manifest]) -> None:
    policy = next(p for p in of_kind(docs, "NetworkPolicy") if "jobs" not in p["metadata"]["name"])
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == one(docs, "Service")["spec"]["selector"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    pod_rules = [r for r in spec["ingress"] if any("podSelector" in p for p in r["from"])]
    assert [_from_apps(r) for r in pod_rules] == [{"fence", "presigned-url-fence"}, {"revproxy"}]
    for rule in spec["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
        for peer in rule["from"]:
            assert "ipBlock" not in peer

    egress_ports = {(p["protocol"], p["port"]) for r in spec["egress"] for p in r.get("ports", [])}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 443), ("TCP", 80)} <= egress_ports
    egress_apps = {
        peer["podSelector"]["matchLabels"]["app"]
        for rule in spec["egress"]
        for peer in rule.get("to", [])
        if "podSelector" in peer
    }
    assert egress_apps == {"arborist", "fence"}


def test_networkpolicy_pins_the_database_subnets(prod_docs: list[Manifest]) -> None:
    for policy in of_kind(prod_docs, "NetworkPolicy"):
        db_rules = [
            r for r in policy["spec"]["egress"] if {"protocol": "TCP", "port": 5432} in r["ports"]
        ]
        assert db_rules == [
            {
                "ports": [{"protocol": "TCP", "port": 5432}],
                "to": [{"ipBlock": {"cidr": cidr}} for cidr in ("10.20.32.0/20", "10.20.48.0/20")],
            }
        ]


def test_jobs_networkpolicy_selects_job_pods_only(docs: list[Manifest]) -> None:
    policy = next(p for p in of_kind(docs, "NetworkPolicy") if "jobs" in p["metadata"]["name"])
    assert policy["spec"]["ingress"] == []
    expr = policy["spec"]["podSelector"]["matchExpressions"][0]
    assert expr["key"] == "app.kubernetes.io/component"
    assert set(expr["values"]) == {"migrate", "dbcreate", "drift-check"}


INWARD = [
    "169.254.169.254",  # AWS, GCP and Azure metadata
    "169.254.170.2",  # ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "10.0.0.1",
    "172.16.5.5",
    "192.168.1.1",
    "100.100.100.200",  # Alibaba metadata, shared address space
    "127.0.0.1",
    "::1",
    "fe80::1",
    "::ffff:169.254.169.254",
]


def _reachable(rule: dict[str, Any], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    for peer in rule.get("to", []):
        block = peer.get("ipBlock")
        if block is None:
            continue
        network = ipaddress.ip_network(block["cidr"])
        if ip.version != network.version or ip not in network:
            continue
        if not any(
            ip in ipaddress.ip_network(cut)
            for cut in block.get("except", [])
            if ipaddress.ip_network(cut).version == ip.version
        ):
            return True
    return False


def test_egress_never_reaches_metadata_or_private_ranges_unless_allow_listed() -> None:
    for docs in (render(), render(production_values())):
        for policy in of_kind(docs, "NetworkPolicy"):
            for rule in policy["spec"]["egress"]:
                ports = {p["port"] for p in rule.get("ports", [])}
                if "to" not in rule:
                    # Port-only rules: DNS (node-local caches listen on link-local addresses)
                    # and, without dbSubnets, the database.
                    assert ports <= {53, 5432}, rule
                    continue
                for address in INWARD:
                    assert not _reachable(rule, address), (address, rule)
            https = [
                r
                for r in policy["spec"]["egress"]
                if {"protocol": "TCP", "port": 443} in r.get("ports", [])
            ]
            assert len(https) == 1 and _reachable(https[0], "52.94.133.131")  # a public AWS API
            assert _reachable(https[0], "2600:1f18::1")


def test_allow_listed_cidrs_get_their_own_egress_rules() -> None:
    docs = render(EVERYTHING)
    for policy in of_kind(docs, "NetworkPolicy"):
        egress = policy["spec"]["egress"]
        assert {"to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}]} in egress
        assert {
            "to": [{"ipBlock": {"cidr": "192.168.5.0/24"}}],
            "ports": [{"protocol": "TCP", "port": 9000}],
        } in egress
    with pytest.raises(Exception, match="egressAllowedCidrs"):
        render({"netPolicy": {"egressAllowedCidrs": ["not-a-cidr"]}})


def test_networkpolicy_can_be_disabled() -> None:
    docs = render({"global": {"netPolicy": {"enabled": False}}})
    assert of_kind(docs, "NetworkPolicy") == []


# --- revproxy -----------------------------------------------------------------------------


def _location_patterns(conf: str) -> list[re.Pattern[str]]:
    patterns = []
    for line in conf.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("location"):
            continue
        match = re.fullmatch(r"location\s+~\s+(\S+)\s*\{", line)
        assert match, f"only regex locations are expected, got: {line}"
        patterns.append(re.compile(match.group(1)))
    return patterns


def test_revproxy_snippet_publishes_admin_paths_only() -> None:
    conf = SNIPPET.read_text()
    patterns = _location_patterns(conf)
    assert patterns
    for path in ADMIN_PATHS:
        assert any(p.search(path) for p in patterns), path
    for path in [*DATA_PATHS, "/metrics", "/_status", "/_status/ready", "/admin/bucketsx", "/"]:
        assert not any(p.search(path) for p in patterns), path
    for path in ["/consolex", "/console-admin", "/openapi.json", "/docs"]:
        assert not any(p.search(path) for p in patterns), path
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    for word in ("presign", "resolve", "multipart"):
        assert word not in code
    assert "proxy_pass $upstream;" in code
    # Admin bodies are refused by nginx past the registry's own 64 KiB limit.
    assert "client_max_body_size 64k;" in code
    assert "set $upstream http://bucket-registry-service$des_domain;" in code


def test_revproxy_snippet_publishes_the_console_with_the_csrf_check() -> None:
    conf = SNIPPET.read_text()
    patterns = _location_patterns(conf)
    for path in CONSOLE_PATHS:
        assert any(p.search(path) for p in patterns), path
    blocks = [block for block in conf.split("location ")[1:] if block.startswith("~ ^/console")]
    assert len(blocks) == 1
    assert "if ($csrf_check !~ ^ok-\\S.+$)" in blocks[0]
    assert "proxy_pass $upstream;" in blocks[0]


def test_revproxy_configmap_carries_the_snippet(default_docs: list[Manifest]) -> None:
    configmap = named(default_docs, "ConfigMap", "revproxy-bucket-registry-subconf")
    assert configmap["data"]["bucket-registry-service.conf"].strip() == SNIPPET.read_text().strip()


def test_revproxy_configmap_follows_a_renamed_service() -> None:
    docs = render({"fullnameOverride": "registry"})
    configmap = named(docs, "ConfigMap", "revproxy-registry-subconf")
    assert "http://registry-service$des_domain" in configmap["data"]["bucket-registry-service.conf"]
    assert one(docs, "Service")["metadata"]["name"] == "registry-service"


# --- drift check, autoscaling, disruption budget ------------------------------------------


def test_drift_check_cronjob(prod_docs: list[Manifest]) -> None:
    cron = one(prod_docs, "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["schedule"] == "17 3 * * *"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["validate", "--all", "--json", "--record"]
    assert "command" not in container
    assert pod["serviceAccountName"] == "bucket-registry-sa"
    assert container["envFrom"] == [{"configMapRef": {"name": "bucket-registry-config"}}]
    # Fence's config (which can hold keys) is mounted where the fallback is served, nowhere else.
    assert "fence-config" not in {v["name"] for v in pod["volumes"]}
    assert "BUCKET_REGISTRY_FENCE_CONFIG" not in env_of(container)
    api = one(prod_docs, "Deployment")["spec"]["template"]["spec"]
    assert "fence-config" in {v["name"] for v in api["volumes"]}
    assert env_of(api["containers"][0])["BUCKET_REGISTRY_FENCE_CONFIG"]["value"] == (
        "/etc/bucket-registry/fence/fence-config.yaml"
    )


def test_drift_check_absent_by_default(default_docs: list[Manifest]) -> None:
    assert of_kind(default_docs, "CronJob") == []


def test_hpa_and_pdb_present_when_enabled(prod_docs: list[Manifest]) -> None:
    deployment = one(prod_docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    hpa = one(prod_docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    pdb = one(prod_docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_hpa_and_pdb_absent_when_disabled(default_docs: list[Manifest]) -> None:
    assert of_kind(default_docs, "HorizontalPodAutoscaler") == []
    assert of_kind(default_docs, "PodDisruptionBudget") == []
    assert one(default_docs, "Deployment")["spec"]["replicas"] == 1


# --- identity -----------------------------------------------------------------------------


def test_irsa_annotation_on_the_service_account(prod_docs: list[Manifest]) -> None:
    account = one(prod_docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/gen3-prod-bucket-registry"
    }
    spec = one(prod_docs, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    # IRSA projects its own token; the Kubernetes API token stays unmounted.
    assert spec["automountServiceAccountToken"] is False


def test_workload_identity_annotation_passes_through() -> None:
    gsa = "bucket-registry@my-project.iam.gserviceaccount.com"
    docs = render(
        {
            "secretsBackend": {"type": "gcp_sm", "gcp": {"project": "my-project"}},
            "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": gsa}},
        }
    )
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": gsa}
    assert settings(docs)["GOOGLE_CLOUD_PROJECT"] == "my-project"
    assert settings(docs)["BUCKET_REGISTRY_GCP_PROJECT"] == "my-project"
    assert settings(docs)["BUCKET_REGISTRY_SECRETS_BACKEND"] == "gcp_sm"


SECRETS_NAMESPACE = f"{NAMESPACE}-bucket-secrets"


def secret_rules(docs: list[Manifest]) -> dict[str, list[dict[str, Any]]]:
    """Rules on Secrets of every Role, by namespace."""
    found: dict[str, list[dict[str, Any]]] = {}
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            if "secrets" in rule["resources"]:
                found.setdefault(role["metadata"]["namespace"], []).append(rule)
    return found


def test_k8s_backend_owns_a_namespace_for_bucket_secrets() -> None:
    docs = render({"secretsBackend": {"type": "k8s"}})
    namespace = named(docs, "Namespace", SECRETS_NAMESPACE)
    assert namespace["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # May read and (for self-service credentials: one Secret per version, listed by label,
    # refused and pruned ones deleted) write Secrets there, and only there: nothing at all in
    # the release namespace, where Fence's keys live.
    assert secret_rules(docs) == {
        SECRETS_NAMESPACE: [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get", "list", "create", "update", "delete"],
            }
        ]
    }
    # Keys PUT through the API land in that namespace.
    assert settings(docs)["BUCKET_REGISTRY_SELF_SERVICE_SECRETS"] == (
        f"k8s://{SECRETS_NAMESPACE}/self-service"
    )
    chosen = render({"selfService": {"secrets": "vault://secret/registry"}})
    assert settings(chosen)["BUCKET_REGISTRY_SELF_SERVICE_SECRETS"] == "vault://secret/registry"
    assert "BUCKET_REGISTRY_SELF_SERVICE_SECRETS" not in settings(render({}))
    for binding in of_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "bucket-registry-sa", "namespace": NAMESPACE}
        ]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"]


def test_named_secrets_elsewhere_are_get_only_and_by_name() -> None:
    docs = render(
        {
            "secretsBackend": {
                "type": "k8s",
                "k8s": {
                    "rbac": {
                        "secretsNamespace": {"name": "commons-keys", "create": False},
                        "namedSecrets": [
                            {"namespace": NAMESPACE, "names": ["minio-abc", "gcs-abc"]},
                            {"namespace": "storage", "names": ["archive"]},
                        ],
                    }
                },
            }
        }
    )
    assert of_kind(docs, "Namespace") == []  # the operator's own, not created
    rules = secret_rules(docs)
    assert rules["commons-keys"][0]["verbs"] == ["get", "list", "create", "update", "delete"]
    assert rules[NAMESPACE] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["minio-abc", "gcs-abc"],
        }
    ]
    assert rules["storage"][0]["resourceNames"] == ["archive"]

    only_named = render(
        {
            "secretsBackend": {
                "k8s": {
                    "rbac": {
                        "create": True,
                        "secretsNamespace": {"enabled": False},
                        "namedSecrets": [{"namespace": NAMESPACE, "names": ["s1"]}],
                    }
                }
            }
        }
    )
    assert list(secret_rules(only_named)) == [NAMESPACE]
    assert of_kind(only_named, "Namespace") == []


@pytest.mark.parametrize(
    "rbac",
    [
        {"namespaces": [NAMESPACE]},  # the old values: every Secret of the namespace
        {"resourceNames": ["s1"]},
        {"namedSecrets": [{"namespace": NAMESPACE, "names": []}]},
        {"namedSecrets": [{"namespace": NAMESPACE}]},
    ],
)
def test_no_values_grant_every_secret_of_a_namespace(rbac: dict[str, Any]) -> None:
    with pytest.raises(Exception, match=r"namedSecrets|secretsNamespace|names"):
        render({"secretsBackend": {"type": "k8s", "k8s": {"rbac": rbac}}})


def test_only_the_owned_namespace_has_secrets_without_names() -> None:
    for values in (EVERYTHING, {"secretsBackend": {"type": "k8s"}}):
        for namespace, rules in secret_rules(render(values)).items():
            for rule in rules:
                assert namespace == SECRETS_NAMESPACE or rule.get("resourceNames"), rule


def test_default_has_no_rbac(default_docs: list[Manifest]) -> None:
    assert of_kind(default_docs, "Role") == []
    assert of_kind(default_docs, "RoleBinding") == []


# --- configuration ------------------------------------------------------------------------


def test_configmap_env(default_docs: list[Manifest]) -> None:
    assert settings(default_docs) == {
        "BUCKET_REGISTRY_ARBORIST_URL": "http://arborist-service",
        "BUCKET_REGISTRY_USER_API": "http://fence-service/user",
        "BUCKET_REGISTRY_ADMIN_RESOURCE": "/services/bucket-registry",
        "BUCKET_REGISTRY_SECRETS_BACKEND": "aws_sm",
        "BUCKET_REGISTRY_BUCKET_CACHE_TTL": "60",
        "BUCKET_REGISTRY_SECRET_CACHE_TTL": "300",
        "BUCKET_REGISTRY_SECRET_GRACE_PERIOD": "900",
        "BUCKET_REGISTRY_AUTHZ_CACHE_TTL": "30",
        "BUCKET_REGISTRY_TRACING_ENABLED": "false",
        "BUCKET_REGISTRY_MAX_PRESIGNED_URL_TTL": "3600",
        "BUCKET_REGISTRY_LOG_LEVEL": "INFO",
        "BUCKET_REGISTRY_WORKERS": "1",
        "BUCKET_REGISTRY_DATA_SCOPES": '["openid","data"]',
        "BUCKET_REGISTRY_ADMIN_SCOPES": '["openid"]',
        "BUCKET_REGISTRY_LEGACY_AUTHZ_ENABLED": "true",
        "BUCKET_REGISTRY_LIMIT_CONCURRENCY": "256",
    }


def test_concurrency_limit_can_be_lifted() -> None:
    docs = render({"limitConcurrency": None})
    assert "BUCKET_REGISTRY_LIMIT_CONCURRENCY" not in settings(docs)
    with pytest.raises(Exception, match="limitConcurrency"):
        render({"limitConcurrency": 0})


# --- file:// secrets: Kubernetes Secrets mount mode ---------------------------------------

MOUNT = "/var/run/secrets/bucket-registry"


def test_file_secrets_are_mounted_read_only_under_the_secrets_dir() -> None:
    docs = render(
        merged(
            production_values(),
            {"secretsBackend": {"file": {"secrets": ["bucket-keys", "gcs-keys"]}}},
        )
    )
    assert settings(docs)["BUCKET_REGISTRY_FILE_SECRETS_DIR"] == MOUNT
    api = one(docs, "Deployment")["spec"]["template"]["spec"]
    drift = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for pod in (api, drift):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        for index, name in enumerate(["bucket-keys", "gcs-keys"]):
            volume = volumes[f"file-secret-{index}"]
            assert volume["secret"] == {"secretName": name, "defaultMode": 0o440}
            assert mounts[f"file-secret-{index}"] == {
                "name": f"file-secret-{index}",
                "mountPath": f"{MOUNT}/{name}",
                "readOnly": True,
            }
    migration = one(docs, "Job", "migrate")["spec"]["template"]["spec"]
    assert not any(v["name"].startswith("file-secret") for v in migration.get("volumes", []))


def test_no_file_backend_unless_asked(default_docs: list[Manifest]) -> None:
    assert "BUCKET_REGISTRY_FILE_SECRETS_DIR" not in settings(default_docs)
    pod = one(default_docs, "Deployment")["spec"]["template"]["spec"]
    assert not any(v["name"].startswith("file-secret") for v in pod["volumes"])
    # type file alone names the directory (Secrets mounted by other means, extraVolumes).
    docs = render({"secretsBackend": {"type": "file"}})
    assert settings(docs)["BUCKET_REGISTRY_FILE_SECRETS_DIR"] == MOUNT
    with pytest.raises(Exception, match="secrets"):
        render({"secretsBackend": {"file": {"secrets": ["Not_A_Name"]}}})


def test_every_configmap_setting_is_one_the_service_reads() -> None:
    from app.config import Settings

    # WORKERS is read by the `serve` command itself, not by Settings.
    known = {f"BUCKET_REGISTRY_{name.upper()}" for name in Settings.model_fields}
    known.add("BUCKET_REGISTRY_WORKERS")
    rendered = settings(render(EVERYTHING))
    unknown = {key for key in rendered if key.startswith("BUCKET_REGISTRY_")} - known
    assert not unknown, f"the chart sets variables the service ignores: {sorted(unknown)}"


def test_endpoint_allowlist_is_a_json_list() -> None:
    docs = render(EVERYTHING)
    assert yaml.safe_load(settings(docs)["BUCKET_REGISTRY_ENDPOINT_ALLOWLIST"]) == [
        "minio.storage.svc",
        "10.0.0.0/8",
    ]
    assert settings(docs)["BUCKET_REGISTRY_VAULT_ADDR"] == "https://vault.vault.svc:8200"


def settings_from(data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as a pod given this ConfigMap would load them."""
    from app.config import Settings

    for key, value in data.items():
        if key.startswith("BUCKET_REGISTRY_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("BUCKET_REGISTRY_DATABASE_URL", "sqlite+aiosqlite:///unused.db")
    return Settings()


def test_service_tokens_and_scopes_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    data = settings(render(EVERYTHING))
    issuer = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
    assert data["BUCKET_REGISTRY_SERVICE_TOKEN_ISSUER"] == issuer
    loaded = settings_from(data, monkeypatch)
    assert loaded.service_token_issuer == issuer
    assert loaded.service_token_jwks_url == issuer + "/keys"
    assert loaded.service_token_audience == "bucket-registry"
    assert loaded.trusted_callers == ["system:serviceaccount:gen3:fence-sa"]
    assert loaded.data_scopes == ["openid", "data"] and loaded.admin_scopes == ["openid"]
    assert loaded.token_audience == "https://data.example.org/user"
    assert loaded.legacy_authz_enabled is False


def test_in_cluster_issuer_with_several_callers_and_scopes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "serviceTokens": {
            "issuer": "https://kubernetes.default.svc.cluster.local",
            "jwksUrl": "https://kubernetes.default.svc/openid/v1/jwks",
            "audience": "gen3-bucket-registry",
            "trustedCallers": ["system:serviceaccount:gen3:fence-sa", "system:serviceaccount:x:y"],
        },
        "auth": {"dataScopes": ["openid", "user", "data"]},
    }
    loaded = settings_from(settings(render(values)), monkeypatch)
    assert loaded.service_token_jwks_url == "https://kubernetes.default.svc/openid/v1/jwks"
    assert loaded.service_token_audience == "gen3-bucket-registry"
    assert loaded.trusted_callers == [
        "system:serviceaccount:gen3:fence-sa",
        "system:serviceaccount:x:y",
    ]
    assert loaded.data_scopes == ["openid", "user", "data"]
    assert loaded.legacy_authz_enabled is True and loaded.token_audience is None
    # The API server's certificate is signed by the cluster CA: trusted from kube-root-ca.crt,
    # mounted on every pod that reads the settings, without mounting an API token.
    assert loaded.service_token_ca_file == Path("/etc/bucket-registry/cluster-ca/ca.crt")
    docs = render(values)
    for name, spec in pod_specs(docs):
        if name.startswith("Job/"):
            continue
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert volumes["cluster-ca"]["configMap"]["name"] == "kube-root-ca.crt", name
        mounts = {mount["name"]: mount for mount in spec["containers"][0]["volumeMounts"]}
        assert mounts["cluster-ca"]["mountPath"] == "/etc/bucket-registry/cluster-ca", name
        assert spec["automountServiceAccountToken"] is False, name


@pytest.mark.parametrize(
    ("extra", "ca_file"),
    [
        ({}, None),
        ({"clusterCA": False}, None),
        ({"caFile": "/etc/ssl/cluster/bundle.pem"}, "/etc/ssl/cluster/bundle.pem"),
    ],
)
def test_a_ca_file_only_where_asked_or_in_cluster(
    extra: dict[str, Any], ca_file: str | None
) -> None:
    values = {
        "serviceTokens": {
            "issuer": "https://oidc.example.org",
            "jwksUrl": "https://oidc.example.org/keys",
            "trustedCallers": ["system:serviceaccount:gen3:fence-sa"],
            **extra,
        }
    }
    docs = render(values)
    assert settings(docs).get("BUCKET_REGISTRY_SERVICE_TOKEN_CA_FILE") == ca_file
    for name, spec in pod_specs(docs):
        assert "cluster-ca" not in {volume["name"] for volume in spec.get("volumes", [])}, name


def test_service_tokens_are_off_by_default(default_docs: list[Manifest]) -> None:
    assert not any("SERVICE_TOKEN" in key or "TRUSTED" in key for key in settings(default_docs))


@pytest.mark.parametrize(
    ("service_tokens", "message"),
    [
        ({"issuer": "https://kubernetes.default.svc.cluster.local"}, "together"),
        ({"jwksUrl": "https://kubernetes.default.svc/openid/v1/jwks"}, "together"),
        (
            {
                "issuer": "https://kubernetes.default.svc.cluster.local",
                "jwksUrl": "https://kubernetes.default.svc/openid/v1/jwks",
            },
            "trusted callers",
        ),
        ({"trustedCallers": ["system:serviceaccount:gen3:fence-sa"]}, "needs serviceTokens"),
    ],
)
def test_incomplete_service_token_values_are_refused(
    service_tokens: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render({"serviceTokens": service_tokens})
