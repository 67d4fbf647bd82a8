"""Study files: load one with the command line's changes, parse ``--set``, hash the study's code.

A :class:`StudySource` names a study file and what the command line changes in it (``--study``,
``--set``, ``--seeds``, ``--tune-trials``): the one value the CLI loads a study from and the one
a Ray worker loads it again from. A study file is Python code and runs with your permissions,
like any script. Standard library only.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ablate.validate import StudyError, did_you_mean

if TYPE_CHECKING:
    from ablate.study import Study


@dataclass(frozen=True)
class StudySource:
    """A study file and what the command line changes in it.

    Args:
        path: the study file.
        name: which study (``--study``), where the file defines several.
        overrides: base settings to replace (``--set key=value``).
        seeds: other seeds (``--seeds``): a count, a list, or ``"adaptive"``.
        tune_trials: another tuning budget per variant (``--tune-trials``).
    """

    path: str | os.PathLike[str]
    name: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    seeds: int | Sequence[int] | Literal["adaptive"] | None = None
    tune_trials: int | None = None

    def load(self, file: str | os.PathLike[str] | None = None) -> Study:
        """Import the study file and return its :class:`Study` with the changes applied.

        ``file``: where to read it instead, a copy of ``path`` (a Ray worker's shipped copy);
        the study's ``source`` is then still ``path``. Raises :class:`StudyError` with the file
        and line for every way this can go wrong.
        """
        path = Path(self.path if file is None else file)
        study = _import(path, self.name)
        if self.overrides or self.seeds is not None or self.tune_trials is not None:
            try:
                study = study.with_overrides(self.overrides, seeds=self.seeds,
                                             tune_trials=self.tune_trials)
            except StudyError as exc:
                raise StudyError(f"{path}: {exc}") from None
        study.fingerprint  # noqa: B018 - the code as loaded now, not as it may be edited later
        if file is not None:
            study.source = str(self.path)
        return study


def load_study(
    path: str | os.PathLike[str],
    name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seeds: int | Sequence[int] | Literal["adaptive"] | None = None,
    tune_trials: int | None = None,
) -> Study:
    """Import a study file and return its :class:`Study` (the one named ``name`` if several),
    with ``overrides``, ``seeds`` and ``tune_trials`` applied: ``StudySource(...).load()``.

    A study file is Python code and runs with your permissions, like any script.
    Raises :class:`StudyError` with the file and line for every way this can go wrong.
    """
    return StudySource(path, name, dict(overrides or {}), seeds, tune_trials).load()


def _import(path: Path, name: str | None) -> Study:
    """The study ``name`` (or the only one) that the file at ``path`` defines, as written."""
    from ablate.study import Study

    if not path.exists():
        hint = ""
        if path.parent.exists():
            near = difflib.get_close_matches(path.name, [p.name for p in path.parent.glob("*.py")])
            hint = f" Did you mean {str(path.parent / near[0])!r}?" if near else ""
        raise StudyError(f"study file {str(path)!r} does not exist.{hint}")
    if path.is_dir() or path.suffix != ".py":
        raise StudyError(f"{str(path)!r} is not a Python file. Fix: pass a study file like "
                         f"studies/quick.py.")
    module_name = "ablate_study_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # so pickling (e.g. for Ray) finds the study's functions
    folder = str(path.resolve().parent)  # its own modules import, as with `python STUDY.py`
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        text = (exc.text or "").rstrip()
        raise StudyError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}" + (f"\n    {text}" if text else "")
        ) from None
    except StudyError as exc:
        sys.modules.pop(module_name, None)
        raise StudyError(f"{path}:{_line_in(exc, path)}: invalid study: {exc}") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise StudyError(
            f"{path}:{_line_in(exc, path)}: the study file raised {type(exc).__name__}: {exc}\n"
            f"Fix the error in the study file; its traceback:\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        ) from None
    studies = {v.name: v for v in vars(module).values() if isinstance(v, Study)}
    if not studies:
        raise StudyError(
            f"{path} defines no Study. Fix: create one at module level, e.g. "
            f"study = Study('my-study', model=..., data=..., factors={{...}})."
        )
    if name is None and len(studies) > 1:
        raise StudyError(
            f"{path} defines {len(studies)} studies ({', '.join(sorted(studies))}). Fix: choose "
            f"one with --study NAME."
        )
    if name is not None and name not in studies:
        raise StudyError(
            f"{path} has no study named {name!r}{did_you_mean(name, list(studies))} "
            f"Studies in it: {', '.join(sorted(studies))}."
        )
    study = studies[name] if name is not None else next(iter(studies.values()))
    study.source = str(path)
    return study


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value), the value parsed as a Python literal (else a string)."""
    import ast

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise StudyError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=2.")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        if re.fullmatch(r"[^\s'\"()\[\]{},]+", raw.strip()):
            value = raw.strip()  # a bare word or path: a string (--set data.path=./corpus.txt)
        else:
            raise StudyError(
                f"--set {text!r}: {raw!r} is not a Python literal. Fix: quote strings "
                f"(--set 'data.path=\"my file.txt\"'), write numbers, True/False/None, tuples."
            ) from None
    return key, value


def _line_in(exc: BaseException, path: Path) -> int | str:
    """The last line of the study file in the exception's traceback."""
    line: int | str = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno or "?"
    return line
