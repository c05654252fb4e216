"""deploy/compose.yaml, read with PyYAML (no Docker here, so no `docker
compose config`): the services the deployment needs, each with a health
check; the start order waits on health; the modelbench containers' commands
parse with the real CLI, their MODELBENCH_* variables are Settings fields,
their models file and gateway config load and point at each other; Prometheus
scrapes every one of them; Grafana is provisioned with the dashboard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from .commands import SHUTDOWN_GRACE_S, check_config_file, parse, settings_problems
from .conftest import DEPLOY
from .dockerfile import runtime

COMPOSE = DEPLOY / "compose.yaml"
NEEDED = {"gateway", "inference-1", "inference-2", "postgres", "redis", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def modelbench_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The long-running services of the modelbench image (not the one-off `keys`)."""
    return {
        n: s
        for n, s in services.items()
        if s["image"].startswith("modelbench:") and "profiles" not in s
    }


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


def bind_source(service: dict[str, Any], container_path: str) -> Path:
    """The file on this side of the bind mount that holds ``container_path``."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(".") and container_path.startswith(target.rstrip("/") + "/"):
            return (DEPLOY / source / container_path[len(target) :].lstrip("/")).resolve()
    raise AssertionError(f"{container_path} is not on a bind mount")


def test_every_service_is_there_and_health_checked(services: dict[str, dict[str, Any]]) -> None:
    assert NEEDED <= set(services), f"missing: {sorted(NEEDED - set(services))}"
    for name, service in services.items():
        if "profiles" in service:
            continue  # one-off tools
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"


def test_services_start_once_what_they_need_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    needs = {
        "gateway": {"inference-1", "inference-2", "postgres", "redis"},
        "inference-1": {"postgres", "redis"},
        "inference-2": {"postgres", "redis"},
        "grafana": {"prometheus"},
    }
    for name, wanted in needs.items():
        depends = services[name]["depends_on"]
        assert wanted <= set(depends), f"{name} does not wait for {sorted(wanted - set(depends))}"
    for name, service in services.items():
        for other, condition in service.get("depends_on", {}).items():
            assert other in services, f"{name} depends on {other}, which is not a service"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{other} has no health check"


def test_modelbench_containers_are_configured_as_modelbench_reads_it(
    services: dict[str, dict[str, Any]],
) -> None:
    assert runtime().all("ENTRYPOINT") == ['["modelbench"]']  # so `command` is its arguments
    port = int(runtime().env()["MODELBENCH_PORT"])
    served: dict[str, int] = {}
    replicas: set[str] = set()
    for name, service in modelbench_services(services).items():
        environment = service["environment"]
        assert not settings_problems(environment), f"{name}: {settings_problems(environment)}"
        assert int(environment.get("MODELBENCH_PORT", port)) == port
        args = parse(service["command"])
        path = bind_source(service, args.models_file)
        assert path.is_file(), f"{name}: {args.models_file} is {path}, which does not exist"
        served_or_forwarded = check_config_file(args.command, path)
        drain = float(environment["MODELBENCH_DRAIN_TIMEOUT_S"])
        assert seconds(service["stop_grace_period"]) >= drain + SHUTDOWN_GRACE_S, name
        if args.command == "serve":
            served[name] = port
        else:
            upstreams = served_or_forwarded.upstreams
            replicas |= {urlsplit(u.url).netloc for u in upstreams}
            gateway_env = {u.api_key_env for u in upstreams}
            assert gateway_env <= set(environment), f"{name}: the upstream key is not passed"
    assert {"inference-1", "inference-2"} <= set(served)
    assert replicas == {f"{n}:{p}" for n, p in served.items()}, "the gateway's upstreams"


def test_prometheus_scrapes_every_process(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    port = int(runtime().env()["MODELBENCH_PORT"])
    wanted = {f"{n}:{port}" for n in modelbench_services(services)}
    wanted |= {"postgres-exporter:9187", "redis-exporter:9121"}
    assert wanted <= targets, f"not scraped: {sorted(wanted - targets)}"
    for target in targets - {"localhost:9090"}:
        assert target.split(":")[0] in services, f"{target}: no such service"


def test_grafana_is_provisioned_with_the_dashboard(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "modelbench.yaml").read_text())[
        "providers"
    ]
    dashboards = bind_source(grafana, provider["options"]["path"] + "/modelbench.json")
    assert dashboards == (DEPLOY / "grafana" / "dashboards" / "modelbench.json").resolve()
    assert bind_source(grafana, "/etc/grafana/provisioning/x") == (provisioning / "x").resolve()
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert urlsplit(source["url"]).hostname in services


def test_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
