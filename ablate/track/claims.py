"""Claims on trials, kept in the tracking store: every runner of one store sees the same ones.

Two ``ablate run`` of one study on one store — two terminals, two folders, two checkpoint
directories, two machines sharing a tracking server — must never train or log the same
(variant, seed). A lock file excludes only the processes that share its folder, so the claim
lives where every runner looks: in the store, as an experiment tag
``ablate.claim.<trial key>.<owner>`` whose value says until when it holds (its *lease*) and who
holds it.

MLflow has no compare-and-set, so a claim is taken in three steps, safe on any store that reads
its own writes (sqlite; a tracking server on one database):

1. read the trial's claims: one held by another live runner -> the trial is **held**, skip it;
2. write ours;
3. read again: still ours alone -> **won**; another live claim appeared -> **contended**: ours is
   withdrawn and the trial tried again later (after a random pause).

Whoever reads only its own claim in step 3 wrote it before any rival's step 1 or step 3 could
miss it, so two runners never both win; two that meet in step 3 both withdraw (neither trains
twice), and the random pause lets one of them win the next time. A live runner renews its leases
(:class:`Renewer`); a runner that died stops renewing, and its claims are taken over once their
lease has run out (``ABLATE_CLAIM_LEASE_S``, default 120 s).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

PREFIX = "ablate.claim."
LEASE_ENV = "ABLATE_CLAIM_LEASE_S"
DEFAULT_LEASE_S = 120.0

Taken = Literal["won", "held", "contended"]


def lease_seconds() -> float:
    """How long a claim holds without renewal: ``$ABLATE_CLAIM_LEASE_S``, else 120 s."""
    text = os.environ.get(LEASE_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_LEASE_S
    except ValueError:
        value = DEFAULT_LEASE_S
    return value if value > 0 else DEFAULT_LEASE_S


def new_owner() -> str:
    """A runner's name in its claims: unique per ``ablate run``."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Holder:
    """One claim on a trial: whose, where it runs, and until when it holds (epoch seconds)."""

    owner: str
    where: str
    until: float

    def live(self, now: float | None = None) -> bool:
        """Its lease runs, and its runner is not known to be dead: a runner on this machine
        (same host name) whose process is gone lets its claims go at once (a ``kill -9`` of
        ``ablate run`` is taken over by the next run here without waiting for the lease)."""
        return self.until > (time.time() if now is None else now) \
            and not _dead_here(self.where)


def _dead_here(where: str) -> bool:
    """True if ``where`` (``host:pid``) names a process of this host that no longer exists."""
    host, _, pid = where.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class Claims:
    """One runner's (``owner``'s) claims on the trials of one experiment of a store."""

    def __init__(self, client: Any, experiment_id: str, owner: str | None = None,
                 lease_s: float | None = None) -> None:
        self.client, self.experiment_id = client, experiment_id
        self.owner = owner or new_owner()
        self.lease_s = lease_s or lease_seconds()
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.mine: set[str] = set()
        self._lock = threading.Lock()  # the renewer thread and the driver share `mine`

    # ---------------------------------------------------------------------------------- reads
    def holders(self, key: str | None = None) -> dict[str, list[Holder]]:
        """Every claim in the store on a trial of this experiment (or on trial ``key`` alone):
        trial key -> its holders."""
        prefix = PREFIX if key is None else f"{PREFIX}{key}."
        out: dict[str, list[Holder]] = {}
        for name, value in self._tags(prefix):
            if not name.startswith(prefix):
                continue
            key, _, owner = name[len(PREFIX):].rpartition(".")
            try:
                data = json.loads(value)
                holder = Holder(owner, str(data.get("where", "")), float(data["until"]))
            except (ValueError, KeyError, TypeError):
                continue
            out.setdefault(key, []).append(holder)
        return out

    def _tags(self, prefix: str) -> list[tuple[str, str]]:
        """The experiment's tags (at least those named ``prefix``...): on a SQL store (sqlite,
        PostgreSQL, MySQL) read from MLflow's table of experiment tags by that prefix, one
        indexed query, else with the whole experiment (its saved views too, a few ms more)."""
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        if not isinstance(store, SqlAlchemyStore):
            return list(self.client.get_experiment(self.experiment_id).tags.items())
        from mlflow.store.tracking.dbmodels.models import SqlExperimentTag
        from sqlalchemy import select

        with store.ManagedSessionMaker() as session:
            return [(k, v) for k, v in session.execute(select(
                SqlExperimentTag.key, SqlExperimentTag.value).where(
                SqlExperimentTag.experiment_id == int(self.experiment_id),
                SqlExperimentTag.key.startswith(prefix, autoescape=True)))]

    def rivals(self, key: str, holders: dict[str, list[Holder]] | None = None) -> list[Holder]:
        """The live claims of other runners on trial ``key``."""
        now = time.time()
        found = self.holders(key) if holders is None else holders
        return [h for h in found.get(key, []) if h.owner != self.owner and h.live(now)]

    # --------------------------------------------------------------------------------- writes
    def take(self, key: str) -> tuple[Taken, list[Holder]]:
        """Claim trial ``key`` (the three steps of the module's docstring): ``won``, or ``held``
        / ``contended`` with the rival claims."""
        rivals = self.rivals(key)
        if rivals:
            return "held", rivals
        self._write(key)
        rivals = self.rivals(key)
        if rivals:
            self.release(key)
            return "contended", rivals
        with self._lock:
            self.mine.add(key)
        return "won", []

    def release(self, key: str) -> None:
        """Withdraw our claim on ``key`` (the trial ended, or we lost it)."""
        with self._lock:
            self.mine.discard(key)
        try:
            self.client.delete_experiment_tag(self.experiment_id, self._tag(key))
        except Exception:  # already gone, or the store is: the lease runs out by itself
            pass

    def release_all(self) -> None:
        with self._lock:
            keys = list(self.mine)
        for key in keys:
            self.release(key)

    def renew(self) -> None:
        """Extend the lease of every claim we hold."""
        with self._lock:
            keys = list(self.mine)
        for key in keys:
            with self._lock:  # never rewrite a claim that release() is withdrawing
                if key in self.mine:
                    self._write(key)

    def _write(self, key: str) -> None:
        value = json.dumps({"where": self.where, "until": round(time.time() + self.lease_s, 3)})
        self.client.set_experiment_tag(self.experiment_id, self._tag(key), value)

    def _tag(self, key: str) -> str:
        return f"{PREFIX}{key}.{self.owner}"

    def forget(self, keys: Iterable[str]) -> None:
        """Stop renewing ``keys`` without writing (their trials' workers were killed)."""
        with self._lock:
            self.mine.difference_update(keys)


class Renewer:
    """A daemon thread that renews a runner's leases every third of the lease, while a trial
    trains in this process (or in its workers) and the driver waits."""

    def __init__(self, claims: Claims) -> None:
        self.claims = claims
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ablate-claims", daemon=True)

    def __enter__(self) -> Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.claims.lease_s / 3):
            try:
                self.claims.renew()
            except Exception:  # a store that is gone: the driver finds out and stops
                pass


def ensure_experiment(client: Any, name: str) -> str:
    """The id of the study's experiment, created (or restored) if needed; two runners creating
    it at once get the same one (the store's unique name decides)."""
    for _ in range(3):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                client.restore_experiment(exp.experiment_id)
            return str(exp.experiment_id)
        try:
            return str(client.create_experiment(name, tags={
                "mlflow.experimentKind": "custom_model_development", "ablate.study": name}))
        except Exception:  # created by another runner meanwhile: read it back
            continue
    raise RuntimeError(f"can't create or find the MLflow experiment {name!r}")

