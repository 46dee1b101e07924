"""What `nachtwacht init` finds on this machine: the local services that answer on their
standard ports, the mount points of real filesystems, and where sshd's logins are logged
(auth.log, or only journald). The starter (config/starter.py)
renders what was found; tests pass their own findings to it instead.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

PORT_TIMEOUT = 0.3


@dataclass(frozen=True)
class LocalService:
    port: int
    name: str
    label: str
    component: str


# The services a small web stack runs, on their standard ports, in the order they are written.
LOCAL_SERVICES: tuple[LocalService, ...] = (
    LocalService(5432, "postgresql", "PostgreSQL", "database"),
    LocalService(3306, "mariadb", "MariaDB/MySQL", "database"),
    LocalService(6379, "redis", "Redis", "cache"),
    LocalService(80, "nginx-http", "nginx (HTTP)", "web"),
    LocalService(443, "nginx-https", "nginx (HTTPS)", "web"),
    LocalService(5672, "rabbitmq", "RabbitMQ", "queue"),
)


# Filesystems that hold no data of their own (or are read-only images, such as snaps): their
# "usage" is meaningless or always 100 %.
# fmt: off
PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
        "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "iso9660", "mqueue", "nsfs", "overlay",
        "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "squashfs", "sysfs", "tmpfs",
        "tracefs", "udf",
    }
)
# fmt: on
PSEUDO_PREFIXES = ("/proc", "/sys", "/dev", "/run", "/snap/", "/var/lib/docker/")


def detect_mounts() -> list[str]:
    """Mount points of real filesystems, `/` first, each device once (bind mounts repeat it)."""
    mounts: list[str] = []
    devices: set[str] = set()
    try:
        partitions = psutil.disk_partitions(all=False)
    except OSError:
        partitions = []
    for part in partitions:
        point = part.mountpoint
        if part.fstype.lower() in PSEUDO_FILESYSTEMS or part.fstype.startswith("fuse."):
            continue
        if point != "/" and point.startswith(PSEUDO_PREFIXES):
            continue
        if part.device in devices and point != "/":
            continue
        devices.add(part.device)
        if point not in mounts:
            mounts.append(point)
    if "/" in mounts:
        mounts.remove("/")
    return ["/", *sorted(mounts)]


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = PORT_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def detect_open_ports(
    ports: Iterable[int], host: str = "127.0.0.1", timeout: float = PORT_TIMEOUT
) -> set[int]:
    """The ports that accept a TCP connection, tried in parallel so `init` stays quick."""
    wanted = list(ports)
    if not wanted:
        return set()
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        results = pool.map(lambda p: port_accepts(p, host, timeout), wanted)
        return {port for port, ok in zip(wanted, results, strict=True) if ok}


AUTH_LOG = Path("/var/log/auth.log")
JOURNALD = Path("/run/systemd/journal")  # journald's runtime directory: it runs here


@dataclass(frozen=True)
class SshLog:
    """Where sshd's logins are: a syslog file (kind sshd), or journald only (kind journal)."""

    kind: Literal["sshd", "journal"]
    path: str = ""


def detect_ssh_log(auth_log: Path = AUTH_LOG, journald: Path = JOURNALD) -> SshLog | None:
    """auth.log when rsyslog writes it; else the journal when journald runs (Debian 12 and
    Ubuntu without rsyslog have only that); else None."""
    if auth_log.is_file():
        return SshLog("sshd", str(auth_log))
    if journald.is_dir():
        return SshLog("journal")
    return None
