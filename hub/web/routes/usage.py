"""``GET /v1/usage``: the key's spend by provider and by day, and its monthly budget."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from hub.tasks import spend
from hub.web.routes.common import hub, json_response
from hub.web.state import HubState


async def show(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    start, end = spend.date_range(request.query_params, time.time())
    budget = await budget_of(state, owner)
    return json_response(await spend.report(state.store, owner, start, end, budget))


async def budget_of(state: HubState, owner: str) -> int | None:
    """The key's monthly budget in micro-dollars: its own, else HUB_BUDGET_USD for the
    keys in HUB_API_KEYS, else None."""
    own = await state.store.budget(owner)
    return own if own is not None else state.engine.billing.default_budget(owner)
