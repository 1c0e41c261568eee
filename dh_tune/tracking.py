"""MLflow helpers: the default local sqlite store under ./mlflow, experiments and safe logging.

Logging never breaks the work it describes: a failing tracking server becomes one warning.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .messages import first_line, redact_uri

logger = logging.getLogger(__name__)

STORE_DIR = Path("mlflow")


@dataclass(frozen=True)
class Tracking:
    """An MLflow store and a run in it: the run a job logs into, and the parent of the runs it starts.

    Plain strings only, so it pickles for Ray and `Tracking(**dataclasses.asdict(t))` gives it back.
    """

    uri: str
    run_id: str
    experiment: str | None = None  # where runs started under this one go (default: their pipeline's name)

    def logger(self) -> SafeLogger:
        """A SafeLogger for this run."""
        return SafeLogger(self.uri, self.run_id)


def default_tracking_uri() -> str:
    """sqlite store `mlflow/mlflow.db` under the current directory (created on first use)."""
    STORE_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    """The URI to use: the given one, $MLFLOW_TRACKING_URI, or the local default store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # An unreachable server should fail in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import mlflow  # noqa: F401 - mlflow sets its loggers up on import; quieten them afterwards

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")


def client(uri: str):
    """An MlflowClient for this URI."""
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    """Id of the experiment `name`, created if needed (artifacts under mlflow/artifacts for a local store)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts" / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat {'train.epochs': '10'} for MLflow params."""
    out: dict[str, str] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


class SafeLogger:
    """Logs to one MLflow run; after the first failure it warns once and stays silent."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id
        self.failed = False
        self._client = None

    def _call(self, fn: str, *args, **kwargs) -> None:
        if self.failed:
            return
        try:
            if self._client is None:
                self._client = client(self.uri)
            getattr(self._client, fn)(self.run_id, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop training or search
            self.failed = True
            logger.warning("MLflow logging to %s failed (%s); results are still written to disk",
                           redact_uri(self.uri), redact_uri(first_line(exc))[:200])

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        self._call("log_batch", metrics=batch)

    def params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self._call("log_batch", params=[Param(k, v) for k, v in params.items()])

    def tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._call("log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", status)


def start_run(uri: str, experiment: str, run_name: str, tags: dict[str, str] | None = None,
              parent_run_id: str | None = None) -> SafeLogger | None:
    """Create a run (nested under parent_run_id if given); None, with a warning, if the store is unreachable."""
    try:
        c = client(uri)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = c.create_run(experiment_id(uri, experiment), run_name=run_name, tags=all_tags)
    except Exception as exc:  # noqa: BLE001
        logger.warning("cannot reach MLflow at %s (%s); continuing without tracking, results are written "
                       "to disk", redact_uri(uri), redact_uri(first_line(exc))[:200])
        return None
    return SafeLogger(uri, run.info.run_id)


def find_run(uri: str, experiment: str, tags: dict[str, str]) -> str | None:
    """Id of the newest run of `experiment` with all of `tags`, or None (none, a tag value that cannot be quoted
    in an MLflow filter, or the store unreachable: a caller starting a run then warns once)."""
    if any("'" in v for v in tags.values()):
        return None
    try:
        c = client(uri)
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = c.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                             filter_string=" and ".join(f"tags.{k} = '{v}'" for k, v in tags.items()))
    except Exception:  # noqa: BLE001 - tracking never stops the work it tracks
        return None
    return runs[0].info.run_id if runs else None


def close_stale_runs(uri: str, parent_run_id: str) -> int:
    """Child runs of `parent_run_id` left RUNNING by a killed process become FAILED (call only while no other
    process writes them). Returns how many were closed (0, with a warning, when the store cannot be reached)."""
    try:
        c = client(uri)
        parent = c.get_run(parent_run_id)
        runs = c.search_runs([parent.info.experiment_id], max_results=1000,
                             filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                           "attributes.status = 'RUNNING'")
        for run in runs:
            c.set_terminated(run.info.run_id, "FAILED")
    except Exception as exc:  # noqa: BLE001 - tracking never stops the work it tracks
        logger.warning("could not close interrupted MLflow runs (%s)", first_line(exc)[:200])
        return 0
    return len(runs)


def delete_child_runs(uri: str, parent_run_id: str, tag: str, values: tuple[str, ...]) -> None:
    """Delete the child runs of `parent_run_id` whose `tag` is one of `values` (their replacements are logged
    next; a store that cannot be reached deletes nothing)."""
    try:
        c = client(uri)
        exp = c.get_run(parent_run_id).info.experiment_id
        for value in values:
            old = c.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
                                                     f"and tags.{tag} = '{value}'")
            for run in old:
                c.delete_run(run.info.run_id)
    except Exception:  # noqa: BLE001 - the new runs are logged regardless
        pass
