"""Medians over rounds, ratios measured within each round, the targets, and the table.

A column per target that took part in the run: baseline (the hub at another commit) only
with ``--baseline``, hub-pg (the hub on PostgreSQL) only with ``--postgres``. Then issue 16's
goals, each judged on this run's figures: a ratio is the median of the ratios measured
within each round, so two builds are always compared minutes apart, not runs apart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

TARGETS = ("hub", "baseline", "hub-pg", "bare", "nchan")
TITLES = {"hub": "hub", "baseline": "baseline", "hub-pg": "hub-pg", "bare": "bare",
          "nchan": "Nchan"}  # fmt: skip

# rounds[i][row][target] = figures of that row for that target in round i
Rounds = list[dict[str, dict[str, dict[str, Any]]]]


@dataclass(frozen=True)
class Line:
    label: str
    row: str
    key: str
    digits: int = 0
    ratios: tuple[tuple[str, str], ...] = ()  # each shown where both targets ran
    cpu: bool = False  # the row's CPU columns go on this line


PG = ("hub-pg", "hub")
BASE = ("hub", "baseline")

LINES = (
    Line("intake: callbacks/s, 1 KB, wrk -t2 -c50", "intake", "requests_per_s",
         ratios=(("hub", "bare"), BASE, ("hub-pg", "bare"), PG), cpu=True),
    Line("  the same: wrk p99 ms", "intake", "latency_p99_ms", 1, ratios=(BASE, PG)),
    Line("fan-out, 100 subscribers: deliveries/s", "fanout", "deliveries_per_s",
         ratios=(("hub", "nchan"), BASE, PG), cpu=True),
    Line("  the same: publishes/s", "fanout", "publishes_per_s", ratios=(BASE, PG)),
    Line("latency @200/s, 100 subscribers: p50 ms", "latency_100", "p50_ms", 2,
         ratios=(("hub", "nchan"), BASE, PG), cpu=True),
    Line("  the same: p99 ms", "latency_100", "p99_ms", 2, ratios=(("hub", "nchan"), BASE, PG)),
    Line("  the same: servers' CPU s", "latency_100", "server_cpu_s", 2,
         ratios=(("hub", "nchan"), BASE, PG)),
    Line("latency @200/s, 1,000 subscribers: p50 ms", "latency_1000", "p50_ms", 2,
         ratios=(BASE, ("hub", "nchan"), PG), cpu=True),
    Line("  the same: p99 ms", "latency_1000", "p99_ms", 2, ratios=(BASE, ("hub", "nchan"), PG)),
    Line("idle: SSE connections held", "idle", "held", cpu=True),
    Line("  the same: server KB per connection", "idle", "kb_per_connection", 1,
         ratios=(("hub", "nchan"), BASE)),
    Line("  the same: seconds to open them", "idle", "connect_seconds", 1, ratios=(BASE,)),
    Line("  the same: one event reaches all, ms", "idle", "all_received_ms", 1,
         ratios=(("hub", "nchan"), BASE)),
    Line("catch-up: 10,000 events behind, ms", "catch_up", "seconds", 1,
         ratios=(BASE, ("hub", "nchan")), cpu=True),
)  # fmt: skip


@dataclass(frozen=True)
class Goal:
    """One line of issue 16's goal table: a ratio between two targets (or the hub's own
    figure, when ``bottom`` is None) tested against a bound."""

    text: str
    row: str
    key: str
    top: str
    bottom: str | None
    bound: float
    at_most: bool  # else at least
    needs: str = ""  # what the run must include for it to be measured


GOALS = (
    Goal("latency @200/s, 100 subscribers: p50 <= 1.5 x Nchan's", "latency_100", "p50_ms",
         "hub", "nchan", 1.5, True),
    Goal("latency @200/s, 100 subscribers: p99 <= 2 x Nchan's", "latency_100", "p99_ms",
         "hub", "nchan", 2.0, True),
    Goal("latency @200/s, 100 subscribers: hub server CPU <= 1.5 x Nchan's", "latency_100",
         "server_cpu_s", "hub", "nchan", 1.5, True),
    Goal("latency @200/s, 1,000 subscribers: p99 <= 0.15 x the baseline's", "latency_1000",
         "p99_ms", "hub", "baseline", 0.15, True, "--baseline"),
    Goal("latency @200/s, 1,000 subscribers: p99 <= 30 ms (on BENCHMARKS.md's machine)",
         "latency_1000", "p99_ms", "hub", None, 30.0, True),
    Goal("durable intake, 1 KB unique bodies: SQLite >= 1.0 x bare", "intake",
         "requests_per_s", "hub", "bare", 1.0, False),
    Goal("durable intake, 1 KB unique bodies: two replicas on PostgreSQL >= 0.8 x bare",
         "intake", "requests_per_s", "hub-pg", "bare", 0.8, False, "--postgres"),
    Goal("idle streams: KB per connection <= 1.0 x Nchan's", "idle", "kb_per_connection",
         "hub", "nchan", 1.0, True),
    Goal("idle streams: 50,000 held by one process", "idle", "held", "hub", None, 50_000.0,
         False, "--idle 50000"),
    Goal("idle streams: one event reaches all of them in <= 1 s", "idle", "all_received_ms",
         "hub", None, 1000.0, True),
    Goal("catch-up, 10,000 events behind: no worse than the baseline (<= 1.1 x, for noise)",
         "catch_up", "seconds", "hub", "baseline", 1.1, True, "--baseline"),
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


def present(rounds: Rounds) -> tuple[str, ...]:
    """The targets that took part, in the table's order."""
    seen = {target for r in rounds for by_target in r.values() for target in by_target}
    return tuple(t for t in TARGETS if t in seen)


def ratio_median(rounds: Rounds, line: Line, top: str, bottom: str) -> float | None:
    ratios: list[float | None] = []
    for r in rounds:
        row = r.get(line.row, {})
        a, b = value(row, top, line), value(row, bottom, line)
        ratios.append(a / b if a is not None and b else None)
    return median(ratios)


def summarize(rounds: Rounds) -> list[dict[str, Any]]:
    """One entry per line: the median per target and the medians of per-round ratios."""
    targets = present(rounds)
    summary = []
    for line in LINES:
        per_target = {
            t: median([value(r.get(line.row, {}), t, line) for r in rounds]) for t in targets
        }
        ratios = {
            f"{top}/{bottom}": ratio_median(rounds, line, top, bottom)
            for top, bottom in line.ratios
            if top in targets and bottom in targets
        }
        summary.append({"line": line, "medians": per_target, "ratios": ratios})
    return summary


def judge(rounds: Rounds) -> list[dict[str, Any]]:
    """Each goal: what was measured (a median of per-round ratios, or the hub's median) and
    whether it meets the bound; ``met`` is None where the run could not measure it."""
    targets = present(rounds)
    out = []
    for goal in GOALS:
        line = Line(goal.text, goal.row, goal.key)
        measured: float | None = None
        if goal.top in targets and (goal.bottom is None or goal.bottom in targets):
            if goal.bottom is None:
                measured = median([value(r.get(goal.row, {}), goal.top, line) for r in rounds])
            else:
                measured = ratio_median(rounds, line, goal.top, goal.bottom)
        met = None
        if measured is not None:
            met = measured <= goal.bound if goal.at_most else measured >= goal.bound
            if goal.key == "held":
                wanted = median([r.get("idle", {}).get("hub", {}).get("wanted") for r in rounds])
                if wanted is not None and wanted < goal.bound:
                    met = None  # the run opened fewer than the goal asks
        out.append({"goal": goal, "measured": measured, "met": met})
    return out


def goals_table(rounds: Rounds) -> str:
    """Issue 16's goals, each with what this run measured and whether it was met."""
    out = ["| goal | measured | met? |", "|---|---|---|"]
    for entry in judge(rounds):
        goal: Goal = entry["goal"]
        measured = entry["measured"]
        if measured is None:
            shown = f"not measured (needs {goal.needs})" if goal.needs else "not measured"
        elif goal.bottom is None:
            shown = f"hub {measured:,.1f}"
        else:
            shown = f"{goal.top}/{goal.bottom} {measured:.2f}"
        if goal.key == "held" and measured is not None and entry["met"] is None:
            shown += f" (the run opened fewer; needs {goal.needs})"
        verdict = {True: "yes", False: "**no**", None: "-"}[entry["met"]]
        out.append(f"| {goal.text} | {shown} | {verdict} |")
    return "\n".join(out)


def cpu_cell(rounds: Rounds, row: str, key: str) -> str:
    """Median user+sys CPU seconds of the row per target, and as % of one core over the row's
    measuring window where it has one; for the servers, a database's after a "+"."""

    def seconds(target: str, key: str, window: float | None) -> str | None:
        cpu = median([r.get(row, {}).get(target, {}).get(key) for r in rounds])
        if cpu is None:
            return None
        return f"{cpu:.1f}s {100 * cpu / window:.0f}%" if window else f"{cpu:.1f}s"

    cells = []
    for target in present(rounds):
        window = median([r.get(row, {}).get(target, {}).get("window_seconds") for r in rounds])
        cell = seconds(target, key, window) or "-"
        database = seconds(target, "db_cpu_s", window) if key == "server_cpu_s" else None
        cells.append(f"{cell} + db {database}" if database else cell)
    return " / ".join(cells)


def number(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(rounds: Rounds) -> str:
    """The Markdown table printed at the end and pasted into BENCHMARKS.md."""
    targets = present(rounds)
    titles = [TITLES[t] for t in targets]
    header = (
        f"| what | {' | '.join(titles)} | ratios "
        f"| load clients' CPU: {' / '.join(titles)} | servers' CPU: {' / '.join(titles)} |"
    )
    out = [header, "|" + "---|" * (len(targets) + 4)]
    for entry in summarize(rounds):
        line: Line = entry["line"]
        medians = entry["medians"]
        shown = [f"{name} {v:.2f}" for name, v in entry["ratios"].items() if v is not None]
        ratio = "; ".join(shown) or "-"
        load = cpu_cell(rounds, line.row, "client_cpu_s") if line.cpu else ""
        server = cpu_cell(rounds, line.row, "server_cpu_s") if line.cpu else ""
        cells = [number(medians[t], line.digits) for t in targets]
        out.append(f"| {line.label} | {' | '.join(cells)} | {ratio} | {load} | {server} |")
    return "\n".join(out)


def medians_json(rounds: Rounds) -> dict[str, Any]:
    lines = [
        {
            "what": e["line"].label.strip(),
            "row": e["line"].row,
            "key": e["line"].key,
            "medians": e["medians"],
            "ratios": e["ratios"],
        }
        for e in summarize(rounds)
    ]
    goals = [
        {"goal": e["goal"].text, "measured": e["measured"], "met": e["met"]} for e in judge(rounds)
    ]
    return {"lines": lines, "goals": goals}


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
                problems = f.get("server_log_problems") or []
                if problems:
                    found.append(
                        f"{where}: warnings or errors in the server's log, the first: "
                        f"{problems[0]} ({len(problems)} lines kept in the JSON)"
                    )
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
        # The database's backends are the hub-pg's own work, not background load.
        other = (machine - server - client - f.get("db_cpu_s", 0.0)) / window
        if other > 0.2:
            notes.append(f"other processes used {other:.0%} of a core (background load)")
    return notes
