"""What a trial is trained with, read in the process that trains it (recorded as tags)."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["environment"]


def environment(source: str | None, device: torch.device) -> dict[str, str]:
    """Versions, code and hardware of this process for a trial on ``device``.

    Keys: ``ablate``, ``git_commit`` and ``git_dirty`` (of the study file's repository),
    ``python``, ``torch``, ``cuda``, ``cudnn``, ``platform``, ``cpu``, ``gpu``, ``device``.
    Values are strings; ``""`` where there is nothing to say (no git, no CUDA).
    """
    gpu = ""
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    return {**_machine(), **_git(source), "gpu": gpu, "device": str(device)}


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ablate_version = version("ablate-studies")
    except PackageNotFoundError:
        ablate_version = ""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "ablate": ablate_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "" if torch.cuda.is_available() else "",
        "cudnn": str(cudnn) if cudnn and torch.cuda.is_available() else "",
        "platform": platform.platform(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=8)
def _git(source: str | None) -> dict[str, str]:
    """The commit of the repository holding the study file, and whether that file or any
    tracked file differs from it."""
    if not source:
        return {"git_commit": "", "git_dirty": ""}
    folder = str(Path(source).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return {"git_commit": "", "git_dirty": ""}
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": "", "git_dirty": ""}
    return {"git_commit": head.stdout.strip()[:12],
            "git_dirty": "true" if dirty.stdout.strip() else "false"}
