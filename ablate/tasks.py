"""Tasks: the datasets (or any data config) a study asks its question on, each checked.

``Study(..., tasks={"digits": {...}, "cifar": {...}})`` trains every variant on every seed of
each task. A task is a mapping of config overrides — dotted ``data.*``/``model.*``/``train.*``
keys for the built-in loop, any key of yours with ``train=fn`` — and, for the built-in loop, may
replace the study's data function with ``"data": image_folder`` (different datasets need
different loaders; the loop passes the model what each one's data knows: classes, channels,
image size, features) and its model function with ``"model": MLP`` (a conv net can't read
tabular rows; the factors must then be keywords of every task's model). A task sets no factor:
the factors are what the ablation varies, the same on every task.

The task's name joins each of its variants' resolved config as the key :data:`TASK_KEY`, so a
(variant, task) has its own id (and a ``train=fn`` reads ``config["task"]``); a study without
``tasks=`` has no such key and keeps its ids. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ablate.validate import (
    TIMEOUT,
    StudyError,
    check_key,
    check_plain,
    did_you_mean,
)

TASK_KEY = "task"  # the resolved config's key naming a variant's task (multi-task studies)
DATA_KEY = "data"  # a task's key replacing the study's data function (built-in loop)
MODEL_KEY = "model"  # a task's key replacing the study's model function (built-in loop)
MAX_TASKS = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


@dataclass(frozen=True)
class Task:
    """One task of a study: its name, its config overrides, and its data and model functions
    (None: the study's own ``data=``, ``model=``)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    data: Callable[..., Any] | None = None
    model: Callable[..., Any] | None = None


def tasks_of(
    tasks: Any, *, study: str, data: Any, train: Any, factors: Mapping[str, Any],
    adaptive: bool, model: Any = None,
) -> list[Task]:
    """The study's tasks, in the order given (``[]`` without ``tasks=``), each checked for what
    can be checked without the functions that receive its settings (those keys are checked by
    :func:`ablate.resolve.check_keys` against the task's model and data functions)."""
    if tasks is None:
        return []
    example = ("tasks={'digits': {'data.noise': 0.1}, 'cifar': {'data': image_folder, "
               "'data.path': 'data/cifar10'}}")
    if not isinstance(tasks, Mapping):
        raise StudyError(f"tasks={tasks!r} is not a dict of task name -> settings. Fix: e.g. "
                         f"{example}.")
    if len(tasks) < 2:
        what = "names no task" if not tasks else f"names one task ({next(iter(tasks))!r})"
        raise StudyError(
            f"tasks= of study {study!r} {what}; a multi-task study needs two or more. Fix: "
            f"drop tasks= (one task is the study itself: put its settings in config=), or "
            f"name another, e.g. {example}.")
    if len(tasks) > MAX_TASKS:
        raise StudyError(f"tasks= of study {study!r} names {len(tasks)} tasks; at most "
                         f"{MAX_TASKS}. Fix: split the study.")
    if adaptive:
        raise StudyError(
            f"study {study!r} has tasks= and seeds='adaptive': the adaptive stopping rule "
            f"compares each variant with one baseline, and a multi-task study has one per "
            f"task. Fix: give a seed count (seeds=5), or run one adaptive study per task.")
    out = []
    for name, settings in tasks.items():
        out.append(_task(name, settings, study=study, data=data, train=train, factors=factors,
                         model=model))
    seen: dict[str, str] = {}
    for task in out:
        key = repr((task.data, task.model, sorted((k, repr(v)) for k, v in
                                                  task.settings.items())))
        if key in seen:
            raise StudyError(
                f"tasks {seen[key]!r} and {task.name!r} of study {study!r} have the same "
                f"settings, so every variant would train the same thing twice. Fix: remove "
                f"one, or give each its own data or data.* settings.")
        seen[key] = task.name
    lower: dict[str, str] = {}
    for task in out:
        if task.name.lower() in lower:
            raise StudyError(
                f"task names {lower[task.name.lower()]!r} and {task.name!r} differ only in "
                f"case (report files and MLflow filters would mix them up). Fix: rename one.")
        lower[task.name.lower()] = task.name
    return out


_EXAMPLES = {DATA_KEY: "image_folder", MODEL_KEY: "MLP"}  # what a task's function may be


def _task(name: Any, settings: Any, *, study: str, data: Any, train: Any,
          factors: Mapping[str, Any], model: Any = None) -> Task:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-._")[:40] or "task1"
        raise StudyError(
            f"task name {name!r} can't be used: a task names runs, report sections and files. "
            f"Fix: use 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"e.g. {suggestion!r}.")
    where = f"task {name!r}"
    if not isinstance(settings, Mapping):
        raise StudyError(
            f"{where} has settings {settings!r}, which is not a dict. Fix: give its config "
            f"overrides as a dict, e.g. {{'data.path': 'data/{name}'}}"
            + (", and its data function as 'data'." if train is None else "."))
    builtin = train is None
    own: dict[str, Any] = {}  # DATA_KEY / MODEL_KEY -> the task's own function
    values = {}
    for key, value in settings.items():
        if key in _EXAMPLES:
            if not builtin:
                what = "loads its own data" if key == DATA_KEY else "builds its own model"
                raise StudyError(
                    f"{where} sets {key!r}, but study {study!r} trains with train=fn, which "
                    f"{what}. Fix: give the task settings your train function reads, e.g. "
                    f"{{'dataset': {name!r}}} (config['task'] names it, too).")
            if not callable(value):
                raise StudyError(
                    f"{where} sets {key!r} to {value!r}, which is not callable. Fix: pass the "
                    f"{key} function or class itself, e.g. {key!r}: {_EXAMPLES[key]} (not its "
                    f"result).")
            own[key] = value
            continue
        if key == TASK_KEY:
            raise StudyError(
                f"{where} sets {TASK_KEY!r}, the key that names each variant's task (its value "
                f"is the task's name, {name!r}). Fix: remove it.")
        check_key(key, where, builtin)
        if key == TIMEOUT:
            raise StudyError(
                f"{where} sets {TIMEOUT}, which bounds every trial of the study alike. Fix: "
                f"set it in config= (or with --set {TIMEOUT}=SECONDS).")
        if key in factors:
            raise StudyError(
                f"{where} sets {key!r}, a factor of study {study!r}: the factors are what the "
                f"ablation varies, the same on every task. Fix: remove {key!r} from the task, "
                f"or make the setting a task's own by dropping it from factors=.")
        check_plain(value, f"{where}[{key!r}]")
        values[key] = value
    for key, base in ((DATA_KEY, data), (MODEL_KEY, model)):
        if builtin and key not in own and base is None:
            raise StudyError(
                f"{where} has no {key}: study {study!r} passes no {key}= and the task sets no "
                f"{key!r}. Fix: pass {key}= to the study, or add {key!r}: <your {key} "
                f"function> to the task.")
    return Task(name, values, own.get(DATA_KEY), own.get(MODEL_KEY))


def check_task_model(task: Task, factors: Mapping[str, Any], config: Mapping[str, Any],
                     model: Any) -> None:
    """A task's own model takes every ``model.*`` factor and base setting: the factors are the
    same on every task, so each task's model must have them as keywords (the task's own
    settings are checked with its data's by :func:`ablate.resolve.check_keys`)."""
    accepted = _keywords(model)
    if accepted is None:  # **kwargs: takes anything
        return
    name = getattr(model, "__name__", repr(model))
    for key in [*factors, *config]:
        ns, _, param = key.partition(".")
        if ns != MODEL_KEY or param in accepted:
            continue
        what = "factor" if key in factors else "config key"
        fix = (f"give {name} a {param!r} keyword (the toggle, with the baseline as its default), "
               f"or drop the factor" if key in factors else
               f"move {key!r} from config= into the settings of the tasks whose model takes it")
        raise StudyError(
            f"task {task.name!r}: {what} {key!r} is not a keyword of its model {name} "
            f"(it takes {', '.join(sorted(accepted)) or 'none'}); every task's model must "
            f"take every factor and base model.* setting. Fix: {fix}.")


def _keywords(fn: Any) -> set[str] | None:
    """The keywords ``fn`` accepts (None: it takes ``**kwargs`` or can't be inspected)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_reserved(keys: Any, tasks: list[Task], where: str = "config") -> None:
    """A multi-task study's settings and factors don't set :data:`TASK_KEY` (``train=fn`` keys
    are free-form, so this is the one place that name is reserved)."""
    if tasks and TASK_KEY in keys:
        raise StudyError(
            f"{where} key {TASK_KEY!r} is reserved in a study with tasks=: each variant's "
            f"config names its task there. Fix: rename your key (e.g. 'dataset').")


def check_set(overrides: Mapping[str, Any], tasks: list[Task], study: str) -> None:
    """``--set key=value`` changes a base setting; a key some task sets would be overridden by
    the task there, silently: refused."""
    for key in overrides:
        setters = [t.name for t in tasks if key in t.settings or (key == DATA_KEY and t.data)
                   or (key == MODEL_KEY and t.model)]
        if setters:
            raise StudyError(
                f"--set {key}=...: task(s) {', '.join(map(repr, setters))} of study {study!r} "
                f"set {key!r} themselves, and a task's setting wins over a base one. Fix: "
                f"change it in the task(s) in the study file.")
        check_reserved([key], tasks, "--set")


def unknown_task(name: str, tasks: list[Task]) -> StudyError:
    """The error for a task name the study does not have."""
    names = [t.name for t in tasks]
    return StudyError(f"no task {name!r}{did_you_mean(name, names)} Tasks: "
                      f"{', '.join(names)}.")
