"""The handle a training function gets: ``run.log``, seeds, device, checkpoints.

``Run`` knows nothing of MLflow: the executor gives it a ``sink`` that receives the metrics.
The built-in loop and a user's ``train(config, run)`` use the same handle, so both get the same
tracking, divergence guard, checkpoints and resume.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ablate.validate import StudyError

__all__ = ["Diverged", "MetricMissing", "Run", "resolve_device", "seed_everything"]

CHECKPOINT = "checkpoint.pt"


class Diverged(Exception):
    """The loss became NaN or infinite: the trial ends with status ``diverged`` (a result)."""


class MetricMissing(StudyError):
    """The study metric was never logged: the study can't be judged, so it stops (exit 2)."""


Sink = Callable[[dict[str, float], int], None]


class Run:
    """What training code sees of one trial.

    Attributes:
        config: the resolved config (dotted keys).
        seed: the trial's seed (Python, NumPy and torch are already seeded with it).
        device: the ``torch.device`` to train on.
        checkpoint_dir: a directory private to this trial, kept until the trial ends.
        resumed: True when a checkpoint from an interrupted attempt was found.
        summary: extra summary metrics logged when the trial ends (the loop adds cost figures).
        tags: the tags :meth:`set_tags` recorded on the trial's run.
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        seed: int,
        device: torch.device,
        checkpoint_dir: Path,
        metric: str,
        mode: str,
        sink: Sink,
        logged_through: int = -1,
        on_log: Callable[[dict[str, float], int], None] | None = None,
        artifact_sink: Callable[[Path, str | None], None] | None = None,
        tag_sink: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.config = dict(config)
        self.seed = seed
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir)
        self.metric = metric
        self.mode = mode
        self.summary: dict[str, float] = {}
        self.metric_history: list[float] = []  # the study metric, one value per logged step
        self.logged_keys: set[str] = set()
        self.last_step = -1
        self.resumed = False
        self._t0 = time.perf_counter()
        self._earlier_seconds = 0.0  # time spent by earlier attempts, restored from a checkpoint
        self._sink = sink
        self._logged_through = logged_through
        self._on_log = on_log
        self._artifact_sink = artifact_sink
        self._tag_sink = tag_sink
        self.tags: dict[str, str] = {}  # what set_tags recorded on this trial
        self._first_step: int | None = None
        self._pending: dict[str, float] = {}  # this step's metrics, not yet sent to the sink
        self._pending_step: int | None = None
        self._pending_metric_step: int | None = None  # the step metric_history[-1] is from

    # --------------------------------------------------------------------------- metrics
    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log metrics for ``step`` (an epoch).

        Values may be Python numbers or 0-d tensors (read once here). Several calls for the
        same step are merged (a key given twice keeps its last value) and sent to the tracking
        store in one batched call when the step changes, at a checkpoint or when the trial
        ends. A NaN or infinite loss or study metric raises :class:`Diverged` after it is
        logged, so the history shows it. Steps already logged by an earlier, interrupted
        attempt of the same trial are not logged twice.
        """
        values = _to_floats(metrics)
        if self._pending_step is not None and step != self._pending_step:
            self.flush()
        self._pending_step = step
        self._pending.update(values)
        self.logged_keys.update(values)
        if self._first_step is None:
            self._first_step = step
        self.last_step = max(self.last_step, step)
        if self.metric in values:
            if self._pending_metric_step == step and self.metric_history:
                self.metric_history[-1] = values[self.metric]
            else:
                self.metric_history.append(values[self.metric])
            self._pending_metric_step = step
        if self._on_log is not None:
            self._on_log(values, step)
        bad = [k for k, v in values.items() if not math.isfinite(v) and _guarded(k, self.metric)]
        if bad:
            self.flush()
            raise Diverged(f"{bad[0]} = {values[bad[0]]} at step {step}")
        if step > self._first_step:
            self.require_metric()

    def flush(self) -> None:
        """Send the current step's merged metrics to the tracking store (once per step)."""
        step, values = self._pending_step, self._pending
        self._pending, self._pending_step = {}, None
        if step is not None and values and step > self._logged_through:
            self._sink(values, step)
            self._logged_through = step

    def require_metric(self) -> None:
        """Raise :class:`MetricMissing` if the study metric has not been logged."""
        if self.metric not in self.logged_keys:
            logged = ", ".join(sorted(self.logged_keys)) or "nothing"
            raise MetricMissing(
                f"the study metric {self.metric!r} was never logged (logged: {logged}). Fix: set "
                f"metric= in the Study to one of those, or log {self.metric!r} with run.log()."
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Record ``tags`` (string values) on this trial's run, e.g. the built-in loop's
        ``ablate.data``, the fingerprint of the data it trains on."""
        values = {str(k): str(v) for k, v in tags.items()}
        self.tags.update(values)
        if self._tag_sink is not None:
            self._tag_sink(values)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """Attach a file to this trial's run (copied to the tracking store, under ``folder``)."""
        if self._artifact_sink is not None:
            self._artifact_sink(Path(path), folder)

    def log_text(self, text: str, name: str) -> None:
        """Attach ``text`` as the artifact file ``name`` (e.g. ``samples/epoch_3.txt``)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            path.write_text(text, encoding="utf-8")
            self.log_artifact(path, str(Path(name).parent) if "/" in name else None)

    def keep_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Attach the model's ``state_dict`` as ``weights.pt`` (load with weights_only=True)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "weights.pt"
            torch.save(dict(state_dict), path)
            self.log_artifact(path)

    # ------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_dir / CHECKPOINT

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Save ``state`` (tensors, state_dicts, numbers) with the RNG states, atomically.

        Written to a temporary file in the same directory, flushed, then renamed over the old
        checkpoint: a crash mid-write leaves the previous checkpoint intact.
        """
        self.flush()  # what the checkpoint resumes after is in the store
        payload = {
            "state": dict(state),
            "ablate": {
                "rng": _rng_state(),
                "metric_history": list(self.metric_history),
                "logged_keys": sorted(self.logged_keys),
                "last_step": self.last_step,
                "seconds": self.train_seconds,
            },
        }
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.checkpoint_dir, prefix=".checkpoint-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.checkpoint_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The state saved by :meth:`save_checkpoint`, with RNG states restored; None if none.

        Loaded with ``weights_only=True``: a checkpoint holding arbitrary pickled objects is
        refused. A corrupt or refused checkpoint is discarded with a warning and the trial
        restarts from scratch.
        """
        path = self.checkpoint_path
        if not path.exists():
            return None
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)
            state, meta = payload["state"], payload["ablate"]
            _set_rng_state(meta["rng"])
        except Exception as exc:
            if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
                why = ("it holds pickled objects other than tensors and plain data, which "
                       "loading with weights_only=True refuses (a checkpoint written by "
                       "run.save_checkpoint never does)")
            else:
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            warnings.warn(
                f"discarded the unreadable checkpoint {path}: {why}. It was deleted unread, and "
                f"the trial restarts from scratch.",
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
            return None
        self.metric_history = list(meta["metric_history"])
        self.logged_keys = set(meta["logged_keys"])
        self.last_step = int(meta["last_step"])
        self._earlier_seconds = float(meta["seconds"])
        self._t0 = time.perf_counter()
        self.resumed = True
        return state

    def clear_checkpoint(self) -> None:
        self.checkpoint_path.unlink(missing_ok=True)
        for tmp in self.checkpoint_dir.glob(".checkpoint-*.tmp"):
            tmp.unlink(missing_ok=True)
        try:
            self.checkpoint_dir.rmdir()
        except OSError:
            pass

    # ------------------------------------------------------------------------- summary
    @property
    def train_seconds(self) -> float:
        """Wall time of this trial so far, including earlier interrupted attempts."""
        return self._earlier_seconds + time.perf_counter() - self._t0

    def final_summary(self) -> dict[str, float]:
        """Final and best of the study metric plus the summary figures set by the loop."""
        self.flush()
        out = dict(self.summary)
        if self.metric_history:
            finite = [v for v in self.metric_history if math.isfinite(v)]
            out[f"final_{self.metric}"] = self.metric_history[-1]
            if finite:
                out[f"best_{self.metric}"] = (max if self.mode == "max" else min)(finite)
        return out


def _guarded(key: str, metric: str) -> bool:
    return key == metric or "loss" in key.lower()


def _to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Python floats; 0-d tensors are read from the device in one copy (one sync per epoch)."""
    tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
    read: dict[str, float] = {}
    if tensors:
        stacked = torch.stack([v.detach().float().reshape(()) for v in tensors.values()])
        read = dict(zip(tensors, stacked.cpu().tolist()))
    return {k: read[k] if k in read else float(v) for k, v in metrics.items()}


def _rng_state() -> dict[str, Any]:
    # the legacy tuple (MT19937): numpy's stub types a call without legacy= as the dict form
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state: dict[str, Any] = {
        "python": _python_state_to_tensor(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": (int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = random.getstate()
    random.setstate((version, tuple(int(x) for x in state["python"].tolist()), gauss))
    keys = state["numpy"].numpy().astype(np.uint32)
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(("MT19937", keys, state["numpy_pos"], has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _python_state_to_tensor() -> torch.Tensor:
    return torch.tensor(random.getstate()[1], dtype=torch.int64)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; anything else is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available on this machine. "
                           f"Fix: --set train.device=auto (or cpu).")
    return device


INDUCTOR_CONFIG = "torch._inductor.config"
INDUCTOR_DETERMINISTIC = "TORCHINDUCTOR_DETERMINISTIC"  # read by torch._inductor.config


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic algorithms on (the default) or off with cuDNN autotuning for speed.

    ``torch.use_deterministic_algorithms`` sets torch's flag and TorchInductor's
    ``config.deterministic``, importing ``torch._inductor.config`` to do so: that import pulls
    in ``torch._dynamo`` (~800 modules, ~2 s), which a trial that doesn't compile never needs.
    No public call sets the flag alone, so until Inductor's config is imported (by
    ``train.compile``, or anything else), the flag is set by the function that
    ``use_deterministic_algorithms`` calls, ``torch._C._set_deterministic_algorithms``, and
    Inductor's setting is left in ``TORCHINDUCTOR_DETERMINISTIC``, which its config reads when
    imported: the same state either way. Once the config is imported, the public call is used.
    """
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if INDUCTOR_CONFIG in sys.modules or flag is None:
        torch.use_deterministic_algorithms(deterministic)
    else:
        os.environ[INDUCTOR_DETERMINISTIC] = "1" if deterministic else "0"
        flag(deterministic, warn_only=False)
    torch.backends.cudnn.benchmark = not deterministic
