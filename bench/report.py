"""Medians over rounds, ratios measured within each round, the targets, and the table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TARGETS = ("hub", "bare", "nchan")

# rounds[i][row][target] = figures of that row for that target in round i
Rounds = list[dict[str, dict[str, dict[str, Any]]]]


@dataclass(frozen=True)
class Goal:
    text: str
    met: Callable[[float], bool]
    on_ratio: bool  # tested on the line's ratio, else on the hub's figure


@dataclass(frozen=True)
class Line:
    label: str
    row: str
    key: str
    digits: int = 0
    ratio: tuple[str, str] | None = None
    goal: Goal | None = None
    cpu: bool = False  # the row's CPU columns go on this line


LINES = (
    Line("intake: callbacks/s, 1 KB, wrk -t2 -c50", "intake", "requests_per_s",
         ratio=("hub", "bare"), goal=Goal(">= 0.5 x bare", lambda r: r >= 0.5, True), cpu=True),
    Line("fan-out, 100 subscribers: deliveries/s", "fanout", "deliveries_per_s",
         ratio=("hub", "nchan"), goal=Goal(">= 0.25 x Nchan", lambda r: r >= 0.25, True),
         cpu=True),
    Line("  the same: publishes/s", "fanout", "publishes_per_s"),
    Line("latency @200/s, 100 subscribers: p50 ms", "latency_100", "p50_ms", 2, cpu=True),
    Line("  the same: p99 ms", "latency_100", "p99_ms", 2,
         goal=Goal("p99 <= 2.5 ms", lambda v: v <= 2.5, False)),
    Line("latency @200/s, 1,000 subscribers: p50 ms", "latency_1000", "p50_ms", 2, cpu=True),
    Line("  the same: p99 ms", "latency_1000", "p99_ms", 2,
         goal=Goal("p99 <= 30 ms", lambda v: v <= 30, False)),
    Line("idle: SSE connections held", "idle", "held",
         goal=Goal("10,000 held", lambda v: v >= 10_000, False), cpu=True),
    Line("  the same: server KB per connection", "idle", "kb_per_connection", 1,
         ratio=("hub", "nchan"), goal=Goal("<= 2 x Nchan", lambda r: r <= 2.0, True)),
    Line("  the same: seconds to open the 10,000", "idle", "connect_seconds", 1),
    Line("  the same: one event reaches all, ms", "idle", "all_received_ms", 1,
         goal=Goal("<= 1000 ms", lambda v: v <= 1000, False)),
    Line("catch-up: 10,000 events behind, ms", "catch_up", "seconds", 1,
         goal=Goal("<= 1000 ms", lambda v: v <= 1000, False), cpu=True),
)  # fmt: skip

SCALE = {("catch_up", "seconds"): 1000.0}


def value(rounds_row: dict[str, dict[str, Any]], target: str, line: Line) -> float | None:
    figures = rounds_row.get(target)
    if figures is None or figures.get(line.key) is None:
        return None
    return float(figures[line.key]) * SCALE.get((line.row, line.key), 1.0)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(rounds: Rounds) -> list[dict[str, Any]]:
    """One entry per line: the median per target, the median of per-round ratios, verdict."""
    summary = []
    for line in LINES:
        per_target = {
            t: median([value(r.get(line.row, {}), t, line) for r in rounds]) for t in TARGETS
        }
        ratio = None
        if line.ratio is not None:
            top, bottom = line.ratio
            ratios: list[float | None] = []
            for r in rounds:
                row = r.get(line.row, {})
                a, b = value(row, top, line), value(row, bottom, line)
                ratios.append(a / b if a is not None and b else None)
            ratio = median(ratios)
        verdict = None
        if line.goal is not None:
            tested = ratio if line.goal.on_ratio else per_target["hub"]
            verdict = None if tested is None else line.goal.met(tested)
        summary.append({"line": line, "medians": per_target, "ratio": ratio, "verdict": verdict})
    return summary


def cpu_cell(rounds: Rounds, row: str, key: str) -> str:
    """Median user+sys CPU seconds of the row per target, and as % of one core over the row's
    measuring window where it has one."""
    cells = []
    for target in TARGETS:
        cpu = median([r.get(row, {}).get(target, {}).get(key) for r in rounds])
        window = median([r.get(row, {}).get(target, {}).get("window_seconds") for r in rounds])
        if cpu is None:
            cells.append("-")
        elif window:
            cells.append(f"{cpu:.1f}s {100 * cpu / window:.0f}%")
        else:
            cells.append(f"{cpu:.1f}s")
    return " / ".join(cells)


def number(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(rounds: Rounds) -> str:
    """The Markdown table printed at the end and pasted into BENCHMARKS.md."""
    header = (
        "| what | hub | bare | Nchan | ratio | target | hub meets it? "
        "| load clients' CPU: hub / bare / Nchan | servers' CPU: hub / bare / Nchan |"
    )
    out = [header, "|" + "---|" * 9]
    for entry in summarize(rounds):
        line: Line = entry["line"]
        medians = entry["medians"]
        ratio = "-"
        if entry["ratio"] is not None and line.ratio is not None:
            ratio = f"{line.ratio[0]}/{line.ratio[1]} {entry['ratio']:.2f}"
        verdict = {True: "yes", False: "**no**", None: "-"}[entry["verdict"]]
        goal = line.goal.text if line.goal else ""
        load = cpu_cell(rounds, line.row, "client_cpu_s") if line.cpu else ""
        server = cpu_cell(rounds, line.row, "server_cpu_s") if line.cpu else ""
        cells = [number(medians[t], line.digits) for t in TARGETS]
        out.append(
            f"| {line.label} | {' | '.join(cells)} | {ratio} | {goal} | {verdict} "
            f"| {load} | {server} |"
        )
    return "\n".join(out)


def medians_json(rounds: Rounds) -> list[dict[str, Any]]:
    return [
        {
            "what": e["line"].label.strip(),
            "row": e["line"].row,
            "key": e["line"].key,
            "medians": e["medians"],
            "ratio": e["ratio"],
            "target": e["line"].goal.text if e["line"].goal else None,
            "met": e["verdict"],
        }
        for e in summarize(rounds)
    ]


def warnings(rounds: Rounds) -> list[str]:
    """Anything that makes a figure less than it seems: errors, losses, cut-off streams."""
    found = []
    for number_, r in enumerate(rounds, 1):
        for row, by_target in r.items():
            for target, f in by_target.items():
                where = f"round {number_}, {row}, {target}"
                errors = f.get("errors") or {}
                if isinstance(errors, dict) and sum(errors.values()):
                    found.append(f"{where}: wrk errors {errors}")
                for key in ("publish_errors", "disconnected"):
                    if f.get(key):
                        found.append(f"{where}: {key} = {f[key]}")
                share = f.get("delivered_share")
                if share is not None and share < 0.999:
                    found.append(f"{where}: only {100 * share:.1f}% of the expected frames arrived")
                if f.get("complete") is False:
                    found.append(f"{where}: catch-up incomplete ({f.get('received')} frames)")
                if f.get("stopped_early"):
                    found.append(
                        f"{where}: wrk stopped early ({f['window_seconds']:.1f}s): the server's "
                        f"RSS grew {f['rss_growth_kb'] / 1024:,.0f} MB buffering for subscribers"
                    )
                if f.get("server_processes_changed"):
                    found.append(f"{where}: the server's processes changed (a worker restarted?)")
                found.extend(f"{where}: {note}" for note in cpu_notes(f))
    return found


def cpu_notes(f: dict[str, Any]) -> list[str]:
    """A load client near one core is itself a limit; other processes' CPU is noise."""
    window = f.get("window_seconds")
    if not window:
        return []
    notes = []
    subscriber = f.get("subscriber_cpu_s")
    if subscriber is not None and subscriber / window > 0.85:
        share = subscriber / window
        notes.append(f"the subscriber client used {share:.0%} of a core (client-bound)")
    machine, server, client = (f.get(k) for k in ("machine_cpu_s", "server_cpu_s", "client_cpu_s"))
    if machine is not None and server is not None and client is not None:
        other = (machine - server - client) / window
        if other > 0.2:
            notes.append(f"other processes used {other:.0%} of a core (background load)")
    return notes
