"""Throwaway servers on this machine for the cluster tests and the tracking benchmark.

* :func:`postgres`: a PostgreSQL cluster of its own (``initdb`` + ``pg_ctl`` from the Debian
  package's ``/usr/lib/postgresql/*/bin``) in a temp dir, on 127.0.0.1 and a free port, with a
  database ``mlflow``; as root, the server runs as the ``postgres`` user (else ``nobody``).
* :func:`mlflow_server`: ``mlflow server`` on a backend store (PostgreSQL or sqlite), bound to
  127.0.0.1, artifacts proxied to a folder.
* :func:`ray_cluster`: a Ray head and more Ray nodes, each a separate ``ray start --block``
  process with its own temp dir, CPUs and a custom resource ``node_<name>``, sharing a token
  (``RAY_AUTH_TOKEN``); :meth:`RayCluster.kill` ends one node's every process at once.

Each is a context manager that stops and deletes what it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

PG_INSTALL = "apt-get install -y postgresql"


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl, createdb), if installed."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               log: Path | None = None) -> None:
    """Poll ``predicate`` (what a program did) until true; AssertionError after ``timeout``."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{tail}")
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, i = [pid], 0
    while i < len(out):
        out.extend(children.get(out[i], []))
        i += 1
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to ``pid`` and all its descendants (collected first, then signalled)."""
    pids = descendants(pid)
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process tree, SIGKILL what is left after ``timeout``."""
    if proc.poll() is None:
        pids = kill_tree(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        for p in pids:  # the tree as it was: workers whose parent died first included
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


# ---------------------------------------------------------------------------- PostgreSQL
@contextmanager
def postgres(*, durable: bool = True) -> Iterator[str]:
    """A fresh PostgreSQL cluster with a database ``mlflow``; yields its SQLAlchemy URI
    ``postgresql+psycopg://postgres@127.0.0.1:PORT/mlflow`` (trust auth, loopback only).
    ``durable=False`` turns fsync off (for tests: faster, and the data is thrown away)."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError(f"PostgreSQL is not installed. Fix: {PG_INSTALL}")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            raise RuntimeError("running as root, and there is no postgres or nobody user to "
                               "run PostgreSQL as")
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", user, "--"]
    data, log, port = folder / "data", folder / "server.log", free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    started = False
    try:
        try:
            subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--no-sync"],
                           check=True, capture_output=True)
            started = True
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
                            "-o", options, "-w", "-t", "120", "start"],
                           check=True, capture_output=True)
            subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p",
                            str(port), "-U", "postgres", "mlflow"], check=True,
                           capture_output=True)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"{exc.cmd[len(as_user)]} failed: {exc.stderr.decode(errors='replace')[-2000:]}"
                f"{log.read_text(errors='replace')[-2000:] if log.exists() else ''}") from None
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/mlflow"
    finally:
        if started:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# ---------------------------------------------------------------------------- MLflow server
@dataclass
class MlflowServer:
    proc: subprocess.Popen
    url: str
    log: Path

    def wait(self, timeout: float = 180) -> str:
        """The URL, once ``/health`` answers; AssertionError with the log if it never does."""
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited ({self.proc.returncode}):\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(healthy, timeout, f"mlflow server at {self.url}", self.log)
        return self.url

    def stop(self) -> None:
        _stop(self.proc)


def start_mlflow_server(store_uri: str, folder: Path, *, workers: int = 1) -> MlflowServer:
    """Start ``mlflow server`` on ``store_uri``, artifacts proxied to ``folder/artifacts``,
    bound to 127.0.0.1 (:meth:`MlflowServer.wait` for it). MLflow's job runner (GenAI jobs,
    seven more processes) is off: ablate does not use it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    port, log_path = free_port(), folder / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return MlflowServer(proc, f"http://127.0.0.1:{port}", log_path)


@contextmanager
def mlflow_server(store_uri: str, folder: Path, *, workers: int = 1,
                  timeout: float = 180) -> Iterator[str]:
    """:func:`start_mlflow_server`; yields its URL once it answers; stops it at the end."""
    server = start_mlflow_server(store_uri, folder, workers=workers)
    try:
        yield server.wait(timeout)
    finally:
        server.stop()


# ---------------------------------------------------------------------------- Ray cluster
@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path


@dataclass
class RayCluster:
    address: str  # the head's GCS, 127.0.0.1:PORT
    env: dict[str, str]  # what a driver needs: RAY_AUTH_MODE=token, RAY_AUTH_TOKEN
    nodes: dict[str, RayNode] = field(default_factory=dict)

    def kill(self, name: str) -> list[int]:
        """End node ``name`` as a lost machine ends: SIGKILL to its raylet, agents, log
        monitor and workers at once (Ray starts each worker in its own process group, so its
        process tree, not a group, is what belongs to the node). Returns the pids."""
        node = self.nodes[name]
        if node.proc.poll() is not None:
            return []
        pids = kill_tree(node.proc.pid)
        node.proc.wait()
        return pids


NODE_ENV = "ABLATE_TEST_NODE"  # each node's processes (workers too) get their node's name


@contextmanager
def ray_cluster(folder: Path, cpus: Mapping[str, int], *,
                timeout: float = 180) -> Iterator[RayCluster]:
    """A head node (the first name in ``cpus``) and one more node per further name, each
    ``ray start --block`` in its own session with ``--num-cpus``, a custom resource
    ``node_<name>`` and ``ABLATE_TEST_NODE=<name>`` in its environment."""
    token = secrets.token_hex(32)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    port = free_port()
    cluster = RayCluster(f"127.0.0.1:{port}", env)
    common = ["--block", "--node-ip-address=127.0.0.1", "--object-store-memory=80000000",
              "--disable-usage-stats"]
    with ExitStack() as stack:
        for i, (name, n) in enumerate(cpus.items()):
            temp = folder / f"ray-{name}"  # short: Ray's socket paths must fit 107 bytes
            temp.mkdir(parents=True, exist_ok=True)
            args = ["ray", "start", *common, f"--temp-dir={temp}", f"--num-cpus={n}",
                    f"--resources={json.dumps({f'node_{name}': 1})}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}"]
            if i == 0:
                args += ["--head", f"--port={port}", "--include-dashboard=false",
                         f"--ray-client-server-port={free_port()}"]
            else:
                args += [f"--address={cluster.address}"]
            log = folder / f"ray-{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True,
                                        env={**base, **env, NODE_ENV: name})
            node = RayNode(name, proc, temp, log)
            cluster.nodes[name] = node
            stack.callback(cluster.kill, name)  # throwaway: no graceful stop (it takes 20 s)

            def started(node: RayNode = node) -> bool:
                if node.proc.poll() is not None:
                    raise AssertionError(f"ray start for node {node.name} exited:\n"
                                         f"{node.log.read_text(errors='replace')[-3000:]}")
                return "Ray runtime started" in node.log.read_text(errors="replace")

            wait_until(started, timeout, f"Ray node {name}", log)
        yield cluster
