"""The Helm chart (deploy/helm/precog) and the Grafana dashboard, checked offline.

`helm lint` and `helm template` (helm from `scripts/bootstrap`, .tools/bin/helm: missing is a
failure, not a skip), every rendered manifest against the Kubernetes schemas
(kubernetes-validate) or, for KEDA's and prometheus-operator's kinds, against the schemas in
crd_schemas/; the values the chart derives from the code (consumer group, events topic,
partitions, secret settings, probes, resources); and every PromQL expression of the Grafana
dashboard against the metrics the worker's code defines.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pydantic
import pytest
import yaml
from precog.services.agents.score import score_group

from precog.settings import Settings
from precog.spec import load_spec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "precog"
HELM = ROOT / ".tools" / "bin" / "helm"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "precog-worker.json"
CRD_SCHEMAS = {
    "ScaledObject": "keda-scaledobject.json",
    "TriggerAuthentication": "keda-triggerauthentication.json",
    "ServiceMonitor": "servicemonitor.json",
}
K8S_VERSION = "1.37.0"
PRODUCTION = ["-f", str(CHART / "values-production.yaml")]
#: everything the chart can render, for the schema checks
EVERYTHING = [*PRODUCTION, "--set", "serve.enabled=true", "--set", "retrain.enabled=true"]


def helm(*args: str) -> str:
    if not HELM.exists():
        pytest.fail(f"helm is missing at {HELM}: run scripts/bootstrap (it builds helm)")
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def render(*args: str) -> list[dict[str, Any]]:
    out = helm("template", "precog", str(CHART), "--namespace", "streaming",
               "--kube-version", K8S_VERSION, *args)
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{len(found)} {kind} named *{suffix}"
    return found[0]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        pod = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            yield d["metadata"]["name"], c


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# -- helm lint / template, schemas -----------------------------------------------------------

@pytest.mark.parametrize("values", [[], PRODUCTION], ids=["default", "production"])
def test_helm_lint(values: list[str]) -> None:
    out = helm("lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_default_and_production_render_what_they_should() -> None:
    kinds = {d["kind"] for d in render()}
    assert kinds == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job"}
    prod = {(d["kind"], d["metadata"]["name"]) for d in render(*PRODUCTION)}
    assert {k for k, _ in prod} == kinds | {"ScaledObject", "TriggerAuthentication",
                                            "ServiceMonitor"}
    assert ("ConfigMap", "precog-grafana-dashboard") in prod


@pytest.mark.parametrize("values", [[], EVERYTHING], ids=["default", "everything"])
def test_every_manifest_matches_its_schema(values: list[str]) -> None:
    docs = render(*values)
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] in CRD_SCHEMAS:
            schema = json.loads((Path(__file__).parent / "crd_schemas" /
                                 CRD_SCHEMAS[doc["kind"]]).read_text())
            errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
            assert not errors, f"{where}: {errors}"
        else:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_the_kubernetes_schemas_catch_a_broken_deployment() -> None:
    worker = one(render(), "Deployment", "-worker")
    worker["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


def test_the_crd_schemas_catch_a_broken_scaledobject() -> None:
    docs = render(*PRODUCTION)
    scaled = one(docs, "ScaledObject")
    schema = json.loads((Path(__file__).parent / "crd_schemas" /
                         CRD_SCHEMAS["ScaledObject"]).read_text())
    broken = json.loads(json.dumps(scaled))
    del broken["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    broken["spec"]["maxReplicas"] = 3
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(broken))
    assert len(errors) == 2


# -- what the chart derives from the code -------------------------------------------------------

@pytest.mark.parametrize("values", [[], PRODUCTION], ids=["default", "production"])
def test_scaledobject_scales_the_score_group_up_to_the_partitions(values: list[str]) -> None:
    chosen = yaml.safe_load((CHART / "values.yaml").read_text())
    if values:
        chosen.update(yaml.safe_load(Path(values[1]).read_text()))
    docs = render(*values, "--set", "autoscaling.enabled=true", "--set", "kafka.partitions=7")
    scaled = one(docs, "ScaledObject")
    settings = Settings(namespace=chosen["namespace"])
    spec = load_spec(ROOT / "pipelines" / "specs" / f"{chosen['spec']['name']}.yaml")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == score_group(settings)
    assert trigger["metadata"]["topic"] == settings.topic(spec.event.topic)
    assert scaled["spec"]["maxReplicaCount"] == 7
    worker = one(docs, "Deployment", "-worker")
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    (_, c), = containers([worker])
    assert env_of(c)["PRECOG_KAFKA_PARTITIONS"]["value"] == "7"


def test_the_scaler_reads_the_spec_it_mounts() -> None:
    docs = render("--set", "autoscaling.enabled=true", "--set", "spec.name=sensors",
                  "--set", "namespace=parallel")
    spec = load_spec(ROOT / "pipelines" / "specs" / "sensors.yaml")
    topic = one(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]["topic"]
    assert topic == Settings(namespace="parallel").topic(spec.event.topic)
    data = one(docs, "ConfigMap", "precog-spec")["data"]
    assert data == {"sensors.yaml": (ROOT / "pipelines/specs/sensors.yaml").read_text()}
    (_, c), = containers([one(docs, "Deployment", "-worker")])
    assert env_of(c)["PRECOG_SPEC"]["value"] == "/etc/precog/spec/sensors.yaml"


def secret_settings() -> set[str]:
    """``PRECOG_*`` names of every credential in Settings: each SecretStr field and the user
    names beside them."""
    names = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            continue
        for name, sub in model.model_fields.items():
            if pydantic.SecretStr in typing.get_args(sub.annotation) or name.endswith("username"):
                names.add(f"PRECOG_{section}_{name}".upper())
    return names


def test_every_credential_comes_from_a_secret() -> None:
    wanted = secret_settings()
    assert {"PRECOG_KAFKA_SASL_PASSWORD", "PRECOG_REDIS_PASSWORD",
            "PRECOG_ELASTICSEARCH_API_KEY", "PRECOG_KIBANA_PASSWORD"} <= wanted
    docs = render(*EVERYTHING)
    seen = 0
    for name, c in containers(docs):
        env = env_of(c)
        for var in wanted:
            assert var in env, f"{name}/{c['name']}: {var} is not mapped"
            ref = env[var].get("valueFrom", {}).get("secretKeyRef")
            assert ref and ref["name"] == "precog-credentials" and "value" not in env[var]
        seen += 1
    assert seen == 4  # worker, serve, retrain, setup
    for values in ("values.yaml", "values-production.yaml"):
        text = (CHART / values).read_text()
        assert not re.search(r"(?i)(password|api_?key)\s*:\s*\S", text), values


def is_setting(var: str) -> bool:
    """Whether ``var`` is a ``PRECOG_*`` name that Settings reads (it ignores others)."""
    name = var.removeprefix("PRECOG_").lower()
    if name in Settings.model_fields:
        return True
    for section, info in Settings.model_fields.items():  # sections may hold "_" themselves
        if name.startswith(section + "_"):
            model = info.annotation
            field = name.removeprefix(section + "_")
            if isinstance(model, type) and field in getattr(model, "model_fields", {}):
                return True
    return False


def test_the_workers_environment_is_settings_precog_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(*PRODUCTION)
    for name, c in containers(docs):
        for var in env_of(c):
            assert is_setting(var), f"{name}: {var} is no setting of precog/settings.py"
    (_, c), = containers([one(docs, "Deployment", "-worker")])
    for var, e in env_of(c).items():
        monkeypatch.setenv(var, e.get("value", "from-a-secret"))
    s = Settings()
    assert (s.namespace, s.kafka.partitions, s.kafka.replication_factor) == ("prod", 12, 3)
    assert (s.kafka.security_protocol, s.kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert str(s.kafka.ssl_cafile) == "/etc/precog/tls/ca.crt"
    assert s.kafka.sasl_password is not None and s.elasticsearch.api_key is not None
    assert (s.worker.web_host, s.worker.web_port) == ("0.0.0.0", 6066)
    assert str(s.spec) == "/etc/precog/spec/transactions.yaml"
    assert s.stack_overridden() == {"kafka": True, "redis": True, "elasticsearch": True,
                                    "schema-registry": True}
    assert s.wire_format == "confluent"


def test_tls_files_are_mounted_where_the_settings_point() -> None:
    docs = render(*PRODUCTION)
    (_, c), = containers([one(docs, "Deployment", "-worker")])
    env = env_of(c)
    for var in ("PRECOG_KAFKA_SSL_CAFILE", "PRECOG_REDIS_SSL_CA_CERTS",
                "PRECOG_ELASTICSEARCH_CA_CERTS"):
        assert env[var]["value"] == "/etc/precog/tls/ca.crt"
    assert {"name": "tls", "mountPath": "/etc/precog/tls", "readOnly": True} in c["volumeMounts"]
    auth = one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(r["parameter"], r["name"], r["key"]) for r in auth} == {
        ("username", "precog-credentials", "kafka-sasl-username"),
        ("password", "precog-credentials", "kafka-sasl-password"),
        ("ca", "precog-tls", "ca.crt")}


def test_probes_use_the_workers_health_page() -> None:
    assert '@app.page("/health")' in (ROOT / "services" / "web.py").read_text()
    docs = render()
    (_, c), = containers([one(docs, "Deployment", "-worker")])
    env = env_of(c)
    port = int(env["PRECOG_WORKER_WEB_PORT"]["value"])
    assert port == Settings().worker.web_port
    assert env["PRECOG_WORKER_WEB_HOST"]["value"] == "0.0.0.0"
    assert c["ports"] == [{"name": "web", "containerPort": port, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "web"}
    assert c["command"][:2] == ["precog", "worker"]


def test_resources_cover_the_measured_worker() -> None:
    """Requests and limits against docs/benchmarks.md: one core, the worker's max RSS."""
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    row = re.search(r"\n\| [\d,]+ \(warm-up [\d,]+\) \| (\d+) MiB \| (\d+) MiB \| (\d+) MiB \|",
                    bench)
    assert row, "docs/benchmarks.md has no worker memory row"
    max_rss = int(row.group(3))
    for values in ([], PRODUCTION):
        (_, c), = containers([one(render(*values), "Deployment", "-worker")])
        res = c["resources"]
        assert res["requests"]["cpu"] == "1"
        assert "cpu" not in res.get("limits", {}), "a CPU limit throttles the batch loop"
        request = int(res["requests"]["memory"].removesuffix("Mi").removesuffix("Gi"))
        request *= 1024 if res["requests"]["memory"].endswith("Gi") else 1
        assert request >= max_rss


def test_serve_is_off_by_default_and_complete_when_on() -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-serve")]
    docs = render("--set", "serve.enabled=true", "--set", "serve.port=8123")
    deploy, service = one(docs, "Deployment", "-serve"), one(docs, "Service", "-serve")
    (_, c), = containers([deploy])
    assert c["command"] == ["precog", "serve"]
    assert env_of(c)["PRECOG_SERVE_PORT"]["value"] == "8123"
    assert c["ports"][0]["containerPort"] == 8123
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]


def test_retrain_is_off_by_default_one_pod_and_writes_the_shared_registry() -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-retrain")]
    done = subprocess.run([str(HELM), "template", "precog", str(CHART), "--kube-version",
                           K8S_VERSION, "--set", "retrain.enabled=true"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "retrain.enabled needs registry.existingClaim" in done.stderr
    docs = render("--set", "retrain.enabled=true", "--set", "registry.existingClaim=models",
                  "--set", "retrain.everySeconds=60")
    deploy = one(docs, "Deployment", "-retrain")
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    (_, c), = containers([deploy])
    assert c["command"] == ["precog", "retrain", "watch", "--every", "60"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "registry"]
    assert not mount.get("readOnly")
    (vol,) = [v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "registry"]
    assert vol["persistentVolumeClaim"] == {"claimName": "models"}


def test_setup_job_is_a_hook_that_imports_kibana_when_given_one() -> None:
    job = one(render(), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (_, c), = containers([job])
    assert c["command"] == ["precog", "setup"]
    docs = render("--set", "kibana.url=http://kibana:5601")
    (_, c), = containers([one(docs, "Job")])
    assert c["command"][-1] == 'precog setup && precog kibana import --url "$PRECOG_KIBANA_URL"'
    assert env_of(c)["PRECOG_KIBANA_URL"]["value"] == "http://kibana:5601"
    hook_spec = one(docs, "ConfigMap", "-setup-spec")
    assert hook_spec["data"] == one(docs, "ConfigMap", "precog-spec")["data"]
    assert int(hook_spec["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0


def test_pdb_and_servicemonitor_select_the_workers() -> None:
    docs = render(*PRODUCTION)
    worker = one(docs, "Deployment", "-worker")["spec"]["selector"]["matchLabels"]
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == worker
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "-worker")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    assert service["spec"]["selector"] == worker
    assert monitor["spec"]["endpoints"] == [{"port": "web", "path": "/metrics",
                                             "interval": "15s"}]


def test_dashboard_configmap_is_the_dashboard_file() -> None:
    cm = one(render(*PRODUCTION), "ConfigMap", "-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert json.loads(cm["data"]["precog-worker.json"]) == json.loads(DASHBOARD.read_text())


# -- the dashboard's PromQL against the worker's metrics ---------------------------------------

#: sample names the exposition format derives from a metric of each type
SUFFIXES = {"Counter": ("_total", "_created"), "Gauge": ("",),
            "Histogram": ("_bucket", "_count", "_sum", "_created"),
            "Summary": ("", "_count", "_sum", "_created")}


def defined_metrics() -> dict[str, set[str]]:
    """Sample name -> label names, from every prometheus_client metric defined in the code."""
    out: dict[str, set[str]] = {}
    for folder in ("precog", "services"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            kinds = {a.asname or a.name: a.name for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module == "prometheus_client"
                     for a in n.names if a.name in SUFFIXES}
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in kinds):
                    continue
                name = ast.literal_eval(node.args[0])
                labels_node = node.args[2] if len(node.args) > 2 else next(
                    (k.value for k in node.keywords if k.arg == "labelnames"), None)
                labels = set(ast.literal_eval(labels_node)) if labels_node else set()
                kind = kinds[node.func.id]
                base = name.removesuffix("_total") if kind == "Counter" else name
                for suffix in SUFFIXES[kind]:
                    out[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


#: labels Prometheus adds to every scraped sample
TARGET_LABELS = {"job", "instance"}


def promql_problems(expr: str, metrics: dict[str, set[str]]) -> list[str]:
    """What is wrong with one dashboard expression: unknown metrics or labels."""
    expr = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    expr = re.sub(r"\$\{?\w+(:\w+)?\}?", "x", expr)
    problems: list[str] = []
    selectors: list[Any] = []
    promql_parser.walk(promql_parser.parse(expr),
                       lambda n: selectors.append(n) if isinstance(
                           n, promql_parser.VectorSelector) else None)
    if not selectors:
        problems.append(f"{expr!r} selects no metric")
    for sel in selectors:
        if sel.name not in metrics:
            problems.append(f"{sel.name} is not a metric the worker exports")
            continue
        for m in sel.matchers.matchers:
            if m.name not in metrics[sel.name] | TARGET_LABELS:
                problems.append(f"{sel.name} has no label {m.name}")
    return problems


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((\w+), *(\w+)\)", var["query"]["query"])
            assert inner, var["query"]
            exprs.append(inner.group(1))
    return exprs


def test_every_dashboard_query_names_an_exported_metric() -> None:
    metrics = defined_metrics()
    assert {"precog_events_in_total", "precog_batch_seconds_bucket", "precog_model_loaded",
            "precog_consumer_lag", "precog_join_total"} <= set(metrics)
    queries = dashboard_queries()
    assert len(queries) >= 15
    problems = [p for q in queries for p in promql_problems(q, metrics)]
    assert not problems


def test_the_promql_check_catches_wrong_names_and_labels() -> None:
    metrics = defined_metrics()
    assert promql_problems('sum(rate(precog_events_total[$__rate_interval]))', metrics) == [
        "precog_events_total is not a metric the worker exports"]
    assert promql_problems('precog_model_loaded{model="m"}', metrics) == [
        "precog_model_loaded has no label model"]
    assert promql_problems('rate(precog_batch_seconds_bucket{le="1", job=~"$job"}[5m])',
                           metrics) == []


def test_dashboard_covers_what_operators_need() -> None:
    queries = " ".join(dashboard_queries())
    for metric in ("precog_events_in_total", "precog_predictions_out_total",
                   "precog_dead_letters_total", "precog_batch_seconds_bucket",
                   "precog_consumer_lag", "precog_model_loaded"):
        assert metric in queries


def test_pods_that_load_models_have_a_writable_lightgbm_cache() -> None:
    """The root file system is read-only: the compiled LightGBM scorer's cache is a volume
    where ``PRECOG_LIGHTGBM_CACHE`` points, in the worker and in ``precog serve``."""
    docs = render("--set", "serve.enabled=true")
    for suffix in ("-worker", "-serve"):
        deploy = one(docs, "Deployment", suffix)
        (_, c), = containers([deploy])
        path = env_of(c)["PRECOG_LIGHTGBM_CACHE"]["value"]
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == path]
        assert not mount.get("readOnly")
        (vol,) = [v for v in deploy["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"]]
        assert "emptyDir" in vol or "persistentVolumeClaim" in vol, vol
