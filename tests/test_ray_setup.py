"""Ray started in-process listens on loopback only; failures of Ray itself are told in one line."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray.exceptions as rex
from ray.train.base_trainer import TrainingFailedError as TrainingFailedErrorV1
from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError
from ray.tune.error import TuneError

from dh_tune.ray_setup import ray_failure

ROOT = Path(__file__).resolve().parents[1]

# The driver: starts Ray through init_ray, runs one task (a worker process and its gRPC server), writes the
# node's metrics export port, the Ray Train poll interval its workers see and their niceness to argv[1] and holds Ray up until
# a line arrives on stdin. Ray is imported first, as in a process that has used it already: Ray has then parsed
# its settings before init_ray.
DRIVER = r"""
import json, os, sys
import ray
from dh_tune.ray_setup import init_ray
init_ray(num_cpus=1)
poll, nice = ray.get(ray.remote(lambda: (os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"), os.nice(0))).remote())
port = int(ray.nodes()[0]["MetricsExportPort"])
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"metrics_export_port": port, "train_poll_s": poll, "worker_nice": nice}, f)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
sys.stdin.readline()
ray.shutdown()
"""


def _tree(pid: int) -> list:
    import psutil  # Ray's own copy, on the path once Ray is imported

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listening(procs: list) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket these processes listen on."""
    import psutil

    rows = []
    for p in procs:
        try:
            script = next((Path(a).name for a in p.cmdline()[1:] if a.endswith(".py")), "")
            name = f"{p.name()} {script}".strip()
            rows += [(c.laddr.ip, c.laddr.port, name) for c in p.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN]
        except psutil.Error:  # ended meanwhile
            continue
    return rows


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_local_ray_listens_on_loopback_only(end_processes) -> None:
    """Every TCP listener of the Ray that init_ray starts (GCS, raylet, workers, dashboard and its agent,
    metrics export, runtime-env agent, autoscaler) is bound to loopback, none to the IPv4 or IPv6 wildcard or the
    network address; and its workers (where Ray Train's controller runs) see the 0.2 s poll interval and run at
    the driver's niceness (Ray's own 15 would slow every training step)."""
    temp = tempfile.mkdtemp(prefix="dhray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ready = Path(temp) / "ready.json"
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                 "RAY_worker_niceness"):
        env.pop(name, None)  # perhaps set by a Ray another test started here; init_ray sets its own
    log = open(Path(temp) / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(ready)], stdin=subprocess.PIPE,
                              stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    procs = []
    try:
        deadline = time.monotonic() + 120
        while not ready.is_file():
            assert driver.poll() is None, (Path(temp) / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Ray did not start in 120 s"
            time.sleep(0.2)
        started = json.loads(ready.read_text())
        port = started["metrics_export_port"]
        assert started["train_poll_s"] == "0.2"  # Ray Train's controller, started by a worker, polls every 0.2 s
        assert started["worker_nice"] == os.nice(0)
        # The dashboard agent opens the metrics export port on its own schedule: wait until it listens.
        while True:
            procs = _tree(driver.pid)
            listening = _listening(procs)
            if any(p == port for _, p, _ in listening) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert any(p == port for _, p, _ in listening), f"metrics export port {port} not open: {listening}"
        assert len(listening) >= 5, listening  # GCS, raylet, driver, worker, agents: the tree was found
        exposed = sorted(row for row in listening if not _loopback(row[0]))
        assert not exposed, f"Ray listens beyond loopback: {exposed}"
    finally:
        procs = procs + [p for p in _tree(driver.pid) if p not in procs]
        try:
            driver.communicate("\n", timeout=60)  # ray.shutdown() ends what the driver started
        except subprocess.TimeoutExpired:
            pass
        end_processes([p for p in procs if p.is_running()], 10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


# -- ray_failure ---------------------------------------------------------------------------------------

def _raised(exc: BaseException, cause: BaseException) -> BaseException:
    """`exc` as Python leaves it after `raise exc from cause`."""
    try:
        raise exc from cause
    except BaseException as e:  # noqa: BLE001
        return e


def _task_error(cause: BaseException) -> rex.RayTaskError:
    return rex.RayTaskError("fit", "Traceback (most recent call last):\n  ...", cause, proctitle="ray::fit",
                            pid=1, ip="127.0.0.1")


@pytest.mark.parametrize("exc, name", [
    (rex.NodeDiedError("Node 1a2b died: missed heartbeats for 30 s\nsee raylet.out"), "NodeDiedError"),
    (rex.WorkerCrashedError(), "WorkerCrashedError"),
    (rex.LocalRayletDiedError(), "LocalRayletDiedError"),
    (rex.ActorDiedError(), "ActorDiedError"),
    (rex.ActorUnavailableError("the connection was lost", None), "ActorUnavailableError"),
    (rex.RaySystemError("the raylet is gone"), "RaySystemError"),
    (rex.OwnerDiedError("ab" * 14, None, ""), "OwnerDiedError"),
])
def test_ray_failure_names_ray_infrastructure_errors(exc: BaseException, name: str) -> None:
    msg = ray_failure(exc)
    assert msg is not None and "\n" not in msg
    assert msg.startswith(f"Ray lost a node or worker ({name}: ")
    assert msg.endswith("re-run the same command to resume")


def test_ray_failure_says_the_first_line_and_the_given_way_to_resume() -> None:
    msg = ray_failure(rex.NodeDiedError("Node 1a2b died: missed heartbeats for 30 s\nsee raylet.out"),
                      "the finished trials are kept under runs/search/x: re-run the same command to resume")
    assert msg == ("Ray lost a node or worker (NodeDiedError: Node 1a2b died: missed heartbeats for 30 s); "
                   "the finished trials are kept under runs/search/x: re-run the same command to resume")


@pytest.mark.parametrize("wrap", [
    # Ray Train (v2): a worker whose actor died fails its health check; the worker group error holds it.
    lambda e: WorkerGroupError("rank 0 failed", {0: WorkerHealthCheckFailedError("health check failed", e)}),
    lambda e: ControllerError(e),
    lambda e: _raised(TrainingFailedErrorV1("The Ray Train run failed."), e),
    lambda e: _raised(TuneError("The Ray Tune run failed."), _task_error(e)),
    lambda e: _task_error(e).as_instanceof_cause(),
    lambda e: _raised(RuntimeError("outer"), _raised(KeyError("inner"), e)),
])
def test_ray_failure_finds_the_error_inside_wrappers(wrap) -> None:
    msg = ray_failure(wrap(rex.ActorDiedError()))
    assert msg is not None and msg.startswith("Ray lost a node or worker (ActorDiedError: The actor died")


def test_ray_failure_follows_the_implicit_context() -> None:
    try:
        try:
            raise rex.NodeDiedError("node gone")
        except rex.NodeDiedError:
            raise ValueError("while handling it")  # noqa: B904 - the context is what is tested
    except ValueError as exc:
        assert "NodeDiedError: node gone" in (ray_failure(exc) or "")


@pytest.mark.parametrize("exc", [
    ValueError("bad --budget-ms"),
    _raised(ValueError("outer"), KeyError("inner")),
    _task_error(ZeroDivisionError("division by zero")),  # the program's own error inside a task
    rex.ActorDiedError.from_task_error(_task_error(RuntimeError("bad __init__"))),  # an actor's __init__ failed
    WorkerGroupError("rank 0 failed", {0: RuntimeError("loss is NaN")}),
    _raised(TuneError("The Ray Tune run failed."), OSError("disk full")),
    KeyboardInterrupt(),
])
def test_ray_failure_is_none_for_other_errors(exc: BaseException) -> None:
    assert ray_failure(exc) is None


def test_ray_failure_stops_on_cyclic_chains() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert ray_failure(a) is None
