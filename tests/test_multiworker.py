"""MultiWorkerMirroredStrategy: two local worker processes (TF_CONFIG on 127.0.0.1) train the same seeded student B
for two steps on different shards of one data set and must end with identical weights.

Each worker is tests/multiworker_worker.py; both are killed if they have not finished within WORKERS_TIMEOUT_S,
and every collective fails after 120 s, so a lost peer cannot hang the run.
"""

import json
import math
import os
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiworker_worker.py")
WORKERS_TIMEOUT_S = 300
N_WORKERS = 2


def _free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ, then released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path, n=3000):
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def _read_weights(path):
    """Every dataset of a Keras `.weights.h5` file, keyed by its HDF5 path."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("multiworker")
    workers = ",".join(f"127.0.0.1:{port}" for port in _free_ports(N_WORKERS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    procs, logs = [], []
    try:
        for index in range(N_WORKERS):
            log_path = out / f"worker{index}.log"
            logs.append(log_path)
            with open(log_path, "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, WORKER, "worker", "--workers", workers, "--index", str(index), "--out", str(out)],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                ))
        deadline = time.monotonic() + WORKERS_TIMEOUT_S
        for proc, log_path in zip(procs, logs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker still running after {WORKERS_TIMEOUT_S}s; log tail:\n{_tail(log_path)}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for index, (proc, log_path) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"worker {index} exited with {proc.returncode}; log tail:\n{_tail(log_path)}"
    return out


@pytest.mark.slow
def test_workers_end_with_identical_weights_that_moved(run_dir):
    initial = [_read_weights(run_dir / f"worker{i}.initial.weights.h5") for i in range(N_WORKERS)]
    final = [_read_weights(run_dir / f"worker{i}.weights.h5") for i in range(N_WORKERS)]
    assert len(final[0]) > 100 and all(set(f) == set(final[0]) for f in final + initial)
    for name in final[0]:
        np.testing.assert_array_equal(initial[1][name], initial[0][name], err_msg=f"initial {name}")
        np.testing.assert_array_equal(final[1][name], final[0][name], err_msg=name)
    # Every kernel, both heads' included, has a gradient, so two Adam steps move each by about 2 x lr.
    # (Head biases barely move: a spatial softmax is invariant to a constant shift of the logits.)
    kernels = [name for name, value in final[0].items() if value.ndim >= 2]
    assert len(kernels) > 20
    for name in kernels:
        assert np.abs(final[0][name] - initial[0][name]).max() > 1e-4, f"{name} did not move"


@pytest.mark.slow
def test_workers_report_two_replicas_and_the_same_metrics(run_dir):
    reports = []
    for i in range(N_WORKERS):
        with open(run_dir / f"worker{i}.json") as f:
            reports.append(json.load(f))
    assert [r["replicas"] for r in reports] == [N_WORKERS] * N_WORKERS
    history = reports[0]["history"]
    assert set(history) == {"loss", "kld", "cc", "labelled", "teacher_kld"}
    assert all(math.isfinite(v[-1]) for v in history.values())
    for other in reports[1:]:
        for name, values in history.items():
            np.testing.assert_allclose(other["history"][name], values, rtol=1e-6, err_msg=name)
