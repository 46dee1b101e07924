"""Two network namespaces joined by a veth pair, for tests that need a real kernel firewall
without touching the host's own network: `fw` (the firewall host, a server in it) and `cl`
(a client). Skipped where `ip netns` or `nft` cannot run (not root, no nftables:
`make system-deps` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns and nft"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make system-deps installs nftables)"
    return None


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@contextmanager
def namespaces(
    prefix: str, server: str, client: str, serve: list[str]
) -> Iterator[tuple[str, str]]:
    """(fw, cl): the namespaces, `server` and `client` on their ends of the veth pair, and the
    command `serve` running inside `fw` until it printed "ready"; all removed afterwards."""
    why = _can_run()
    if why:
        pytest.skip(why)
    tag = f"{os.getpid() % 100000}"
    fw, cl = f"{prefix}f{tag}", f"{prefix}c{tag}"
    created: list[str] = []
    process: subprocess.Popen[str] | None = None
    try:
        for ns in (fw, cl):
            try:
                sh("ip", "netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"ip netns add refused: {exc.stderr.decode().strip()}")
            created.append(ns)
        try:
            subprocess.run(
                ["ip", "netns", "exec", fw, "nft", "list", "ruleset"],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"nft cannot run in a namespace: {exc.stderr.decode().strip()}")
        # the veth pair is made inside `fw`, so it never exists in the host's namespace
        sh("ip", "-n", fw, "link", "add", "vfw", "type", "veth", "peer", "name", "vcl")
        sh("ip", "-n", fw, "link", "set", "vcl", "netns", cl)
        for ns, dev, addr in ((fw, "vfw", server), (cl, "vcl", client)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        process = subprocess.Popen(
            ["ip", "netns", "exec", fw, sys.executable, *serve], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield fw, cl
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=30)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
