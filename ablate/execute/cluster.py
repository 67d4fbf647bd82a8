"""Checks that a Ray cluster can run the study: its address answers, its nodes share storage."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from ablate.execute.files import EnvironmentProblem, checkpoint_path

# Filesystems that are certainly private to one machine (a checkpoint directory on one of these
# can't be read by a retry on another node). Anything else (nfs, lustre, gpfs, fuse...) passes.
_LOCAL_FS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "bcachefs", "zfs", "f2fs", "jfs", "reiserfs",
    "tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs", "vfat", "exfat", "ntfs", "ntfs3",
    "apfs", "hfs", "hfsplus", "fuse.fuse-overlayfs",
})


def is_cluster_address(address: str | None) -> bool:
    """True for an existing cluster (``auto``, ``ray://...``, ``host:port``), False for a Ray
    instance that this run starts on this machine (no address, or ``local``)."""
    return address not in (None, "", "local")


def check_cluster_storage(
    address: str | None,
    uri: str,
    checkpoint_dir: str | os.PathLike[str] | None,
    allow_local_storage: bool = False,
) -> None:
    """Refuse (before anything runs) a tracking store or checkpoint directory that the nodes of
    a Ray cluster can't share. Nothing to check for a local Ray instance."""
    if not is_cluster_address(address) or allow_local_storage:
        return
    problems = []
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file", "sqlite") or len(scheme) == 1:  # len 1: a Windows drive letter
        problems.append(
            f"the tracking store {uri!r} is a file on this machine: the workers on other nodes "
            f"can't reach it (and sqlite is not safe for writers on several machines). Fix: run "
            f"an MLflow tracking server every node can reach, e.g. `mlflow server "
            f"--backend-store-uri postgresql://USER@DBHOST/mlflow --artifacts-destination "
            f"s3://BUCKET/mlflow --host 0.0.0.0 --port 5000`, and pass --tracking-uri "
            f"http://SERVER:5000."
        )
    elif scheme in ("http", "https") and _is_loopback(parsed.hostname or ""):
        problems.append(
            f"the tracking server {uri!r} is on this machine's loopback address, which on every "
            f"other node means that node itself. Fix: start the server with --host 0.0.0.0 and "
            f"pass --tracking-uri http://SERVER-HOSTNAME:PORT."
        )
    ck = checkpoint_path(checkpoint_dir)
    if not ck.is_absolute():
        problems.append(
            f"the checkpoint directory {str(ck)!r} is relative: each node would resolve it in "
            f"its own working directory, so a trial retried on another node could not resume. "
            f"Fix: pass --checkpoint-dir /PATH on storage that every node mounts (NFS, Lustre, "
            f"...), or set ABLATE_CHECKPOINT_DIR."
        )
    else:
        fs = filesystem_type(ck)
        if fs in _LOCAL_FS:
            problems.append(
                f"the checkpoint directory {str(ck)!r} is on a local {fs} filesystem: a trial "
                f"retried on another node could not resume from it. Fix: pass --checkpoint-dir "
                f"/PATH on storage that every node mounts (NFS, Lustre, ...)."
            )
    if problems:
        raise EnvironmentProblem(
            f"--address {address} runs the trials on a Ray cluster, but\n  - "
            + "\n  - ".join(problems)
            + "\nNothing was run. If every Ray worker runs on this machine, pass "
              "--allow-local-storage."
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (``psutil.disk_partitions``: on Linux the
    process's mount table), else None (unknown)."""
    try:
        import psutil

        mounts = psutil.disk_partitions(all=True)
    except Exception:  # no psutil, or no mount table to read
        return None
    target = Path(os.path.abspath(path))
    while not target.exists() and target.parent != target:
        target = target.parent
    real = os.path.realpath(target)
    best, fstype = "", None
    for part in mounts:
        mount = part.mountpoint
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):  # the longest (and, on ties, last) mount wins
            best, fstype = mount, part.fstype
    return fstype


def absolute_uri(uri: str) -> str:
    """A tracking URI that means the same file in any working directory."""
    parsed = urlparse(uri)
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///"):]
        if rest and not rest.startswith(("/", ":memory:")):
            return "sqlite:///" + str(Path(rest).resolve())
    elif parsed.scheme == "file" and not parsed.netloc and not parsed.path.startswith("/"):
        return Path(parsed.path).resolve().as_uri()
    elif parsed.scheme == "" and uri:
        return str(Path(uri).resolve())
    return uri


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast if a ``host:port`` or ``ray://host:port`` cluster address does not answer
    (``ray.init`` would otherwise retry for minutes). ``auto`` is left to Ray."""
    if not is_cluster_address(address) or address == "auto":
        return
    assert address is not None
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise EnvironmentProblem(
            f"--address {address!r} is not a Ray cluster address. Fix: auto, "
            f"ray://HEAD:10001 (Ray Client) or HEAD:6379 (on a node of the cluster)."
        )
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise EnvironmentProblem(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}). Fix: check the "
            f"address and that the head node is up (`ray status` on it); nothing was run."
        ) from None
