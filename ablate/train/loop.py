"""The built-in training loop for model/data studies.

Per epoch: train, evaluate, log once. Metrics accumulate on the device and are read once per
epoch (no per-step ``.item()``), so the loop costs almost nothing over a hand-written one.
Tasks follow the data: ``classification`` (``ImageData`` or ``ArrayData``: cross-entropy,
accuracy) and ``language_model`` (``TextData``: stateful BPTT, cross-entropy per character, bits
per character and perplexity).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ablate.config import DATA_DERIVED, canonical, factory_kwargs
from ablate.data.fingerprint import data_fingerprint
from ablate.data.images import ImageData
from ablate.train.artifacts import log_cams
from ablate.train.cost import PeakMemory, count_params, train_flops_per_sample
from ablate.train.optim import make_optimizer, make_scheduler
from ablate.train.run import Diverged, Run

LN2 = math.log(2)
# What the loop logs per epoch for each task (activation statistics: the artifact ACTIVATIONS).
LOGGED = {
    "classification": ("train_loss", "train_acc", "val_loss", "val_acc", "lr"),
    "language_model": ("train_loss", "val_loss", "val_bpc", "val_ppl", "lr"),
}


def fit(
    run: Run,
    model_fn: Callable[..., nn.Module],
    data_fn: Callable[..., Any],
) -> None:
    """Train ``model_fn(**model.*)`` on ``data_fn(**data.*)`` as ``run.config`` says."""
    config = run.config
    device = run.device
    memory = PeakMemory(device)  # this trial's peak, from here
    cuda = device.type == "cuda"
    data = data_fn(**factory_kwargs(config, "data"))
    task = getattr(data, "task", None)
    if task not in ("classification", "language_model"):
        raise TypeError(
            f"the data factory returned {type(data).__name__}, which has no task "
            f"'classification' or 'language_model'. Fix: return ablate.data.ImageData, "
            f"ArrayData (from_arrays) or TextData, or use train=fn for other tasks."
        )
    run.set_tags({"ablate.data": data_fingerprint(data)})  # what it trains on, as loaded
    channels_last = cuda and bool(config["train.channels_last"]) and isinstance(data, ImageData)
    data = data.to(device, channels_last=True) if channels_last else data.to(device)

    model = model_fn(**model_kwargs(model_fn, config, data.model_kwargs)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    compiled = _compiled(model, config.get("train.compile", False))
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, data.steps_per_epoch)
    extras = _Extras.of(config, data)
    # training loss (with train.label_smoothing); val_loss is always plain cross-entropy
    loss_fn = nn.CrossEntropyLoss(label_smoothing=extras.label_smoothing)
    ema = _ema(model, extras.ema)
    evaluated = compiled if ema is None else ema.module  # what val_* measure
    autocast = _autocast(device, bool(config["train.bf16"]))

    x0, y0 = next(iter(data.val_batches()))
    run.summary["n_params"] = count_params(model)
    model_key = (model_fn, canonical(factory_kwargs(config, "model")), str(device))
    run.summary["flops_per_sample"] = train_flops_per_sample(model, x0, loss_fn, y0, model_key)

    start = 0
    state = run.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start = int(state["epoch"])

    probe = _ActivationProbe(model) if config["train.activation_stats"] else None
    acts = _Activations(state.get("activations") if state is not None else None)
    try:
        for epoch in range(start, int(config["train.epochs"])):
            train_loss, train_acc = _train_epoch(
                compiled, data, optimizer, scheduler, loss_fn, autocast, run, epoch, config, ema
            )
            metrics = {"train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}
            if task == "classification":
                metrics["train_acc"] = train_acc
            metrics.update(_evaluate(evaluated, data, autocast, task, tta=extras.tta))
            if probe is not None:
                stats = probe.measure(x0)
                acts.add(epoch, stats)
                metrics.update({k: v for k, v in stats.items() if k == run.metric})
            run.log(metrics, step=epoch)  # one batched call; raises Diverged on a NaN loss
            if task == "language_model" and hasattr(model, "generate"):
                run.log_text(_sample(model, data), f"samples/epoch_{epoch:03d}.txt")
            run.save_checkpoint({
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                **({} if ema is None else {"ema": ema.state_dict()}),
                "epoch": epoch + 1,
                "activations": acts.state(),
            })
    except Diverged:
        acts.write(run)  # the epochs up to the divergence
        raise
    acts.write(run)
    peak = memory.mb()
    if peak is not None:
        run.summary["peak_mem_mb"] = peak
    final = model if ema is None else ema.module  # the weights val_* measured
    if config["train.keep_weights"]:
        run.keep_weights(final.state_dict())
    if config.get("train.cams"):
        log_cams(run, final, data)  # the report's class activation maps (cams.npz)


def _train_epoch(model, data, optimizer, scheduler, loss_fn, autocast, run, epoch, config, ema):
    model.train()
    _reset_state(model)
    clip = config["train.grad_clip"]
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.long)
    count = 0
    timing = config.get("train.compile") and "compile_seconds" not in run.summary
    start = time.perf_counter()
    for x, y in data.train_batches(seed=run.seed, epoch=epoch):
        with autocast():
            out = model(x)
            loss = loss_fn(_flat(out), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), float(clip))
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        n = y.numel()
        loss_sum += loss.detach().float() * n
        if out.dim() == 2:
            correct += (out.detach().argmax(-1) == y).sum()
        count += n
        if timing:  # the first step of a compiled model includes the compilation: one sync
            loss_sum.item()
            run.summary["compile_seconds"] = time.perf_counter() - start
            timing = False
    if count == 0:
        raise ValueError("the data produced no training batches. Fix: check data.batch_size.")
    return loss_sum / count, correct.float() / count


@torch.no_grad()
def _evaluate(model, data, autocast, task, *, tta: bool = False) -> dict[str, torch.Tensor]:
    """Validation loss (plain cross-entropy) and accuracy or bits per character; with ``tta``
    the logits are the mean of each image's and its horizontal mirror's."""
    model.eval()
    _reset_state(model)
    loss_fn = nn.CrossEntropyLoss()
    loss_sum = torch.zeros((), device=data.device)
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    count = 0
    for x, y in data.val_batches():
        with autocast():
            out = model(x)
            if tta:
                out = (out + model(x.flip(-1))) / 2
        loss_sum += loss_fn(_flat(out).float(), y.reshape(-1)) * y.numel()
        if task == "classification":
            correct += (out.argmax(-1) == y).sum()
        count += y.numel()
    _reset_state(model)
    val_loss = loss_sum / count
    if task == "classification":
        return {"val_loss": val_loss, "val_acc": correct.float() / count}
    return {"val_loss": val_loss, "val_bpc": val_loss / LN2, "val_ppl": torch.exp(val_loss)}


ACTIVATIONS = "activations.json"  # the artifact; ablate.track.Tracker.activations reads it


class _Activations:
    """Each epoch's activation statistics, kept on the device and attached once, when the trial
    ends, as the artifact ``activations.json`` (``{"keys": [...], "steps": [...], "values":
    [[...], ...]}``, one row per epoch) rather than as metrics: dozens of per-layer charts would
    bury the study metric in MLflow's UI. Saved in each checkpoint, so a resumed trial keeps the
    epochs before the interruption."""

    def __init__(self, saved: Mapping[str, Any] | None) -> None:
        self.keys: list[str] = list(saved["keys"]) if saved else []
        self.steps: list[int] = [int(s) for s in saved["steps"]] if saved else []
        self.values: list[torch.Tensor] = list(saved["values"].unbind(0)) if saved else []

    def add(self, step: int, stats: Mapping[str, torch.Tensor]) -> None:
        if not self.keys:
            self.keys = list(stats)
        self.steps.append(step)
        self.values.append(torch.stack([stats[k].detach().float().reshape(()) for k in self.keys]))

    def state(self) -> dict[str, Any] | None:
        if not self.values:
            return None
        return {"keys": self.keys, "steps": list(self.steps), "values": torch.stack(self.values)}

    def write(self, run: Run) -> None:
        if self.values:
            values = torch.stack(self.values).cpu().tolist()  # the one read from the device
            run.log_text(json.dumps({"keys": self.keys, "steps": self.steps, "values": values}),
                         ACTIVATIONS)


class _ActivationProbe:
    """Mean and std of each layer's output on a fixed batch, via forward hooks.

    Layers: the blocks of ``model.features`` and the classifier when the model has them (the
    built-in ConvNet), else every Conv/Linear/recurrent leaf module. Hooks live only while
    measuring.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        features = getattr(model, "features", None)
        if isinstance(features, nn.Sequential):
            layers = [(f"features.{n}", m) for n, m in features.named_children()]
            head = getattr(model, "classifier", None)
            layers += [("classifier", head)] if isinstance(head, nn.Module) else []
        else:
            kinds = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase, nn.Embedding)
            layers = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
        self.layers = [(n, m) for n, m in layers if not isinstance(m, nn.Identity)]

    @torch.no_grad()
    def measure(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stats: dict[str, torch.Tensor] = {}

        def hook(name: str) -> Callable[..., None]:
            def record(module: nn.Module, inputs: Any, output: Any) -> None:
                out = output[0] if isinstance(output, tuple) else output
                out = out.float()
                stats[f"act_mean/{name}"] = out.mean()
                stats[f"act_std/{name}"] = out.std()

            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in self.layers]
        was_training = self.model.training
        try:
            self.model.eval()
            _reset_state(self.model)
            self.model(x)
        finally:
            for h in handles:
                h.remove()
            _reset_state(self.model)
            self.model.train(was_training)
        return stats


SAMPLE_CHARS = 300


def _sample(model: nn.Module, data: Any) -> str:
    """Text generated from a fixed prompt with a fixed seed, so epochs and variants compare."""
    prompt = data.val[:40]
    generator = torch.Generator(device=prompt.device).manual_seed(0)
    # torch's stub types an unknown Module attribute as Tensor | Module, neither callable
    ids = model.generate(prompt, SAMPLE_CHARS, generator=generator)  # type: ignore[operator]
    return data.decode(prompt) + data.decode(ids)


def model_kwargs(
    model_fn: Callable[..., nn.Module], config: Mapping[str, Any], from_data: Mapping[str, Any]
) -> dict[str, Any]:
    """``model.*`` settings, plus what the data knows (classes, channels, ...) if accepted."""
    kwargs = factory_kwargs(config, "model")
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(model_fn).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_any = {}, False
    for key, value in from_data.items():
        if key in DATA_DERIVED and key not in kwargs and (takes_any or key in params):
            kwargs[key] = value
    return kwargs


@dataclass(frozen=True)
class _Extras:
    """The optional settings of the loop (``TRAIN_OPTIONAL``) that change what a trial learns
    or how it is measured, checked once before training. Each is absent from a study's config,
    and from its variant ids, unless the study sets it; absent means off.

    * ``train.label_smoothing``: the training loss's label smoothing, in [0, 1).
    * ``train.ema``: the decay of an exponential moving average of the weights (and of batch
      norm's running statistics), updated after every optimiser step; validation, the kept
      weights and the CAMs use the average. In (0, 1), or None.
    * ``train.tta``: validation on each image and its horizontal mirror, logits averaged
      (image data only).
    """

    label_smoothing: float = 0.0
    ema: float | None = None
    tta: bool = False

    @classmethod
    def of(cls, config: Mapping[str, Any], data: Any) -> _Extras:
        smoothing = config.get("train.label_smoothing", 0.0)
        ema = config.get("train.ema")
        tta = config.get("train.tta", False)
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not (
            0 <= smoothing < 1
        ):
            raise ValueError(f"train.label_smoothing={smoothing!r} must be a number in [0, 1). "
                             f"Fix: e.g. 0.1, or leave it out.")
        if ema is not None and (
            isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 < ema < 1
        ):
            raise ValueError(f"train.ema={ema!r} must be a decay in (0, 1) or None. "
                             f"Fix: e.g. 0.99 (about the last 100 steps), or leave it out.")
        if not isinstance(tta, bool):
            raise ValueError(f"train.tta={tta!r} must be True or False.")
        if tta and not isinstance(data, ImageData):
            raise ValueError(f"train.tta flips images, but the data is {type(data).__name__}. "
                             f"Fix: leave train.tta out for data that is not ImageData.")
        return cls(float(smoothing), None if ema is None else float(ema), tta)


def _ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """``train.ema``: torch's EMA of the weights and buffers (None: no average)."""
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _compiled(model: nn.Module, setting: Any) -> nn.Module:
    """``train.compile``: False, True (torch.compile's default backend) or a backend name.

    The compiled module shares the model's parameters; checkpoints save the plain model.
    """
    if not setting:
        return model
    # torch.compile of a Module returns an OptimizedModule (its stub says any callable)
    compiled = torch.compile(model) if setting is True else torch.compile(model, backend=setting)
    return cast(nn.Module, compiled)


def _flat(out: torch.Tensor) -> torch.Tensor:
    return out.reshape(-1, out.shape[-1]) if out.dim() > 2 else out


def _reset_state(model: nn.Module) -> None:
    reset = getattr(model, "reset_state", None)
    if callable(reset):
        reset()


def _autocast(device: torch.device, bf16: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of fresh autocast contexts: bf16 on CUDA when enabled, else a no-op."""
    if device.type == "cuda" and bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext
