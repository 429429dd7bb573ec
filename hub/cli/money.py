"""``hub usage``: what this key's tasks cost this month, against its budget; ``hub cancel``:
cancel a task (both over HTTP, through ``hub.client``)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from hub.cli.connect import add_connection, client_for, sync


def add_commands(commands: Any) -> None:
    usage = commands.add_parser("usage", help="this key's spend this month, and its budget")
    add_connection(usage)
    usage.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: the 1st)")
    usage.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: today)")
    usage.set_defaults(run=sync(show_usage))
    cancel = commands.add_parser("cancel", help="cancel a task: nothing more is sent")
    add_connection(cancel)
    cancel.add_argument("task_id")
    cancel.set_defaults(run=sync(cancel_task))


async def cancel_task(args: argparse.Namespace, out: TextIO) -> int:
    async with client_for(args) as client:
        task = await client.cancel(args.task_id)
    cost = task.get("cost") or {}
    out.write(f"{task['id']} {task['status']} (billed ${cost.get('billed_usd', 0):.4f})\n")
    return 0


async def show_usage(args: argparse.Namespace, out: TextIO) -> int:
    async with client_for(args) as client:
        report = await client.usage(args.start, args.end)
    out.write(render(report))
    return 0


def render(report: dict[str, Any]) -> str:
    """The report as a few aligned lines."""
    lines = [f"{report['from']} to {report['to']}: {report['tasks']} tasks"]
    lines.append(
        f"  billed   ${report['billed_usd']:.4f}\n  reserved ${report['reserved_usd']:.4f}"
        " (tasks still running, at their estimate)"
    )
    for row in report["by_provider"]:
        lines.append(
            f"  {row['provider']:<12} {row['tasks']:>5} tasks  ${row['billed_usd']:.4f}"
            + (f"  (+${row['reserved_usd']:.4f} reserved)" if row["reserved_usd"] else "")
        )
    for row in report["by_day"]:
        lines.append(f"  {row['date']}  {row['tasks']:>5} tasks  ${row['billed_usd']:.4f}")
    budget = report.get("budget") or {}
    if budget.get("monthly_usd") is None:
        lines.append(f"{budget.get('month', '')}: ${budget.get('spent_usd', 0):.4f}, no budget")
    else:
        lines.append(
            f"{budget['month']}: ${budget['spent_usd']:.4f} of ${budget['monthly_usd']:.2f}"
            f" budget, ${budget['remaining_usd']:.4f} left"
        )
    return "\n".join(lines) + "\n"
