"""Start Ray in-process with the local CPUs, or join a cluster; check resources before fitting."""
from __future__ import annotations

import logging
import os
from pathlib import Path


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
    _auth_mode(address)  # read by Ray's config when it is first imported
    import ray

    if ray.is_initialized():
        return
    # The dashboard (on 127.0.0.1) also serves the State API that Ray Train's cleanup actor polls.
    kwargs = dict(logging_level=logging.WARNING, include_dashboard=True, dashboard_host="127.0.0.1",
                  configure_logging=True,
                  runtime_env={"worker_process_setup_hook": "dh_tune.ray_setup.quiet_worker_logs"})
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)


def _auth_mode(address: str | None) -> None:
    """Token authentication (Ray 2.60): on for the in-process cluster (said explicitly, so Ray does not
    warn about its default), and on when joining a cluster while a token is at hand, since a cluster that
    `ray start` began with a token refuses drivers that do not present it."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not address or os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


NOISY_LOGGERS = ("ray.train.v2._internal.execution.context", "ray.train.v2._internal.execution.storage",
                 "ray.train._internal.storage")


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


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
