"""The code fingerprint: a hash of the code that produces a trial's results. Standard library only.

What it covers: the study's ``model``, ``data`` and ``train`` functions (or classes), the data
functions its tasks use instead of ``data`` (``tasks=``; none without), and, walked
transitively through the names their code uses (``co_names`` of every nested code object, looked
up in the function's globals, its closure and its defaults), every function and class they reach
that is *code of the study*: defined in the study file, in a module of the user's own (any module
whose file is not in the standard library or in site-packages/dist-packages, e.g. ``helpers.py``
beside the study file) or in ablate itself, plus the values of plain constants (numbers, strings
and containers of them) those functions read from their module. A name that resolves to a module
of the user's (``import helpers``) stands for the attributes of that module the code names.

How: each function's and class's source, parsed, with docstrings and other bare string
statements removed, as ``ast.dump`` (no line numbers): comments, docstrings, blank lines and
formatting don't count; any change to what the code does, including a default value in a
signature, does. Lambdas: only the lambda's own expression, not the line around it.

What it does not cover: the ``Study(...)`` declaration, its factors, config and seeds (they are
in the plan and in each variant's id), code the functions don't reach, and libraries
(torch, numpy, ...: their versions are recorded per trial as ``ablate.env.*``). ablate's own
model and data functions (``ablate.models.ConvNet``, ``ablate.data.digits``, ...) are walked like
the user's: what they compute is what the study chose, and an edit to them changes results
without changing ablate's version (a development checkout), while a new release that leaves them
alone changes nothing. The built-in training loop is not part of the fingerprint; ablate's
version, recorded per trial, covers it.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import inspect
import linecache
import os
import sys
import sysconfig
import textwrap
import types
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Protocol


class Study(Protocol):
    """What a fingerprint reads of a study (:class:`ablate.study.Study`, not imported here:
    the study imports this module)."""

    model: Any
    data: Any
    train: Any
    task_data: Any  # task name -> the data function a task uses instead of ``data``
    task_models: Any  # task name -> the model function a task uses instead of ``model``

MAX_OBJECTS = 2000  # functions and classes walked at most (a bound, never reached in practice)
STUDY_MODULE = "ablate_study_"  # the prefix of the module name a study file is imported as
_LIBRARY_DIRS = ("site-packages", "dist-packages")


def code_fingerprint(study: Study) -> str:
    """A hash (12 hex digits) of the code that produces the study's results: its model, data
    and train functions and what they use (see the module docstring). Recorded on every trial
    as ``ablate.code``; a rerun that finds it changed asks once."""
    linecache.checkcache()  # inspect reads sources through it: see edits made since
    walk = _Walk()
    roots = [f"{role}={walk.root(getattr(study, role, None))}"
             for role in ("model", "data", "train")]
    roots += [f"task {name}: data={walk.root(fn)}"  # none without tasks: as before
              for name, fn in sorted(getattr(study, "task_data", {}).items())]
    roots += [f"task {name}: model={walk.root(fn)}"  # none unless a task sets 'model'
              for name, fn in sorted(getattr(study, "task_models", {}).items())]
    walk.run()
    digest = hashlib.sha256()
    for line in roots:
        digest.update(f"{line}\n".encode())
    for key in sorted(walk.parts):
        digest.update(f"{key}\0{walk.parts[key]}\n".encode())
    return digest.hexdigest()[:12]


def code_parts(study: Study) -> dict[str, str]:
    """What :func:`code_fingerprint` hashes, by object (``module:qualname``): to see why two
    fingerprints differ."""
    linecache.checkcache()
    walk = _Walk()
    for role in ("model", "data", "train"):
        walk.root(getattr(study, role, None))
    for fn in [*getattr(study, "task_data", {}).values(),
               *getattr(study, "task_models", {}).values()]:
        walk.root(fn)
    walk.run()
    return dict(walk.parts)


class _Walk:
    """Breadth-first over the study's functions and classes and what they reach."""

    def __init__(self) -> None:
        self.parts: dict[str, str] = {}  # key -> normalised source, or a constant's value
        self.queue: deque[Any] = deque()
        self.seen: set[str] = set()

    def root(self, obj: Any) -> str:
        """Queue a model/data/train object; its name (also for a library's function)."""
        if obj is None:
            return "-"
        target = _code_object(obj)
        if target is None:  # a callable instance: its class is the code
            self.add(type(obj))
            return f"{_key(type(obj))}()"
        self.add(target)
        name = _key(target)
        if isinstance(obj, functools.partial):  # a partial's bound arguments are code too
            bound = _literal((obj.args, sorted(obj.keywords.items())))
            name += f"(partial {bound if bound is not None else '?'})"
        return name

    def add(self, obj: Any) -> None:
        """Queue a function or class of the study's code (anything else is ignored)."""
        if not _ours(obj) or _generated(obj):
            return
        key = _key(obj)
        if key in self.seen or len(self.seen) >= MAX_OBJECTS:
            return
        self.seen.add(key)
        self.queue.append(obj)

    def run(self) -> None:
        while self.queue:
            obj = self.queue.popleft()
            self.parts[_key(obj)] = _source(obj)
            if isinstance(obj, type):
                for base in obj.__bases__:
                    self.add(base)
                for fn in _methods(obj):
                    self._references(fn)
            else:
                self._references(obj)

    def _references(self, fn: types.FunctionType) -> None:
        """What ``fn``'s code names: in its globals, its closure and its default values."""
        names = _code_names(fn.__code__)
        module = str(fn.__globals__.get("__name__", ""))
        for name in sorted(names):
            if name in fn.__globals__ and not _dunder(name):
                self._reference(fn.__globals__[name], names, module, name)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            self._reference(value, names, None, f"{_key(fn)}.<closure {name}>")
        for value in (*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()):
            self._reference(value, names, None, "")

    def _reference(self, value: Any, names: set[str], module: str | None, name: str,
                   depth: int = 0) -> None:
        """A value the code uses: code is walked; a global of the study's code that is data
        (a constant, a tensor, an instance) counts by the statement that assigns it in its
        module (``ACT = nn.GELU()``), else by its value if it is a plain constant."""
        if isinstance(value, types.ModuleType):
            if depth == 0 and _ours_module(value):  # helpers.make_block(...)
                for attr_name in sorted(n for n in names if not _dunder(n)):
                    attr = getattr(value, attr_name, _MISSING)
                    if attr is not _MISSING:
                        self._reference(attr, names, value.__name__, attr_name, 1)
            return
        target = _code_object(value)
        if target is not None:
            self.add(target)
            return
        if not name:
            return
        where = f"{_module_key(module)}.{name}" if module is not None else name
        assigned = _assignment(module, name) if module is not None else None
        literal = _literal(value) if assigned is None else None
        if assigned is not None or literal is not None:
            self.parts[where] = assigned if assigned is not None else str(literal)
        if _ours(type(value)) and not _ablate(_module_of(type(value))):
            self.add(type(value))  # an instance of a user class: its class is code


_MISSING = object()


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _code_object(value: Any) -> Any:
    """The function or class that ``value`` runs: itself, a partial's or a method's function,
    a callable instance's class; None for data."""
    if isinstance(value, functools.partial):
        return _code_object(value.func)
    if isinstance(value, types.MethodType):
        return value.__func__
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    if isinstance(value, (types.FunctionType, type)):
        return value
    if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return value  # a name only: never ours
    return None


def _methods(cls: type) -> list[types.FunctionType]:
    """The functions a class's own source defines (its source covers their text; what they
    use is walked): not those generated for it (a dataclass's ``__init__`` and ``__repr__``)."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    out = []
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        found = [value.fget, value.fset, value.fdel] if isinstance(value, property) else [value]
        out += [f for f in found if isinstance(f, types.FunctionType)
                and not _generated(f) and (file is None or _same_file(f, file))]
    return out


def _generated(obj: Any) -> bool:
    """A function made by ``exec`` (dataclasses, namedtuples): no source of its own."""
    code = getattr(obj, "__code__", None)
    return isinstance(code, types.CodeType) and code.co_filename.startswith("<")


def _same_file(fn: types.FunctionType, file: str) -> bool:
    return os.path.abspath(fn.__code__.co_filename) == os.path.abspath(file)


def _code_names(code: types.CodeType) -> set[str]:
    """Global and attribute names used by ``code`` and the code nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


# ------------------------------------------------------------------------------ whose code
def _module_of(obj: Any) -> str:
    return str(getattr(obj, "__module__", None) or "")


def _ours(obj: Any) -> bool:
    """A function or class of the study file, of the user's own modules or of ablate."""
    if not isinstance(obj, (types.FunctionType, type)):
        return False
    module = _module_of(obj)
    if _ablate(module) or module.startswith(STUDY_MODULE):
        return True
    if module in ("", "builtins"):
        return False
    if isinstance(obj, types.FunctionType):
        file: str | None = obj.__code__.co_filename
    else:
        file = getattr(sys.modules.get(module), "__file__", None)
    return bool(file) and not str(file).startswith("<") and _user_file(str(file))


def _ours_module(module: types.ModuleType) -> bool:
    """A module of the study's code (``import helpers``): the user's own or ablate's."""
    name = module.__name__
    if _ablate(name) or name.startswith(STUDY_MODULE):
        return True
    file = getattr(module, "__file__", None)
    return bool(file) and _user_file(str(file))


@functools.lru_cache(maxsize=None)
def _stdlib_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    found = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib") if k in paths}
    return tuple(sorted(found))


@functools.lru_cache(maxsize=1024)
def _user_file(file: str) -> bool:
    """A source file of the user's: not in the standard library nor in site-packages."""
    path = Path(file).resolve()
    if any(part in _LIBRARY_DIRS for part in path.parts):
        return False
    return not any(path.is_relative_to(d) for d in _stdlib_dirs())


def _ablate(module: str) -> bool:
    return module == "ablate" or module.startswith("ablate.")


def _module_key(name: str) -> str:
    """A module's name in the fingerprint: the study file's is ``<study>`` wherever it lies."""
    return "<study>" if name.startswith(STUDY_MODULE) else name


def _key(obj: Any) -> str:
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    return f"{_module_key(_module_of(obj))}:{qualname}"


# -------------------------------------------------------------------------------- sources
def _source(obj: Any) -> str:
    """The normalised source of a function or class: its AST without docstrings, as dumped;
    read once per object (the code an object runs never changes; a study file imported again
    gives new objects)."""
    try:
        return _sources[obj]
    except (KeyError, TypeError):
        pass
    text = _read_source(obj)
    try:
        _sources[obj] = text
    except TypeError:
        pass
    return text


_sources: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _read_source(obj: Any) -> str:
    if isinstance(obj, types.FunctionType) and obj.__name__ == "<lambda>":
        found = _lambda_source(obj)
        if found is not None:
            return found
    try:
        text = inspect.getsource(obj)
        tree = ast.parse(textwrap.dedent(text))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return _compiled(obj)
    return ast.dump(_undocumented(tree))


def _lambda_source(fn: types.FunctionType) -> str | None:
    """A lambda's own expression, found in its file's AST by its line (and arguments)."""
    code = fn.__code__
    try:
        file = inspect.getsourcefile(fn)
    except TypeError:
        return None
    if not file:
        return None
    tree = _parsed(file, "".join(linecache.getlines(file, fn.__globals__)))
    if tree is None:
        return None
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)
             and n.lineno == code.co_firstlineno]
    if len(found) > 1:
        argnames = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        same = [n for n in found
                if tuple(a.arg for a in (*n.args.args, *n.args.kwonlyargs)) == argnames]
        found = same or found
    if not found:
        return None
    return "|".join(ast.dump(_undocumented(copy.deepcopy(n))) for n in found)


def _assignment(module: str, name: str) -> str | None:
    """The top-level statements of the study's code module ``module`` that assign ``name``
    (``SCALE = 2.0``, ``ACT = nn.GELU()``), normalised; None if there are none (or ``module``
    is not the study's code)."""
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if loaded is None or not file or not _ours_module(loaded):
        return None
    tree = _parsed(str(file), "".join(linecache.getlines(str(file), vars(loaded))))
    if tree is None:
        return None
    found = [ast.dump(_undocumented(copy.deepcopy(stmt))) for stmt in _top_level(tree.body)
             if name in _assigned_names(stmt)]
    return "|".join(found) if found else None


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """A module's statements, also those under a top-level ``if``/``try``/``with`` (not in a
    function or class)."""
    out = []
    for stmt in body:
        out.append(stmt)
        if isinstance(stmt, (ast.If, ast.Try, ast.With)):
            nested = [*stmt.body, *getattr(stmt, "orelse", []), *getattr(stmt, "finalbody", [])]
            for handler in getattr(stmt, "handlers", []):
                nested += handler.body
            out += _top_level(nested)
    return out


def _assigned_names(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    else:
        return set()
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


@functools.lru_cache(maxsize=64)
def _parsed(file: str, text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def _compiled(obj: Any) -> str:
    """Without a source (a function made by exec, a C function): its bytecode, else its name."""
    code = getattr(obj, "__code__", None)
    if not isinstance(code, types.CodeType):
        return _key(obj)
    return _code_text(code)


def _code_text(code: types.CodeType) -> str:
    consts = [_code_text(c) if isinstance(c, types.CodeType) else repr(c)
              for c in code.co_consts]
    return f"{code.co_code.hex()}|{code.co_names}|{code.co_varnames}|{consts}"


def _undocumented(tree: ast.AST) -> ast.AST:
    """``tree`` without docstrings and other bare string statements (they do nothing)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [s for s in body if not (isinstance(s, ast.Expr)
                                             and isinstance(s.value, ast.Constant)
                                             and isinstance(s.value.value, str))]
            if len(kept) != len(body):
                setattr(node, name, kept or [ast.Pass()])
    return tree


# ------------------------------------------------------------------------------- constants
def _literal(value: Any, depth: int = 0) -> str | None:
    """A plain constant's canonical text (sets sorted); None for anything else."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if depth > 6:
        return None
    if isinstance(value, (tuple, list, set, frozenset)):
        items = []
        for item in value:
            text = _literal(item, depth + 1)
            if text is None:
                return None
            items.append(text)
        if isinstance(value, (set, frozenset)):
            items.sort()  # a set's order differs between processes
        return f"{type(value).__name__}({', '.join(items)})"
    if isinstance(value, dict):
        pairs = []
        for k, v in value.items():
            key, text = _literal(k, depth + 1), _literal(v, depth + 1)
            if key is None or text is None:
                return None
            pairs.append(f"{key}: {text}")
        return f"dict({', '.join(pairs)})"
    return None
