"""Joining a Ray cluster: a head started with `ray start --head` on 127.0.0.1 runs a training that was
launched with --ray-address, and is stopped afterwards (its own processes only)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_processes(temp_dir: str, gcs_address: str) -> list:
    """This user's processes of the cluster that keeps its files in temp_dir and whose GCS is at gcs_address:
    those naming the folder (GCS, raylet, dashboard, monitors) or the GCS (the Ray Client server) on their
    command line, and everything they started (agents, workers)."""
    import psutil  # Ray's own copy, on the path once Ray is imported

    found = {}
    for p in psutil.process_iter(["cmdline", "uids"]):
        args = p.info["cmdline"] or ()
        mine = p.info["uids"] is not None and p.info["uids"].real == os.getuid()
        if not (mine and (any(temp_dir in a for a in args) or f"--address={gcs_address}" in args)):
            continue
        found[p.pid] = p
        try:
            found.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.Error:  # ended meanwhile
            continue
    return list(found.values())


def _stop_cluster(temp_dir: str, gcs_address: str, end_processes) -> None:
    """End the cluster's processes by pid (terminate, then kill what is left); nothing else is touched."""
    alive = end_processes(_cluster_processes(temp_dir, gcs_address), 15)
    assert not alive, f"cluster processes still running: {alive}"


@pytest.mark.slow
def test_training_joins_a_local_cluster(tiny_dataset, tiny_pipeline_doc, tmp_path, end_processes) -> None:
    import ray  # noqa: F401 - puts Ray's psutil on the path

    port = _free_port()
    client_port = next(p for p in iter(_free_port, None) if p != port)  # the Ray Client server's, not 10001
    gcs_address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="dhray", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Ray turns "127.0.0.1" into the machine's network address unless it runs as a one-machine cluster.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)  # the driver finds the head's token on its own
    try:
        head = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                               "--num-cpus=2", "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}",
                               f"--ray-client-server-port={client_port}", "--disable-usage-stats"],
                              env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120)
        assert head.returncode == 0, head.stderr[-2000:]
        assert _cluster_processes(temp_dir, gcs_address), "no process of the started head found"
        pipeline = tmp_path / "tiny.yaml"
        pipeline.write_text(yaml.safe_dump(tiny_pipeline_doc(tiny_dataset, epochs=1)))
        run = subprocess.run([sys.executable, "-m", "dh_tune.train", "--pipeline", str(pipeline), "--out",
                              str(tmp_path / "run"), "--ray-address", gcs_address, "--tracking-uri",
                              f"sqlite:///{tmp_path / 'mlflow.db'}"], env=env, capture_output=True, text=True,
                             timeout=300, cwd=Path(__file__).resolve().parents[1])
        assert run.returncode == 0, run.stderr[-3000:]
        # The run went through the cluster we started: its session folder holds the driver's job.
        sessions = list(Path(temp_dir).glob("session_*/logs"))
        assert sessions and any(p.name.startswith("job-driver") or "driver" in p.name
                                for s in sessions for p in s.iterdir()), "no driver log in the cluster's session"
        ckpt = torch.load(tmp_path / "run" / "weights" / "last.pt", map_location="cpu", weights_only=True)
        assert ckpt["epoch"] == 0
    finally:
        # Not `ray stop`: it ends every Ray process of this user on the machine, other clusters included.
        try:
            _stop_cluster(temp_dir, gcs_address, end_processes)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)
