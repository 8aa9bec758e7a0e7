"""FastAPI: one optitrack client for the app's lifetime, opened and closed by the lifespan.

Run it from the repository's root (``pip install optitrack fastapi uvicorn``)::

    optitrack collector --port 8765 &   # the Events API stand-in, on 127.0.0.1
    OPTITRACK_EVENT_ENDPOINT=http://127.0.0.1:8765/v1/events \\
        uvicorn examples.fastapi_app:app --host 127.0.0.1 --port 8000
    curl -X POST 'http://127.0.0.1:8000/checkout/user-1?plan=pro'

Configured by environment variables:

- ``OPTIMIZELY_SDK_KEY``: your project environment's SDK key; the datafile is fetched from
  Optimizely and kept current. Without it, the example datafile bundled with optitrack
  (flag ``new_checkout``, event ``purchase``).
- ``OPTITRACK_EVENT_ENDPOINT``: where events go. Without it, they go to Optimizely's
  production Events API (of the datafile's region).

On SIGTERM (or Ctrl-C), uvicorn stops accepting connections, lets the requests in flight
finish, then runs the lifespan's shutdown: leaving ``async with`` sends everything still
queued, within ``close_timeout`` (5 s by default). See docs/frameworks.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Annotated, Any, TypedDict

from fastapi import Depends, FastAPI, Request, Response

import optitrack


def make_client() -> optitrack.Client:
    """The client, configured from the environment."""
    # Without OPTITRACK_EVENT_ENDPOINT, events go to Optimizely's production Events API.
    endpoint = os.environ.get("OPTITRACK_EVENT_ENDPOINT") or None
    sdk_key = os.environ.get("OPTIMIZELY_SDK_KEY")
    if sdk_key:
        return optitrack.Client(sdk_key=sdk_key, event_endpoint=endpoint)
    datafile = (files("optitrack") / "example_datafile.json").read_text()
    return optitrack.Client(datafile, event_endpoint=endpoint)


class State(TypedDict):
    optitrack: optitrack.Client


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[State]:
    async with make_client() as client:
        yield {"optitrack": client}  # request.state.optitrack in handlers
    # Shutdown: everything that was queued was sent (within close_timeout).


app = FastAPI(lifespan=lifespan)


def get_client(request: Request) -> optitrack.Client:
    client: optitrack.Client = request.state.optitrack
    return client


ClientDep = Annotated[optitrack.Client, Depends(get_client)]


@app.post("/checkout/{user_id}")
async def checkout(user_id: str, client: ClientDep, plan: str = "free") -> dict[str, Any]:
    """Decide the new checkout for a user (an impression), then track their purchase."""
    user = client.create_user_context(user_id, {"plan": plan})
    decision = await user.decide("new_checkout")
    revenue = 4200 if decision.enabled else 3900  # minor units
    result = await user.track_event("purchase", {"revenue": revenue})
    return {
        "user_id": user_id,
        "new_checkout": decision.enabled,
        "variation": decision.variation_key,
        "tracked": result.accepted,
        "reason": result.reason,
    }


@app.get("/healthz")
async def healthz(client: ClientDep, response: Response) -> dict[str, Any]:
    """Readiness: 503 until the client has a datafile (with an SDK key, until fetched)."""
    if not client.is_ready:
        response.status_code = 503
    return {"ready": client.is_ready}
