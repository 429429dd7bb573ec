"""What the figures were measured on: the machine and the versions of everything under test."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "hub", "starlette", "uvicorn", "uvloop", "httptools", "aiosqlite", "orjson", "asyncpg",
)  # fmt: skip


def _first(path: str, prefix: str) -> str:
    for line in Path(path).read_text().splitlines():
        if line.startswith(prefix):
            return line.split(":", 1)[1].strip()
    return "?"


def _command(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError:
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, object]:
    return {
        "nproc": os.cpu_count(),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "memory": _first("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in PACKAGES},
        "nginx": _command("nginx", "-v").removeprefix("nginx version: "),
        "nchan": _command("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"),
        "wrk": _command("dpkg-query", "-W", "-f=${Version}", "wrk"),
    }


def one_line(machine: dict[str, object]) -> str:
    packages = machine["packages"]
    assert isinstance(packages, dict)
    versions = ", ".join(f"{k} {v}" for k, v in packages.items())
    return (
        f"{machine['nproc']} x {machine['cpu']}, {machine['memory']}, Linux {machine['kernel']}; "
        f"Python {machine['python']} (SQLite {machine['sqlite']}; {versions}); "
        f"nginx {machine['nginx']} + Nchan {machine['nchan']}; wrk {machine['wrk']}"
    )


def postgres_line(server: object) -> str:
    """The PostgreSQL server's version and settings, and any leftover bench databases."""
    assert isinstance(server, dict)
    shown = ", ".join(
        f"{k}={v}" for k, v in server.items() if k not in ("version", "leftover_databases")
    )
    leftovers = server.get("leftover_databases") or []
    extra = f"; leftover databases of earlier runs (not dropped): {', '.join(leftovers)}"
    return f"PostgreSQL {server.get('version')} ({shown}){extra if leftovers else ''}"
