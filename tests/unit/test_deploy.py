"""The production files in ``deploy/`` agree with each other and with devserve itself.

The Dockerfile's and the Deployment's command lines are parsed by devserve's own CLI parser and
``load_config`` (so a renamed or mistyped flag fails here), and everything that repeats one of
their values is checked against it: the probes' path and port, the Service's target port, the
grace period against ``--shutdown-delay`` + ``--timeout-graceful-shutdown``, the HAProxy and
nginx health path, upstream ports and keep-alive timeouts. ``haproxy -c`` validates the HAProxy
config (haproxy is a test requirement: scripts/setup-dev.sh installs it); ``nginx -t`` runs too
when nginx is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devserve.cli import build_parser
from devserve.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


# --- readers ------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in read(DEPLOY / "Dockerfile").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def instruction(name: str) -> list[str]:
    return [args for keyword, args in dockerfile() if keyword == name]


def exec_form(args: str) -> list[str]:
    """An instruction in exec form (a JSON list): signals reach devserve, not a shell."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def docker_argv() -> list[str]:
    (entrypoint,) = instruction("ENTRYPOINT")
    (cmd,) = instruction("CMD")
    return exec_form(entrypoint) + exec_form(cmd)


def devserve_config(argv: list[str], cwd: Path) -> Config:
    """What devserve would run with: its own argparse parser, then ``load_config``."""
    assert argv[0] == "devserve", argv
    overrides = vars(build_parser().parse_args(argv[1:]))  # an unknown flag exits here
    return load_config(overrides, environ={}, cwd=cwd)


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes, by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(read(path)):
            if doc is None:
                continue
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def container() -> dict[str, Any]:
    (app,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return app


def k8s_argv() -> list[str]:
    app = container()
    assert "command" not in app, "keep the image's ENTRYPOINT (devserve); pass only args"
    return ["devserve", *(str(a) for a in app["args"])]


def container_port(port: int | str) -> int:
    """A probe or Service port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert port in by_name, f"no container port named {port!r}"
    return int(by_name[port])


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def directives(text: str) -> list[str]:
    """Non-empty lines without comments or surrounding whitespace (HAProxy and nginx)."""
    return [code for line in text.splitlines() if (code := line.split("#", 1)[0].strip())]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture
def docker(tmp_path: Path) -> Config:
    return devserve_config(docker_argv(), tmp_path)


@pytest.fixture
def k8s(tmp_path: Path) -> Config:
    return devserve_config(k8s_argv(), tmp_path)


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_base_user_and_command(docker: Config) -> None:
    (base,) = instruction("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    users = instruction("USER")
    assert users, "the image must not run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert docker.host == "0.0.0.0"  # reachable from outside the container
    assert docker.health_path is not None and docker.health_path.startswith("/")
    assert docker.shutdown_delay > 0
    assert docker.workers >= 1
    assert docker.reload is False
    assert instruction("STOPSIGNAL") in ([], ["SIGTERM"])


def test_dockerfile_exposes_and_health_checks_the_served_port(docker: Config) -> None:
    assert instruction("EXPOSE") == [str(docker.port)]
    (healthcheck,) = instruction("HEALTHCHECK")
    assert f"http://127.0.0.1:{docker.port}{docker.health_path}'" in healthcheck


# --- Kubernetes ---------------------------------------------------------------------------------


def test_deployment_runs_the_dockerfile_command(docker: Config, k8s: Config) -> None:
    assert k8s == docker


def test_probes_use_the_health_path_and_port(k8s: Config) -> None:
    app = container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = app[probe]["httpGet"]
        assert get["path"] == k8s.health_path, probe
        assert container_port(get["port"]) == k8s.port, probe
    assert [p["containerPort"] for p in app["ports"]] == [k8s.port]


def prestop_seconds() -> float:
    """How long a preStop hook delays SIGTERM (0 without one)."""
    hook = container().get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = " ".join(hook["exec"]["command"])
    match = re.search(r"sleep\s+(\d+(?:\.\d+)?)", command)
    assert match, f"cannot tell how long preStop takes: {command!r}"
    return float(match.group(1))


def test_grace_period_outlasts_delay_and_drain(k8s: Config) -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > prestop_seconds() + k8s.shutdown_delay + k8s.timeout_graceful_shutdown


def test_liveness_outlasts_the_shutdown_delay(k8s: Config) -> None:
    """The health path is 503 for --shutdown-delay: liveness must not restart the pod then."""
    live = container()["livenessProbe"]
    assert live["failureThreshold"] * live["periodSeconds"] > k8s.shutdown_delay


def test_pod_is_non_root_as_the_image_user() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_user = instruction("USER")[-1].split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == image_user


def test_resources_give_each_worker_a_core(k8s: Config) -> None:
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert cpu_cores(resources["requests"]["cpu"]) == k8s.workers


def test_service_targets_the_container_port(k8s: Config) -> None:
    objects = manifests()
    service = objects["Service"]
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert container_port(port["targetPort"]) == k8s.port


def test_autoscaler_and_disruption_budget_target_the_deployment() -> None:
    objects = manifests()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    target = objects["HorizontalPodAutoscaler"]["spec"]
    assert target["scaleTargetRef"]["kind"] == "Deployment"
    assert target["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 2 <= target["minReplicas"] <= target["maxReplicas"]
    if any(m["resource"]["name"] == "cpu" for m in target["metrics"]):
        assert "cpu" in container()["resources"]["requests"]  # utilisation is relative to it
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- HAProxy ------------------------------------------------------------------------------------


def test_haproxy_config_is_valid() -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is required (scripts/setup-dev.sh installs it)"
    result = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_checks_health_and_retries_elsewhere(docker: Config) -> None:
    lines = directives(read(DEPLOY / "haproxy.cfg"))
    assert "option httpchk" in lines
    (send,) = [line for line in lines if line.startswith("http-check send ")]
    words = send.split()
    assert words[words.index("uri") + 1] == docker.health_path
    if "ver" in words and words[words.index("ver") + 1] == "HTTP/1.1":
        assert "hdr" in words and words[words.index("hdr") + 1].lower() == "host", (
            "devserve answers an HTTP/1.1 request without Host with 400")
    assert "http-check expect status 200" in lines
    (retry_on,) = [line.split()[1:] for line in lines if line.startswith("retry-on ")]
    assert {"conn-failure", "empty-response"} <= set(retry_on)
    assert any(re.fullmatch(r"option redispatch( -?\d+)?", line) for line in lines)
    assert any(re.fullmatch(r"retries [1-9]\d*", line) for line in lines)
    servers = [line.split() for line in lines if line.startswith("server ")]
    assert servers
    assert {int(s[2].rsplit(":", 1)[1]) for s in servers} == {docker.port}


# --- nginx --------------------------------------------------------------------------------------


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, value
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match.group(2)]


def test_nginx_upstream_keepalive_and_retries(docker: Config) -> None:
    text = read(DEPLOY / "nginx.conf")
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", text, re.DOTALL)
    assert upstream is not None
    name, body = upstream.group(1), upstream.group(2)
    block = directives(body)
    ports = {int(m) for m in re.findall(r"^server\s+\S+:(\d+)", "\n".join(block), re.M)}
    assert ports == {docker.port}
    assert any(re.fullmatch(r"keepalive [1-9]\d*;", d) for d in block)
    (idle,) = [d.split()[1].rstrip(";") for d in block if d.startswith("keepalive_timeout")]
    assert seconds(idle) < docker.timeout_keep_alive, (
        "nginx must close idle upstream connections before devserve does")
    lines = directives(read(DEPLOY / "nginx.conf"))
    assert f"proxy_pass http://{name};" in lines
    assert "proxy_http_version 1.1;" in lines
    assert 'proxy_set_header Connection "";' in lines
    (next_upstream,) = [line for line in lines if line.startswith("proxy_next_upstream ")]
    assert "error" in next_upstream.rstrip(";").split()[1:]
    # Open-source nginx has no active checks; the NGINX Plus line in the comments must still
    # name the same health path.
    assert re.findall(r"health_check uri=(\S+)", text) == [docker.health_path]


def test_nginx_config_is_valid_when_nginx_is_installed(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        return  # not a test requirement (no active checks to exercise); haproxy is
    config = tmp_path / "nginx.conf"
    config.write_text(read(DEPLOY / "nginx.conf"), encoding="utf-8")
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(config),
         "-g", f"pid {tmp_path / 'nginx.pid'};"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
