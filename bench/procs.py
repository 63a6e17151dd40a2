"""Process helpers for the benches: /proc CPU and RSS of process trees, free ports, and a
registry that stops every process it started (also on Ctrl-C, errors or our own death)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


def cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * PAGE / 1e6


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def _die_with_parent(sig: int) -> Any:
    def setup() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return setup


class Procs:
    """Every process a bench starts; stop_all() ends them, the given way, in reverse."""

    def __init__(self) -> None:
        self._procs: list[tuple[subprocess.Popen[Any], int]] = []

    def start(
        self, cmd: list[str], stop_signal: int = signal.SIGKILL, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """stop_signal: how to ask it to stop (also sent if we die, via PDEATHSIG)."""
        proc = subprocess.Popen(
            cmd, preexec_fn=_die_with_parent(stop_signal), start_new_session=True, **kwargs
        )
        self._procs.append((proc, stop_signal))
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
        entry = next((e for e in self._procs if e[0] is proc), None)
        if entry is None:
            return
        self._procs.remove(entry)
        _stop(*entry, timeout)

    def stop_all(self, timeout: float = 10.0) -> None:
        graceful = [e for e in self._procs if e[1] != signal.SIGKILL]
        for proc, sig in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        for proc, _ in graceful:
            _wait_or_kill(proc, deadline - time.monotonic())
        for proc, _ in self._procs:
            _wait_or_kill(proc, 2.0)
        self._procs.clear()


def _stop(proc: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    _wait_or_kill(proc, timeout)


def _wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Wait; then SIGTERM; then SIGKILL the process and what is left of its tree."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            proc.wait(max(timeout, 0.1))
            return
        except subprocess.TimeoutExpired:
            pids = tree(proc.pid)
            for pid in reversed(pids) if sig == signal.SIGKILL else pids[:1]:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            timeout = 3.0
    proc.wait(5)
