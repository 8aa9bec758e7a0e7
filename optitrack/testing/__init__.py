"""Stand-ins for the Optimizely Events API and datafile CDN, for tests and benchmarks.

:class:`EventsAPI` is a plain ASGI 3 application that accepts ``POST /v1/events`` like the
real endpoint, validates each body strictly against :class:`optitrack._wire.EventBatch`,
answers ``204`` and records what arrived. It can be told to misbehave (:class:`Respond`,
:class:`Delay`, :class:`Hang`, :class:`Reset`), once per request from a script, for every
request, or for requests whose body matches a predicate.

Use it in-process, through :class:`httpx.ASGITransport`::

    api = EventsAPI()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:
        ...
    assert api.event_count == 3

or over real loopback sockets, when timeouts, resets and connection pooling matter::

    async with serve(EventsAPI()) as server:  # runs in the caller's event loop
        ... post to server.url ...

    with serve_in_thread(api) as server:  # an asyncio loop in a daemon thread
        ...

Both servers bind to loopback addresses only. :func:`serve` works on asyncio and Trio.

Besides ``POST /v1/events``, the app answers ``GET /`` with a small HTML results page and
``GET /v1/stats`` with the same summary as JSON (see :meth:`EventsAPI.statistics`). With
a database (``EventsAPI(db="events.db")`` or ``db=":memory:"``), what ``optitrack
collector`` serves, events are stored in SQLite, unique by uuid, and ``GET
/v1/results`` answers the experiment results counted by timestamp (``GET /`` draws them).

:class:`DatafileAPI` stands in for the datafile CDN: it serves ``GET
/datafiles/{sdk_key}.json`` (and ``/datafiles/auth/{sdk_key}.json``, with a bearer token)
with ``ETag``, ``Last-Modified`` and ``304`` answers to conditional requests, takes the
same faults, records each request as a :class:`DatafileRequest`, and runs on the same
servers::

    api = DatafileAPI({"SDK_KEY": datafile})
    async with serve(api) as server:
        ... get f"{server.base_url}/datafiles/SDK_KEY.json" ...
    api.set_datafile("SDK_KEY", new_datafile)  # a new revision: a new ETag

Everything public is importable from here; the modules behind it are private, one per
concern, without import cycles (``_server`` runs any ASGI app and imports neither app):

- ``_server``: :class:`Server`, :func:`serve`, :func:`serve_in_thread`, HTTP/1.1 on h11.
- ``_app``: :class:`EventsAPI`, the ASGI app: routing, the request pipeline, the record.
- ``_datafiles``: :class:`DatafileAPI`, the datafile CDN app, and :class:`DatafileRequest`.
- ``_requests``: :class:`ReceivedRequest`; reading and decoding one request's body.
- ``_asgi``: the ASGI types; answering and refusing.
- ``_faults``: the faults (:class:`Respond` and the rest, :class:`When`) and arming them.
- ``_applying``: applying a fault to a request, and the methods that arm faults, for both
  apps.
- ``_tallies``: what is counted from accepted batches (:class:`EventsAPIStatistics`).
- ``_store``: :class:`EventStore`, the events in SQLite, and the results' SQL.
- ``_results``: rates, lifts and confidence intervals from the stored counts.
- ``_html``: the results pages.
- ``_waiting``: the machinery behind the ``wait_*`` methods, across threads.
"""

import inspect

from ._app import EventsAPI
from ._asgi import ASGIApp, ASGIMessage, ASGIReceive, ASGISend
from ._datafiles import DatafileAPI, DatafileRequest
from ._faults import Delay, Fault, Hang, Reset, Respond, SimulatedReset, When
from ._requests import MAX_BODY_SIZE, ReceivedRequest
from ._server import Server, serve, serve_in_thread
from ._store import EventStore
from ._tallies import EventsAPIStatistics, VariationResults

__all__ = [
    "ASGIApp",
    "ASGIMessage",
    "ASGIReceive",
    "ASGISend",
    "DatafileAPI",
    "DatafileRequest",
    "Delay",
    "EventsAPI",
    "EventsAPIStatistics",
    "EventStore",
    "Fault",
    "Hang",
    "MAX_BODY_SIZE",
    "ReceivedRequest",
    "Reset",
    "Respond",
    "Server",
    "SimulatedReset",
    "VariationResults",
    "When",
    "serve",
    "serve_in_thread",
]

# Reprs, tracebacks and docs say optitrack.testing.X, never the private module behind it.
# Only classes and functions: the type aliases are shared typing objects.
for _name in __all__:
    _member = globals()[_name]
    if inspect.isclass(_member) or inspect.isfunction(_member):
        _member.__module__ = __name__
del _name, _member
