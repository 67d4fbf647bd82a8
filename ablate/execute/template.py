"""The template that ``ablate run``'s worker processes are forked from.

A light module (it imports nothing of torch's, MLflow's or ablate's training code) so that
``ablate run`` can start the template first thing, before it loads the study: the template's
imports (:data:`TEMPLATE_MODULES`, ~5 CPU-seconds) then overlap the driver's own loading,
planning and checks, and forking a worker from it takes milliseconds
(see :mod:`ablate.execute.pool`)."""

from __future__ import annotations

import os
import signal
import sys

GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL

# What the template imports for every worker: torch (~2 s), torch._dynamo (~2 s: the built-in
# loop's FLOP counter and torch.compile import it), MLflow with its SQL store, SQLAlchemy and
# alembic (~2 s: opening a store imports them), scipy.special (~0.3 s: a variant row's interval),
# torchvision (the image data), ablate's own.
TEMPLATE_MODULES = (
    "torch", "torch._dynamo", "torchvision", "scipy.special",
    "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.db.utils", "alembic.command",
    "alembic.config", "alembic.script", "alembic.runtime.migration",
    "sqlalchemy.dialects.sqlite",
    "ablate.execute.pool", "ablate.execute.trial", "ablate.execute.tuning", "ablate.train.loop",
    "ablate.train.env", "ablate.train.search", "ablate.models", "ablate.data",
)


def cpus() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))  # (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def start_method() -> str:
    """How workers start: ``forkserver`` (forked from the template) where the platform has it,
    else ``spawn`` (a fresh interpreter each, a few seconds of imports)."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def start_template() -> bool:
    """Start the template that workers are forked from, now, in the background (it imports
    :data:`TEMPLATE_MODULES`, ~5 CPU-seconds, once; forking a worker from it then takes
    milliseconds). Returns at once; False where workers are spawned instead. Idempotent: a
    template already running is kept (it lives as long as this process)."""
    import multiprocessing
    from multiprocessing import forkserver

    if start_method() != "forkserver":
        return False
    multiprocessing.set_forkserver_preload(list(TEMPLATE_MODULES))  # read when it starts
    forkserver.ensure_running()
    return True


def stop_template() -> None:
    """End the template now, if it runs and no worker was forked from it yet (a study whose
    trials turned out to be done, or one trial, which trains in process): whatever it still
    imports stops taking a core. A later worker starts a new one. (multiprocessing keeps the
    template's pid in a private attribute; without it, this does nothing.)"""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    stop = getattr(server, "_stop", None)
    if pid is None or stop is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    stop()  # reaps it, forgets it


def start_early(workers: int | str | None) -> bool:
    """What ``ablate run`` calls first, before it loads the study: start the template when
    worker processes are likely (``workers`` other than 1; ``auto`` on a machine with 2 CPUs or
    more and no GPU), so that its imports overlap the driver's own. Returns whether it did."""
    if workers not in (None, "auto"):
        return int(workers) > 1 and start_template()
    if cpus() < 2 or sys.platform == "darwin" or any(map(os.path.exists, GPU_DEVICE_FILES)):
        return False  # (a Mac's auto device is its GPU, mps: trials train in process)
    return start_template()
