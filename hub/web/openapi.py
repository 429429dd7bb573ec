"""``GET /openapi.json``: the OpenAPI 3.1 description of the whole v1 API.

The bodies' schemas are generated from the shapes that validate and build them
(``msgspec.Struct``s in each package's ``shapes`` module), so they cannot drift. The paths
are written here, per route, as plain data: tests/web/test_openapi.py holds them to the
app's routes (none missing, none invented) and to real responses. The limits in it are
those of the hub that serves it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from hub import __version__
from hub import shapes as ids
from hub.blobs.images import IMAGE_TYPES
from hub.blobs.shapes import Blob
from hub.config.settings import Settings
from hub.enums import EventType
from hub.inbox.shapes import (
    CallbackEvent,
    CallbackRecord,
    CallbackUrl,
    CallbackUrlId,
    CallbackUrlInfo,
    CallbackUrlList,
    CallbackUrlRequest,
    ChannelAck,
    ChannelList,
    ChannelRequest,
    DeliveryId,
    DeliveryPage,
    DeliverySummary,
    NewChannel,
    RedeliverRequest,
    Redelivery,
    RedeliveryAttempt,
    TaskAck,
    Verifier,
    VerifierInfo,
)
from hub.inbox.shapes import Channel as ChannelShape
from hub.providers.base import BACKGROUNDS, OUTPUT_FORMATS, QUALITIES, SIZES
from hub.streams.shapes import StreamGap
from hub.tasks.shapes import (
    MAX_IMAGES,
    MAX_N,
    MAX_PROMPT,
    Task,
    TaskAccepted,
    TaskEvent,
    TaskList,
    TaskRequest,
    TaskRetrying,
)
from hub.tasks.spend import UsageReport
from hub.web.query import MAX_INT
from hub.web.routes.channels import MAX_TASK_ID, MAX_TYPES
from hub.web.routes.common import hub, json_response
from hub.web.routes.deliveries import MAX_LIMIT
from hub.web.shapes import EditAccepted, Error, Health, ImagesResponse, OpenAIError
from hub.webhooks.shapes import Webhook, WebhookList, WebhookRequest

Schema = dict[str, Any]

JSON = "application/json"
REF = "#/components/schemas/{name}"
_IMAGE_TYPES = tuple(IMAGE_TYPES.values())
# Every body the API takes or gives; each becomes a component named for its class.
SHAPES = (
    Error, Health, ChannelAck, TaskAck, ChannelRequest, ChannelShape, NewChannel, ChannelList,
    CallbackUrlRequest, CallbackUrl, CallbackEvent, CallbackRecord, TaskEvent, TaskRetrying,
    StreamGap, TaskRequest, TaskAccepted, Task, TaskList, WebhookRequest, Webhook, WebhookList,
    Blob, ImagesResponse, EditAccepted, OpenAIError, DeliverySummary, DeliveryPage,
    RedeliverRequest, RedeliveryAttempt, Redelivery, CallbackUrlInfo, CallbackUrlList,
    VerifierInfo, Verifier, UsageReport,
)  # fmt: skip

# Every error answer, by status; the body is always the Error schema.
ERRORS = {
    400: "The body cannot be read (not JSON, a malformed form, a bad Content-Length).",
    401: "No valid API key, or a token that is forged or not for this resource.",
    402: "The task's estimate would take this key over its monthly budget (budget_exceeded).",
    404: "No such object for this key (another key's objects answer the same).",
    409: "The object is not in a state that allows this (task_ended: it has ended), or a"
    " request with this Idempotency-Key is still being answered; retry after Retry-After.",
    408: "The request body took longer than HUB_BODY_TIMEOUT_SECONDS to arrive.",
    410: "The token, or the channel it names, has expired.",
    413: "The body is larger than the hub accepts here.",
    415: "The body is not of a media type this operation takes.",
    422: "A field is invalid; the message names it (idempotency_key_reused: the key was used"
    " with another request).",
    429: "Too many requests for this API key or callback URL; retry after Retry-After.",
    503: "The hub cannot check this delivery now; the sender should retry.",
}


# POST /v1/images/edits answers errors as OpenAI does: its own shape and statuses.
OPENAI_ERRORS = {
    400: "A field is invalid (param names it), the body is not a multipart form, or the"
    " provider refused the content (code moderation_blocked, x-should-retry: false).",
    401: "The API key is missing or wrong (code invalid_api_key).",
    402: "The edit's estimate would take this key over its monthly budget (budget_exceeded).",
    408: "The body did not arrive in time.",
    409: "A request with this Idempotency-Key is still being answered; retry.",
    413: "The body is larger than the hub takes.",
    422: "The Idempotency-Key was used with another request (code idempotency_key_reused).",
    429: "Too many requests for this API key; retry after Retry-After.",
    502: "The provider failed the edit (code provider_failed); x-should-retry: false.",
    503: "The hub is shutting down; retry.",
    504: "The edit did not finish by its deadline, or within HUB_OPENAI_WAIT_SECONDS (code"
    " timeout; the task goes on); x-should-retry: false.",
}


async def serve(request: Request) -> Response:
    return json_response(build(hub(request).settings))


def build(settings: Settings) -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hub",
            "version": __version__,
            "description": "A webhook receiver and async callback hub with SSE fan-out.",
        },
        "servers": [{"url": settings.public_url}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(settings),
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "watchToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The signed, read-only token in a channel's or task's "
                    "watch_url.",
                },
            },
            "schemas": _schemas(settings),
            "parameters": _parameters(),
            "responses": {str(status): _error(status) for status in ERRORS},
        },
    }


def _paths(settings: Settings) -> Schema:
    public: list[dict[str, list[str]]] = []
    return {
        "/openapi.json": {
            "get": _op(
                "getOpenApi", "This description.", {"200": _ok({"type": "object"})}, security=public
            ),
        },
        "/healthz": {
            "get": _op(
                "healthz",
                "Liveness and store reachability.",
                {
                    "200": _ok(_ref("Health")),
                    "503": _ok(_ref("Health"), "The store is unreachable."),
                },
                security=public,
            ),
        },
        "/callbacks/{token}": {
            "post": _op(
                "receiveCallback",
                "The providers' target: stores whatever is POSTed, answers once it is committed.",
                {
                    "200": _ok({"oneOf": [_ref("ChannelAck"), _ref("TaskAck")]}),
                    **_errors(400, 401, 404, 408, 410, 413, 429, 503),
                },
                params=[_path("token", {"type": "string"})],
                body={
                    "required": False,
                    "content": {
                        JSON: {"schema": {}},
                        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                        "text/plain": {"schema": {"type": "string"}},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                security=public,
            ),
        },
        "/v1/channels": {
            "post": _op(
                "createChannel",
                "An inbox: a callback URL for providers, a stream for you.",
                {"201": _ok(_ref("NewChannel")), **_errors(400, 401, 408, 413, 422, 429)},
                body={"required": False, "content": {JSON: {"schema": _ref("ChannelRequest")}}},
            ),
            "get": _op(
                "listChannels",
                "This key's newest channels (up to 100), newest first.",
                {"200": _ok(_ref("ChannelList")), **_errors(401, 429)},
            ),
        },
        "/v1/channels/{channel_id}": {
            "get": _op(
                "getChannel",
                "A channel, with a fresh watch_url and its open streams (subscribers).",
                {"200": _ok(_ref("Channel")), **_errors(401, 404, 429)},
                params=[_param_ref("ChannelId")],
            ),
            "delete": _op(
                "deleteChannel",
                "Erase the channel: its deliveries, events and callback URLs go, its streams "
                "end, its URLs answer 410 gone.",
                {"204": {"description": "Erased."}, **_errors(401, 404, 429)},
                params=[_param_ref("ChannelId")],
            ),
        },
        "/v1/channels/{channel_id}/events": {
            "get": _op(
                "streamChannel",
                "The channel's events as server-sent events: replay after Last-Event-ID, then "
                "live. It never ends by itself.",
                {"200": _stream(), **_errors(401, 404, 410, 422, 429)},
                params=[
                    _param_ref("ChannelId"),
                    _param_ref("LastEventIdHeader"),
                    _param_ref("LastEventIdQuery"),
                    _query(
                        "task_id",
                        {"type": "string", "maxLength": MAX_TASK_ID},
                        "Only the events correlated with this (provider) task id.",
                    ),
                    _query(
                        "types",
                        {"type": "string", "maxLength": MAX_TYPES * 64},
                        f"Comma-separated event types, 1 to {MAX_TYPES}.",
                    ),
                    _query(
                        "format",
                        {"enum": ["smee"]},
                        "smee: callbacks only, as smee.io streams them (unnamed events of "
                        "headers, body, query and timestamp), for smee-client.",
                    ),
                ],
                security=[{"bearerAuth": []}, {"watchToken": []}],
            ),
        },
        "/v1/channels/{channel_id}/tasks/{task_id}": {
            "get": _op(
                "getChannelTaskResult",
                "The latest callback about a provider task id, waiting up to `wait` seconds.",
                {"200": _ok(_ref("CallbackRecord")), **_errors(401, 404, 422, 429)},
                params=[
                    _param_ref("ChannelId"),
                    _path("task_id", {"type": "string", "minLength": 1, "maxLength": MAX_TASK_ID}),
                    _query(
                        "wait",
                        {"type": "integer", "minimum": 0, "maximum": settings.max_wait_seconds},
                        "Seconds to wait.",
                    ),
                ],
            ),
        },
        **_history(),
        "/v1/callback-urls": {
            "post": _op(
                "createCallbackUrl",
                "A fresh signed callback URL for an existing channel.",
                {
                    "201": _ok(_ref("CallbackUrl")),
                    **_errors(400, 401, 404, 408, 410, 413, 422, 429),
                },
                body={"required": True, "content": {JSON: {"schema": _ref("CallbackUrlRequest")}}},
            ),
        },
        "/v1/tasks": {
            "post": _op(
                "createTask",
                "Submit an image edit to a provider; watch its stream_url.",
                {
                    "202": _ok(_ref("TaskAccepted")),
                    **_errors(400, 401, 402, 408, 409, 413, 422, 429),
                },
                params=[_param_ref("IdempotencyKey")],
                body={"required": True, "content": {JSON: {"schema": _ref("TaskRequest")}}},
            ),
            "get": _op(
                "listTasks",
                "This key's newest tasks (up to 100), newest first.",
                {"200": _ok(_ref("TaskList")), **_errors(401, 429)},
            ),
        },
        "/v1/usage": {
            "get": _op(
                "getUsage",
                "This key's spend from `from` to `to` (UTC dates, inclusive; by default this "
                "month), by provider and by day, and this month against its budget.",
                {"200": _ok(_ref("UsageReport")), **_errors(401, 422, 429)},
                params=[
                    _query("from", {"type": "string", "format": "date"}, "First day (UTC)."),
                    _query("to", {"type": "string", "format": "date"}, "Last day (UTC)."),
                ],
            ),
        },
        "/v1/tasks/{task_id}": {
            "get": _op(
                "getTask",
                "A task as it is now.",
                {"200": _ok(_ref("Task")), **_errors(401, 404, 429)},
                params=[_param_ref("TaskId")],
            ),
        },
        "/v1/tasks/{task_id}/cancel": {
            "post": _op(
                "cancelTask",
                "Cancel a task: queued, it ends at once and nothing more is sent; submitted, "
                "the provider is asked to stop where it can and a late result is kept as a "
                "delivery, never applied. 409 task_ended if it had ended.",
                {"200": _ok(_ref("Task")), **_errors(401, 404, 409, 429)},
                params=[_param_ref("TaskId")],
            ),
        },
        "/v1/tasks/{task_id}/events": {
            "get": _op(
                "streamTask",
                "The task's events as server-sent events, from its beginning (or after "
                "Last-Event-ID); it ends after the terminal event.",
                {"200": _stream(), **_errors(401, 404, 410, 422, 429)},
                params=[
                    _param_ref("TaskId"),
                    _param_ref("LastEventIdHeader"),
                    _param_ref("LastEventIdQuery"),
                ],
                security=[{"bearerAuth": []}, {"watchToken": []}],
            ),
        },
        "/v1/uploads": {
            "post": _op(
                "upload",
                "Store an input image (PNG, JPEG or WebP) as a blob.",
                {"201": _ok(_ref("Blob")), **_errors(400, 401, 408, 413, 415, 422, 429)},
                body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                },
                            },
                            "encoding": {"file": {"contentType": ", ".join(_IMAGE_TYPES)}},
                        }
                    },
                },
            ),
        },
        "/v1/blobs/{blob_id}": {
            "get": _op(
                "getBlob",
                "A blob's bytes, with its content type.",
                {"200": _image(), **_errors(401, 404, 429)},
                params=[_path("blob_id", _schema(ids.BlobId))],
            ),
        },
        "/blobs/{token}": {
            "get": _op(
                "getPublicBlob",
                "A blob at a signed, expiring URL (how providers fetch inputs).",
                {"200": _image(), **_errors(401, 404, 410)},
                params=[_path("token", {"type": "string"})],
                security=public,
            ),
        },
        "/v1/images/edits": {
            "post": _op(
                "editImage",
                "OpenAI's image edit API (multipart, OpenAI's answers and error shape), run as "
                "a task on a provider; with callback_url it answers at once and POSTs "
                "AceData's callback body there later.",
                {
                    "200": _ok({"oneOf": [_ref("ImagesResponse"), _ref("EditAccepted")]}),
                    **{str(status): _openai_error(status) for status in OPENAI_ERRORS},
                },
                params=[_param_ref("IdempotencyKey")],
                body={
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("EditRequest")}},
                },
            ),
        },
        "/v1/webhooks": {
            "post": _op(
                "createWebhook",
                "A URL that gets a channel's or a task's events, signed (Standard Webhooks).",
                {"201": _ok(_ref("Webhook")), **_errors(400, 401, 404, 408, 413, 422, 429)},
                body={"required": True, "content": {JSON: {"schema": _ref("WebhookRequest")}}},
            ),
            "get": _op(
                "listWebhooks",
                "This key's webhooks.",
                {"200": _ok(_ref("WebhookList")), **_errors(401, 429)},
            ),
        },
        "/v1/webhooks/{webhook_id}": {
            "get": _op(
                "getWebhook",
                "A webhook, with its delivery state.",
                {"200": _ok(_ref("Webhook")), **_errors(401, 404, 429)},
                params=[_param_ref("WebhookId")],
            ),
            "delete": _op(
                "deleteWebhook",
                "Stop sending to this webhook.",
                {"204": {"description": "Deleted."}, **_errors(401, 404, 429)},
                params=[_param_ref("WebhookId")],
            ),
        },
    }


def _schemas(settings: Settings) -> Schema:
    _, schemas = msgspec.json.schema_components(SHAPES, ref_template=REF)
    # The range of a ttl is the serving hub's setting.
    for name in ("ChannelRequest", "CallbackUrlRequest"):
        ttl = schemas[name]["properties"]["ttl_seconds"]
        _limit(ttl, minimum=1, maximum=settings.max_ttl_seconds)
    event_types = sorted(set(EventType) - {EventType.WEBHOOK_FAILING})
    # One event of a stream. Before OpenAPI 3.2 (itemSchema), the schema of an
    # event-stream describes each event, as tools such as schemathesis read it.
    schemas["StreamEvent"] = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": event_types},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": JSON,
                "contentSchema": {
                    "anyOf": [
                        _ref("TaskEvent"),
                        _ref("TaskRetrying"),
                        _ref("CallbackEvent"),
                        _ref("StreamGap"),
                    ]
                },
            },
        },
    }
    # The OpenAI-compatible route's multipart form: files and text, as OpenAI takes them.
    binary = {"type": "string", "format": "binary"}
    images = {"type": "array", "items": binary, "maxItems": MAX_IMAGES}
    options = {"size": SIZES, "quality": QUALITIES, "background": BACKGROUNDS,
               "output_format": OUTPUT_FORMATS}  # fmt: skip
    schemas["EditRequest"] = {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "image": {"anyOf": [binary, images]},
            "image[]": images,
            "mask": binary,
            "prompt": {"type": "string", "maxLength": MAX_PROMPT},
            "provider": {"type": "string", "description": "Default: HUB_DEFAULT_PROVIDER."},
            "callback_url": {"type": "string", "format": "uri"},
            "n": {"type": "integer", "minimum": 1, "maximum": MAX_N},
            **{name: {"enum": list(allowed)} for name, allowed in options.items()},
            "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
            "model": {"type": "string", "description": "Accepted and ignored."},
        },
    }
    return schemas


def _history() -> Schema:
    """A channel's stored deliveries (hub.web.routes.deliveries)."""
    delivery = [_param_ref("DeliveryId")]
    return {
        "/v1/channels/{channel_id}/deliveries": {
            "get": _op(
                "listDeliveries",
                "The channel's stored deliveries, newest first, a page at a time.",
                {"200": _ok(_ref("DeliveryPage")), **_errors(401, 404, 422, 429)},
                params=[
                    _param_ref("ChannelId"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        "How many (default 50).",
                    ),
                    _query(
                        "before",
                        {"type": "string", "maxLength": 64},
                        "A delivery id (a page's next_before): the page after it.",
                    ),
                    _query(
                        "task_id",
                        {"type": "string", "maxLength": MAX_TASK_ID},
                        "Only the deliveries about this (provider) task id.",
                    ),
                ],
            ),
        },
        "/v1/channels/{channel_id}/deliveries.ndjson": {
            "get": _op(
                "exportDeliveries",
                "Every stored delivery, newest first, one JSON object a line with its "
                "body in body_base64.",
                {
                    "200": {
                        "description": "One DeliverySummary and body_base64 a line.",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 404, 429),
                },
                params=[_param_ref("ChannelId")],
            ),
        },
        "/v1/deliveries/{delivery_id}": {
            "get": _op(
                "getDelivery",
                "One stored delivery: headers, query, size, its event.",
                {"200": _ok(_ref("DeliverySummary")), **_errors(401, 404, 429)},
                params=delivery,
            ),
        },
        "/v1/deliveries/{delivery_id}/body": {
            "get": _op(
                "getDeliveryBody",
                "The exact bytes received, with the content type they came with.",
                {
                    "200": {
                        "description": "The body as received.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_errors(401, 404, 429),
                },
                params=delivery,
            ),
        },
        "/v1/channels/{channel_id}/callback-urls": {
            "get": _op(
                "listCallbackUrls",
                "The channel's callback URLs (ids, never the URLs), oldest first.",
                {"200": _ok(_ref("CallbackUrlList")), **_errors(401, 404, 429)},
                params=[_param_ref("ChannelId")],
            ),
        },
        "/v1/callback-urls/{url_id}": {
            "delete": _op(
                "revokeCallbackUrl",
                "Revoke one callback URL: it answers 401 revoked from then on, on every "
                "replica; the channel's other URLs keep working.",
                {"204": {"description": "Revoked."}, **_errors(401, 404, 429)},
                params=[_param_ref("CallbackUrlId")],
            ),
        },
        "/v1/deliveries/{delivery_id}/redeliver": {
            "post": _op(
                "redeliver",
                "The stored request POSTed again to url (its bytes, content type and "
                "headers less hop-by-hop ones); without url, its event to the channel's "
                "outbound webhooks. Each receiver's status and the time taken.",
                {"200": _ok(_ref("Redelivery")), **_errors(400, 401, 404, 408, 413, 422, 429)},
                params=delivery,
                body={"required": False, "content": {JSON: {"schema": _ref("RedeliverRequest")}}},
            ),
        },
    }


def _limit(schema: Schema, **bounds: int) -> None:
    """Bounds on the integer branch of a (possibly nullable) property."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "integer":
            branch.update(bounds)


def _schema(shape: Any) -> Schema:
    schema: Schema = msgspec.json.schema(shape)
    return schema


def _parameters() -> Schema:
    event_id = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
    return {
        "ChannelId": _path("channel_id", _schema(ids.ChannelId)),
        "TaskId": _path("task_id", _schema(ids.TaskId)),
        "WebhookId": _path("webhook_id", _schema(ids.WebhookId)),
        "DeliveryId": _path("delivery_id", _schema(DeliveryId)),
        "CallbackUrlId": _path("url_id", _schema(CallbackUrlId)),
        "LastEventIdHeader": {
            "name": "Last-Event-ID",
            "in": "header",
            "schema": event_id,
            "description": "Replay every matching event after this id (what EventSource sends).",
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "The same key and request within HUB_IDEMPOTENCY_TTL_SECONDS (24 h)"
            " get the first answer again (Idempotent-Replayed: true) and make nothing.",
        },
        "LastEventIdQuery": _query(
            "last_event_id", event_id, "The same, for clients that cannot send headers."
        ),
    }


def _op(
    operation_id: str,
    summary: str,
    responses: Schema,
    *,
    params: list[Schema] | None = None,
    body: Schema | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> Schema:
    operation: Schema = {"operationId": operation_id, "summary": summary}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = body
    if security is not None:
        operation["security"] = security
    operation["responses"] = responses
    return operation


def _error(status: int) -> Schema:
    response: Schema = {"description": ERRORS[status], "content": {JSON: {"schema": _ref("Error")}}}
    if status == 429:
        response["headers"] = {
            "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}
        }
    return response


def _openai_error(status: int) -> Schema:
    response: Schema = {
        "description": OPENAI_ERRORS[status],
        "content": {JSON: {"schema": _ref("OpenAIError")}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}
        }
    return response


def _errors(*statuses: int) -> Schema:
    return {str(status): {"$ref": f"#/components/responses/{status}"} for status in statuses}


def _ok(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _stream() -> Schema:
    return {
        "description": "Server-sent events: `id`, `event` and JSON `data` per event, "
        "`retry:` and comment heartbeats between them.",
        "content": {"text/event-stream": {"schema": _ref("StreamEvent")}},
    }


def _image() -> Schema:
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"description": "The image bytes.", "content": {media: binary for media in _IMAGE_TYPES}}


def _path(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _param_ref(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}
