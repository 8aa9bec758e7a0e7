"""aiohttp: one optitrack client for the app's lifetime, opened and closed by a cleanup context.

Run it from the repository's root (``pip install optitrack aiohttp``)::

    optitrack collector --port 8765 &   # the Events API stand-in, on 127.0.0.1
    export OPTITRACK_EVENT_ENDPOINT=http://127.0.0.1:8765/v1/events
    python -m aiohttp.web -H 127.0.0.1 -P 8080 examples.aiohttp_app:create_app
    # or: PORT=8080 python -m examples.aiohttp_app   (web.run_app)
    curl -X POST 'http://127.0.0.1:8080/checkout/user-1?plan=pro'

Configured by environment variables:

- ``OPTIMIZELY_SDK_KEY``: your project environment's SDK key; the datafile is fetched from
  Optimizely and kept current. Without it, the example datafile bundled with optitrack
  (flag ``new_checkout``, event ``purchase``).
- ``OPTITRACK_EVENT_ENDPOINT``: where events go. Without it, they go to Optimizely's
  production Events API (of the datafile's region).
- ``HOST`` and ``PORT``: where ``python -m examples.aiohttp_app`` listens.

On SIGTERM (or Ctrl-C), aiohttp stops listening, lets the handlers in flight finish
(up to its ``shutdown_timeout``), then runs the cleanup contexts: leaving ``async with``
sends everything still queued, within ``close_timeout`` (5 s by default). The process
exits with status 0. See docs/frameworks.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from importlib.resources import files

from aiohttp import web

import optitrack

OPTITRACK = web.AppKey("optitrack", optitrack.Client)


def make_client() -> optitrack.Client:
    """The client, configured from the environment."""
    # Without OPTITRACK_EVENT_ENDPOINT, events go to Optimizely's production Events API.
    endpoint = os.environ.get("OPTITRACK_EVENT_ENDPOINT") or None
    sdk_key = os.environ.get("OPTIMIZELY_SDK_KEY")
    if sdk_key:
        return optitrack.Client(sdk_key=sdk_key, event_endpoint=endpoint)
    datafile = (files("optitrack") / "example_datafile.json").read_text()
    return optitrack.Client(datafile, event_endpoint=endpoint)


async def optitrack_client(app: web.Application) -> AsyncIterator[None]:
    """The cleanup context: enter the client at startup, leave it at cleanup."""
    async with make_client() as client:
        app[OPTITRACK] = client
        yield
    # Cleanup: everything that was queued was sent (within close_timeout).


async def checkout(request: web.Request) -> web.Response:
    """Decide the new checkout for a user (an impression), then track their purchase."""
    client = request.app[OPTITRACK]
    user_id = request.match_info["user_id"]
    user = client.create_user_context(user_id, {"plan": request.query.get("plan", "free")})
    decision = await user.decide("new_checkout")
    revenue = 4200 if decision.enabled else 3900  # minor units
    result = await user.track_event("purchase", {"revenue": revenue})
    return web.json_response(
        {
            "user_id": user_id,
            "new_checkout": decision.enabled,
            "variation": decision.variation_key,
            "tracked": result.accepted,
            "reason": result.reason,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """Readiness: 503 until the client has a datafile (with an SDK key, until fetched)."""
    ready = request.app[OPTITRACK].is_ready
    return web.json_response({"ready": ready}, status=200 if ready else 503)


def create_app(argv: list[str] | None = None) -> web.Application:
    """The app; ``argv`` is what ``python -m aiohttp.web`` did not parse (unused)."""
    app = web.Application()
    app.cleanup_ctx.append(optitrack_client)
    app.router.add_post("/checkout/{user_id}", checkout)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    # optitrack logs through the "optitrack" logger (drops at the shutdown deadline: ERROR).
    logging.basicConfig(level=logging.INFO)
    host = os.environ.get("HOST", "127.0.0.1")
    web.run_app(create_app(), host=host, port=int(os.environ.get("PORT", "8080")))
