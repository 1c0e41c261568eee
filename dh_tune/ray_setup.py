"""Start Ray in-process with the local CPUs, or join a cluster; check resources before fitting; say in one
line when Ray itself (a node, a worker process) failed."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .messages import first_line, worker_logging


class ResourceError(RuntimeError):
    """The cluster cannot meet a resource request (instead of Ray's endless retry)."""


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """ray.init once: `address` joins a cluster, otherwise a local Ray with this machine's CPUs."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Our workers print their own progress lines; keep Ray Train from echoing each print twice,
    # and skip the preemption watcher (spot-instance support) that only adds log noise here.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray Train's controller polls its workers every 2 s by default: each run then waits up to that long to
    # start and to end, and each per-epoch report to reach Tune. A poll is one cheap call, so poll often.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    # Ray starts its workers at niceness 15: every wakeup of its own services then preempts one of the two
    # compute threads of a training step, and both wait. At 0 a training epoch on 2 cores runs ~8% faster
    # (benchmarks/bench_train_throughput.py). A joined cluster keeps the setting its `ray start` was given.
    os.environ.setdefault("RAY_worker_niceness", "0")
    _auth_mode(address)  # read by Ray's config when it is first imported
    import ray

    if ray.is_initialized():
        return
    if not address:
        _loopback_node()  # nothing it serves is reachable from other machines
    # The dashboard (on 127.0.0.1) also serves the State API that Ray Train's cleanup actor polls.
    kwargs = dict(logging_level=logging.WARNING, include_dashboard=True, dashboard_host="127.0.0.1",
                  configure_logging=True,
                  runtime_env={"worker_process_setup_hook": "dh_tune.ray_setup.setup_worker_logs"})
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)


def _loopback_node() -> None:
    """The Ray started here is a one-machine cluster whose node address is 127.0.0.1 instead of this machine's
    network address. Ray binds its listeners to loopback when the node address is loopback; otherwise the
    GCS, raylet and worker gRPC servers, the dashboard agent's gRPC server and Prometheus metrics export
    port, and the autoscaler's and dashboard's own metrics servers listen on all interfaces, and the
    runtime-env agent and the dashboard agent's HTTP server on the network address.

    Ray takes loopback as a local node's address only where multi-machine clusters are off, as on macOS
    and Windows (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); elsewhere even a 127.0.0.1 given as the node address
    is turned into the network address. Ray parses that variable once, when first imported, so its parsed
    value is set as well (the process may have imported Ray before init_ray)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # and the processes Ray starts see the same
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _auth_mode(address: str | None) -> None:
    """Token authentication (Ray 2.60): on for the in-process cluster (said explicitly, so Ray does not
    warn about its default), and on when joining a cluster while a token is at hand, since a cluster that
    `ray start` began with a token refuses drivers that do not present it. Ray reads the mode into its
    config when first imported; where it was imported already, the config is read again (as Ray does when
    it turns token mode on itself), or this driver would not present the token its own cluster asks for."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not address or os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        ray = sys.modules.get("ray")
        if ray is not None and not ray.is_initialized():  # a running Ray keeps the config it started with
            ray._raylet.Config.initialize("")


NOISY_LOGGERS = ("ray.train.v2._internal.execution.context", "ray.train.v2._internal.execution.storage",
                 "ray.train._internal.storage")


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def setup_worker_logs() -> None:
    """In Ray workers: dh_tune's messages as plain lines on stderr (Ray shows them), Ray Train's INFO lines off."""
    worker_logging()
    quiet_worker_logs()


def quiet_worker_logs() -> None:
    """In Ray workers: Ray Train's per-epoch INFO lines (report, checkpoint saved) stay off the console."""
    names = list(NOISY_LOGGERS)
    try:  # this module names its logger by file path, not by module name
        from ray.train.v2._internal.execution import context

        names.append(context.__file__)
    except ImportError:
        pass
    for name in names:
        logger = logging.getLogger(name)
        if _warnings_only not in logger.filters:
            logger.addFilter(_warnings_only)


def check_resources(workers: int, cpus_per_worker: float, gpu: bool, extra_cpus: float = 0.0) -> None:
    """Raise ResourceError when the cluster has fewer CPUs or GPUs than the workers need."""
    import ray

    total = ray.cluster_resources()
    need_cpu = workers * cpus_per_worker + extra_cpus
    have_cpu = float(total.get("CPU", 0))
    if need_cpu > have_cpu + 1e-9:
        raise ResourceError(f"{workers} workers x {cpus_per_worker} CPU need {need_cpu:g} CPUs but the Ray cluster has "
                            f"{have_cpu:g}; use fewer --workers or join a bigger cluster with --ray-address")
    if gpu:
        have_gpu = float(total.get("GPU", 0))
        if workers > have_gpu:
            raise ResourceError(f"{workers} GPU workers need {workers} GPUs but the Ray cluster has {have_gpu:g}; "
                                "drop --gpu or use fewer --workers")


RESUME = "re-run the same command to resume"

# Exception attributes where Ray keeps the errors behind the one raised: a task's error (RayTaskError.cause),
# Ray Train's worker and controller failures (WorkerGroupError.worker_failures, a rank -> error mapping;
# ControllerError.controller_failure; WorkerHealthCheckFailedError.health_check_failure), a user
# exception's original (UserExceptionWithTraceback._base_exc) and an exception group's members.
_INNER = ("cause", "worker_failures", "controller_failure", "health_check_failure", "_base_exc", "exceptions")


def _inner(exc: BaseException) -> list[BaseException]:
    found: list = [exc.__cause__, exc.__context__]
    for name in _INNER:
        try:
            value = getattr(exc, name, None)
        except Exception:  # noqa: BLE001 - a property of a foreign exception
            continue
        if isinstance(value, dict):
            found.extend(value.values())
        elif isinstance(value, (list, tuple)):
            found.extend(value)
        else:
            found.append(value)
    return [e for e in found if isinstance(e, BaseException)]


def _lost_node_or_worker(exc: BaseException) -> bool:
    """A Ray exception that says a node, a raylet, a worker process or an actor's process was lost."""
    rex = sys.modules["ray.exceptions"]
    if isinstance(exc, rex.RayTaskError):  # the task's own error: look at its cause instead
        return False
    if isinstance(exc, rex.RayActorError):  # ActorDiedError, ActorUnavailableError
        return not exc.actor_init_failed  # an error raised in the actor's __init__ is the program's
    if isinstance(exc, rex.ObjectLostError):
        return not isinstance(exc, (rex.ObjectFreedError, rex.ReferenceCountingAssertionError))
    if isinstance(exc, (rex.NodeDiedError, rex.LocalRayletDiedError, rex.WorkerCrashedError, rex.RaySystemError)):
        return True
    train = sys.modules.get("ray.train.v2.api.exceptions")
    return train is not None and isinstance(exc, train.PreemptionError)


def ray_failure(exc: BaseException, resume: str = RESUME) -> str | None:
    """One line for a failure of Ray itself, or None when `exc` is not one.

    Ray's failures are a node that died or stopped answering (NodeDiedError), a dead raylet, a crashed
    worker process, an actor whose process or node died or cannot be reached (ActorDiedError,
    ActorUnavailableError), objects lost with their node, a node preemption, and RaySystemError. They are
    found anywhere in the chain of causes and contexts and inside the errors Ray wraps them in (a task's
    error, Ray Train's worker and controller failures, Tune's errors). `resume` ends the line: how to go on.
    """
    if "ray.exceptions" not in sys.modules:  # no Ray exception can exist in a process that never loaded Ray
        return None
    seen: set[int] = set()
    queue = [exc]
    while queue:
        e = queue.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if _lost_node_or_worker(e):
            return f"Ray lost a node or worker ({type(e).__name__}: {first_line(e)[:300]}); {resume}"
        queue.extend(_inner(e))
    return None
