"""Resident memory and CPU time of the servers under test, read from /proc.

A server is a root PID plus its children (nginx: the master and its workers; the hub and the
bare app: one process each); ``Servers`` is several of them measured as one (the hub's
replicas on PostgreSQL)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; fields after it are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICKS


@dataclass(frozen=True)
class Server:
    name: str
    pid: int

    def pids(self) -> list[int]:
        return [self.pid, *children(self.pid)]

    def rss_kb(self) -> int:
        """VmRSS summed over the process and its children."""
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # a worker that just exited
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the process and its children (a worker
        that exits in between takes its share with it: see ``pids`` for restarts)."""
        ticks = 0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / TICKS

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}").exists()

    def cpu_by_part(self) -> dict[str, float]:
        return {self.name: self.cpu_seconds()}


@dataclass(frozen=True)
class Servers:
    """Several servers measured as one: CPU and RSS summed, alive only while all are."""

    name: str
    parts: tuple[Server, ...]

    def pids(self) -> list[int]:
        return [pid for part in self.parts for pid in part.pids()]

    def rss_kb(self) -> int:
        return sum(part.rss_kb() for part in self.parts)

    def cpu_seconds(self) -> float:
        return sum(part.cpu_seconds() for part in self.parts)

    def alive(self) -> bool:
        return all(part.alive() for part in self.parts)

    def cpu_by_part(self) -> dict[str, float]:
        return {part.name: part.cpu_seconds() for part in self.parts}


Processes: TypeAlias = Server | Servers
