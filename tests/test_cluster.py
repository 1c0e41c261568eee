"""Joining a Ray cluster: a head started with `ray start --head` on 127.0.0.1 runs a training that was
launched with --ray-address, and is stopped afterwards."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_pipeline_doc

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_training_joins_a_local_cluster(tiny_dataset, tmp_path) -> None:
    import ray

    if ray.is_initialized():  # `ray stop` below ends every Ray process of this machine
        ray.shutdown()
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Ray turns "127.0.0.1" into the machine's network address unless it runs as a one-machine cluster.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)  # the driver finds the head's token on its own
    head = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                           "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                          env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120)
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        pipeline = tmp_path / "tiny.yaml"
        pipeline.write_text(yaml.safe_dump(tiny_pipeline_doc(tiny_dataset, epochs=1)))
        run = subprocess.run([sys.executable, "-m", "dh_tune.train", "--pipeline", str(pipeline), "--out",
                              str(tmp_path / "run"), "--ray-address", f"127.0.0.1:{port}", "--tracking-uri",
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
        stop = subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr[-2000:]
