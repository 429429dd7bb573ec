"""``n`` is honoured or refused: a task asking for more images than its provider makes in
one job is a 422 naming ``n`` and the provider, on both routes that make tasks."""

from __future__ import annotations

import io

import pytest

from hub.providers import PROVIDERS
from hub.tasks.shapes import MAX_N
from tests.helpers import AUTH, data_url, make_png


@pytest.fixture
def settings(make_settings):
    env = tuple((f"HUB_{name.upper()}_API_KEY", "k") for name in PROVIDERS) + tuple(
        (f"HUB_{name.upper()}_URL", "http://127.0.0.1:9") for name in PROVIDERS
    )
    return make_settings(extra_env=env)


def too_many(state, provider: str) -> int | None:
    most = state.engine.providers[provider].max_n
    return most + 1 if most < MAX_N else None


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_more_images_than_the_provider_makes_is_refused_on_post_tasks(
    client, state, provider
):
    n = too_many(state, provider)
    if n is None:
        pytest.skip(f"{provider} makes as many as a task may ask for")
    body = {
        "provider": provider,
        "input": {"prompt": "p", "images": [data_url(make_png())], "n": n},
    }
    response = await client.post("/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "input.n" and provider in error["message"]
    assert await state.store.list_tasks(state.keys.require(AUTH["authorization"]), 10) == []


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_more_images_than_the_provider_makes_is_refused_on_images_edits(
    client, state, provider
):
    n = too_many(state, provider)
    if n is None:
        pytest.skip(f"{provider} makes as many as a task may ask for")
    response = await client.post(
        "/v1/images/edits",
        data={"prompt": "p", "n": str(n), "provider": provider},
        files={"image": ("in.png", io.BytesIO(make_png()), "image/png")},
        headers=AUTH,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "n" and provider in error["message"]


async def test_as_many_as_the_provider_makes_is_taken(client, state):
    most = state.engine.providers["segmind"].max_n
    body = {
        "provider": "segmind",
        "input": {"prompt": "p", "images": [data_url(make_png())], "n": most},
    }
    response = await client.post("/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
