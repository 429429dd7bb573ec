"""A Python client for the hub's HTTP API, async (``AsyncClient``) and sync (``Client``).

    async with AsyncClient("http://127.0.0.1:8000", api_key) as hub:
        task = await hub.submit("acedata", "make it blue", ["photo.png"])
        done = await hub.wait(task["id"])
        image = await hub.download(done["outputs"][0]["url"])

``events()`` follows a channel or a task: when the connection drops it reconnects with
``Last-Event-ID``, so nothing is missed, and it never yields an event twice.
"""

from hub.client._client import AsyncClient, Client, Event, HubError
from hub.enums import TaskStatus

__all__ = ["AsyncClient", "Client", "Event", "HubError", "TaskStatus"]
