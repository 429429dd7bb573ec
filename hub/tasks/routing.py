"""Fallback routing: a task names its providers in order, and moves to the next only when
the one it is on has certainly not billed it.

What proves nothing was billed is the adapters' own classification of a failure
(``hub.providers.base.Resend``): a refusal before acceptance, a rate limit, no connection
or a 5xx the provider documents as unbilled. An unknown outcome (the job may have been
accepted) never moves a task: a second provider would bill a second time. Neither does a
job the provider ran and failed, nor a refusal of the content: that is the answer.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import Any

import orjson

from hub.providers.base import ErrorCode, ProviderError, Resend
from hub.store.base import TaskRecord
from hub.tasks.shapes import TaskError


class Moved(StrEnum):
    """Why a task left a provider: the ``reason`` of ``task.rerouted`` and the
    ``outcome`` of that provider's step on the task's route."""

    NOT_CONFIGURED = "not_configured"  # no key for it on this hub
    REFUSED = "refused"  # refused the job before accepting it (key, balance, input)
    RATE_LIMITED = "rate_limited"  # its limit held the task beyond its patience
    UNAVAILABLE = "unavailable"  # down: no connection, or a 5xx before accepting


def reason_to_move(error: ProviderError) -> Moved | None:
    """Why ``error`` lets a task move on, or None when it must not (the job may have been
    billed, or was answered for its content)."""
    if error.resend is Resend.UNKNOWN:
        return None
    if error.slot_full or error.code == ErrorCode.RATE_LIMITED:
        return Moved.RATE_LIMITED
    if error.resend is Resend.SAFE:
        return Moved.UNAVAILABLE
    if error.code == ErrorCode.PROVIDER_REFUSED:
        return Moved.REFUSED
    return None


def fallbacks(task: TaskRecord) -> list[str]:
    """The providers still to try after the task's current one, in order."""
    return list(orjson.loads(task.fallbacks)) if task.fallbacks else []


def steps(task: TaskRecord) -> list[dict[str, Any]]:
    """The providers the task left, each as it ended there."""
    return list(orjson.loads(task.route)) if task.route else []


def left(task: TaskRecord, why: Moved, error: TaskError) -> dict[str, Any]:
    """The step a task leaves behind on its current provider: nothing billed there."""
    return {
        "provider": task.provider,
        "outcome": why.value,
        "billed": False,
        "attempts": task.attempts,
        "reason": error.message,
    }


def runnable(configured: Collection[str], providers: list[str]) -> list[str]:
    """Those of ``providers`` configured here (all of them if none is)."""
    return [name for name in providers if name in configured] or providers


def encode(value: list[Any]) -> str | None:
    return orjson.dumps(value).decode() if value else None
