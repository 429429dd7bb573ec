"""Local emulators of the four image-edit providers, as one ASGI app.

Two ways to run them:

* Standalone (``hub sandbox --port P``, tests): ``create_sandbox_app(settings)`` returns a
  Starlette app serving ``/acedata``, ``/eachlabs``, ``/atlascloud`` and ``/segmind``; its
  lifespan starts and stops the shared resources.
* Inside the hub (``hub serve --sandbox``): a Mount's sub-app lifespan does not run, so
  the hub builds a ``Sandbox``, calls ``await sandbox.start()`` and ``await
  sandbox.stop()`` from its own lifespan (or ``async with sandbox:``), and mounts
  ``sandbox.app`` at ``/sandbox``, giving ``/sandbox/acedata`` and so on.

A Sandbox owns one httpx.AsyncClient (input downloads, callbacks and webhooks), every
background job, and all emulator state (jobs, predictions, files, fault queues), bounded
and held by that object alone: two sandboxes in one process share nothing.

Each provider mount also serves ``/_sandbox/faults`` (see ``hub.sandbox.faults``),
``/_sandbox/ledger`` (the jobs it would bill, ``hub.sandbox.ledger``) and
``/files/{name}`` (outputs and uploads).

The emulators take only ``settings.api_key`` where it is set (``hub serve --sandbox``
generates one; ``hub sandbox`` reads ``HUB_SANDBOX_KEY``), keep each key's jobs apart,
and fetch inputs and send webhooks by the hub's outbound rules (``hub.net``): public
addresses, plus loopback while ``allow_loopback`` (the hub on this machine serves its
blobs and takes its callbacks there), never private, link-local or reserved ones, each
redirect checked again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from hub.sandbox.acedata import AceDataEmulator
from hub.sandbox.atlascloud import AtlasCloudEmulator
from hub.sandbox.eachlabs import EachlabsEmulator
from hub.sandbox.faults import FaultQueue
from hub.sandbox.ledger import Ledger
from hub.sandbox.runtime import Runtime
from hub.sandbox.segmind import SegmindEmulator
from hub.sandbox.settings import SandboxSettings

__all__ = ["PROVIDERS", "Sandbox", "SandboxSettings", "create_sandbox_app"]

PROVIDERS = ("acedata", "eachlabs", "atlascloud", "segmind")


class Sandbox:
    """The emulators and the resources they share; start it before serving ``app``."""

    def __init__(
        self, settings: SandboxSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.runtime = Runtime(settings, transport=transport)
        self.acedata = AceDataEmulator(self.runtime)
        self.eachlabs = EachlabsEmulator(self.runtime)
        self.atlascloud = AtlasCloudEmulator(self.runtime)
        self.segmind = SegmindEmulator(self.runtime)
        self.routes: list[BaseRoute] = [
            Mount("/acedata", app=self.acedata.app),
            Mount("/eachlabs", app=self.eachlabs.app),
            Mount("/atlascloud", app=self.atlascloud.app),
            Mount("/segmind", app=self.segmind.app),
        ]
        self.app = Starlette(routes=self.routes)

    def faults(self, provider: str) -> FaultQueue:
        """The fault queue of one provider, for code that prefers it to the HTTP endpoint."""
        emulators = {
            "acedata": self.acedata.faults,
            "eachlabs": self.eachlabs.faults,
            "atlascloud": self.atlascloud.faults,
            "segmind": self.segmind.faults,
        }
        return emulators[provider]

    def ledger(self, provider: str) -> Ledger:
        """The jobs one provider would bill, as ``/_sandbox/ledger`` shows them."""
        ledgers = {
            "acedata": self.acedata.ledger,
            "eachlabs": self.eachlabs.ledger,
            "atlascloud": self.atlascloud.ledger,
            "segmind": self.segmind.ledger,
        }
        return ledgers[provider]

    async def start(self) -> None:
        await self.runtime.start()

    async def stop(self) -> None:
        """Cancel background jobs, end held requests and close the HTTP client."""
        await self.runtime.stop()

    async def wait_idle(self) -> None:
        """Wait until every background job (edits, callbacks, retries) has finished."""
        await self.runtime.jobs.wait_idle()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def create_sandbox_app(
    settings: SandboxSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """One Starlette app serving /acedata, /eachlabs, /atlascloud, /segmind (each a Mount).

    Its lifespan owns the Sandbox: one httpx.AsyncClient (explicit timeouts and limits;
    ``transport`` injectable for tests) and all background jobs, cancelled on shutdown.
    The Sandbox is reachable as ``app.state.sandbox``.
    """
    sandbox = Sandbox(settings, transport=transport)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with sandbox:
            yield

    app = Starlette(routes=sandbox.routes, lifespan=lifespan)
    app.state.sandbox = sandbox
    return app
