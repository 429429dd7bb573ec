"""Issue 15, finding 5, "an open sandbox": any non-empty key could list every tenant's
AceData tasks (prompts, outputs and the hub's signed callback URLs, with which a result
can be forged) and read or cancel anyone's predictions. Now every job belongs to the key
that created it: another key finds nothing, and with a configured key (what ``hub serve
--sandbox`` and ``hub sandbox`` always have) any other key is refused outright."""

from __future__ import annotations

from typing import Any

from hub.sandbox.app import SandboxSettings

from .helpers import FAST, Harness, data_url, make_image, running

CALLBACK = "https://hub.example.com/callbacks/SIGNED-TOKEN-of-tenant-a"
A = "key-of-tenant-a"
B = "key-of-tenant-b"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def acedata_task(sb: Harness) -> str:
    answer = await sb.client.post(
        "/acedata/v1/images/edits",
        headers=bearer(A),
        data={"model": "gpt-image-1", "prompt": "secret prompt", "callback_url": CALLBACK},
        files=[("image[]", ("a.png", make_image(), "image/png"))],
    )
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


async def lookup(sb: Harness, key: str, body: dict[str, Any]) -> Any:
    answer = await sb.client.post("/acedata/openai/tasks", headers=bearer(key), json=body)
    assert answer.status_code == 200
    return answer


async def test_another_key_lists_and_finds_no_acedata_task():
    async with running(FAST) as sb:
        task_id = await acedata_task(sb)
        await sb.sandbox.wait_idle()
        # The finding's reproduction: a batch listing with any other key.
        listed = await lookup(sb, B, {"action": "retrieve_batch", "limit": 100})
        assert listed.json() == {"items": [], "count": 0}
        assert CALLBACK not in listed.text and "secret prompt" not in listed.text
        assert (await lookup(sb, B, {"action": "retrieve", "id": task_id})).json() == {}
        # The owner still sees it, callback URL and all.
        own = await lookup(sb, A, {"action": "retrieve_batch", "limit": 100})
        assert own.json()["count"] == 1 and CALLBACK in own.text


async def test_another_key_cannot_read_or_cancel_predictions():
    async with running(FAST) as sb:
        body = {
            "model": "openai-image-edit",
            "input": {"prompt": "p", "image_url_1": data_url(make_image())},
            "webhook_url": CALLBACK,
            "webhook_secret": "whsec",
        }
        made = await sb.client.post("/eachlabs/v1/prediction", headers=bearer(A), json=body)
        prediction = made.json()["predictionID"]
        await sb.sandbox.wait_idle()
        for method, path in (
            ("GET", f"/eachlabs/v1/prediction/{prediction}"),
            ("POST", f"/eachlabs/v1/prediction/{prediction}/cancel"),
            ("GET", f"/eachlabs/v1/webhooks/{prediction}"),
        ):
            answer = await sb.client.request(method, path, headers=bearer(B))
            assert answer.status_code == 404, (path, answer.text)
        assert (
            await sb.client.get(f"/eachlabs/v1/prediction/{prediction}", headers=bearer(A))
        ).status_code == 200

        atlas = await sb.client.post(
            "/atlascloud/api/v1/model/generateImage",
            headers=bearer(A),
            json={
                "model": "openai/gpt-image-1/edit",
                "prompt": "p",
                "image": data_url(make_image()),
            },
        )
        atlas_id = atlas.json()["data"]["id"]
        path = f"/atlascloud/api/v1/model/prediction/{atlas_id}"
        assert (await sb.client.get(path, headers=bearer(B))).status_code == 404
        assert (await sb.client.get(path, headers=bearer(A))).status_code == 200

        queued = await sb.client.post(
            "/segmind/v2/gpt-image-1-edit",
            headers={"x-api-key": A},
            json={"prompt": "p", "image_urls": [data_url(make_image())]},
        )
        result = queued.json()["response_url"].replace("http://sandbox.test", "")
        assert (await sb.client.get(result, headers={"x-api-key": B})).status_code == 404
        assert (await sb.client.get(result, headers={"x-api-key": A})).status_code == 200


async def test_with_a_configured_key_every_other_key_is_refused():
    settings = SandboxSettings(latency=0, callback_retry_delay=0, api_key=A)
    async with running(settings) as sb:
        await acedata_task(sb)
        for key in (B, A + "x", A[:-1]):
            answer = await sb.client.post(
                "/acedata/openai/tasks", headers=bearer(key), json={"action": "retrieve_batch"}
            )
            assert answer.status_code == 401
        for path in ("/eachlabs/v1/prediction/x", "/atlascloud/api/v1/model/prediction/x"):
            assert (await sb.client.get(path, headers=bearer(B))).status_code == 401
        # The control endpoints carry no tenant data and stay open.
        assert (await sb.client.get("/acedata/_sandbox/ledger")).status_code == 200
        assert (await sb.client.get("/acedata/_sandbox/faults")).status_code == 200
