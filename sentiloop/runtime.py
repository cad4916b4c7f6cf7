"""Process-wide settings, owned here so that no other module changes them behind a caller's back.

The CLI's ``main`` calls :func:`prepare_environment` before anything heavy is imported, and each
command that runs a model calls :func:`use_threads` once. Members never touch either: their
randomness is their own (:func:`sentiloop.models.torch_common.seeded`).
"""

from __future__ import annotations

import os

# Defaults only (a value the user exported wins). OpenMP's default busy-waiting made training 7-20x
# slower on 2 shared cores; MLflow's telemetry and async logging would reach beyond 127.0.0.1.
_ENVIRONMENT_DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow (the keras LSTM) would log CPU-feature notes at every start
}


def prepare_environment() -> None:
    """Set the environment defaults above (idempotent; must run before torch or mlflow is imported)."""
    for name, value in _ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


# The daemon talks to MLflow only to follow the champion alias and to move it: a registry that is
# down must cost a few seconds per look, not minutes of retries (MLflow's defaults), so promotion,
# rollback and shutdown stay prompt. The retrain worker keeps MLflow's patient defaults.
_DAEMON_ENVIRONMENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
_set_for_the_daemon: set[str] = set()  # the names prepare_daemon_environment set (the user had not)


def prepare_daemon_environment() -> None:
    """The daemon's own defaults above (a value the user exported wins)."""
    for name, value in _DAEMON_ENVIRONMENT_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_for_the_daemon.add(name)


def worker_environment() -> dict[str, str]:
    """The environment a retrain worker starts with: the daemon's, less the daemon-only defaults."""
    return {name: value for name, value in os.environ.items() if name not in _set_for_the_daemon}


def use_threads(threads: int) -> None:
    """The intra-op thread count of this process's models (``models.threads``): torch's, and TensorFlow's.

    TensorFlow reads its counts once, when it starts; it is imported only by the keras LSTM, after this.
    """
    import torch

    torch.set_num_threads(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def die_with_parent(parent_pid: int) -> None:
    """Make this process (a retrain worker) die with the daemon that started it, even by SIGKILL.

    A worker left running after its daemon was killed could promote a challenger while another
    replica, now the leader, runs a retrain of its own. Linux ``PR_SET_PDEATHSIG``; elsewhere the
    check below still catches a parent that is already gone.
    """
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the daemon died before the call above took effect
        raise SystemExit(f"the daemon (pid {parent_pid}) that started this retrain is gone")
