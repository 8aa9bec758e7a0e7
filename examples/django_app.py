"""A single-file Django project that decides and tracks with :class:`optitrack.SyncClient`.

Run it under gunicorn, the client made once in the master and started afresh in each
worker (``--preload``)::

    optitrack collector --port 8765 &  # a local Events API stand-in, on 127.0.0.1
    OPTITRACK_EVENT_ENDPOINT=http://127.0.0.1:8765/v1/events \\
        gunicorn --preload --workers 3 --bind 127.0.0.1:8000 examples.django_app:application
    curl 'http://127.0.0.1:8000/checkout?user=user-1'

or with Django's development server: ``python examples/django_app.py runserver``.

Configuration, from the environment:

- ``OPTIMIZELY_SDK_KEY``: your project's SDK key; the datafile is fetched from Optimizely
  and kept current. Without it, the example datafile bundled with optitrack.
- ``OPTITRACK_EVENT_ENDPOINT``: where events are sent.
- ``DJANGO_SECRET_KEY``, ``DJANGO_ALLOWED_HOSTS`` (comma-separated), ``DJANGO_DEBUG``.

In a real project, make the client in a module of your own (say ``myproject/tracking.py``)
and import it from the views; nothing else changes. Shutdown needs nothing here: gunicorn
stops a worker with SIGTERM, the worker returns from its loop and exits through
``sys.exit``, and interpreter exit closes the client, sending what it still holds within
``close_timeout`` (5 s, well inside gunicorn's ``graceful_timeout`` of 30 s). See
docs/frameworks.md.
"""

from __future__ import annotations

import os
import sys
import uuid
from importlib.resources import files
from typing import Any

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

import optitrack

settings.configure(
    DEBUG=os.environ.get("DJANGO_DEBUG") == "1",
    # Set DJANGO_SECRET_KEY in production; this one is for the example only.
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "optitrack-example-not-a-secret"),
    ALLOWED_HOSTS=os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(","),
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    USE_TZ=True,
)


def make_client() -> optitrack.SyncClient:
    """The project's client, configured from the environment (it starts on first use)."""
    options: dict[str, Any] = {}
    endpoint = os.environ.get("OPTITRACK_EVENT_ENDPOINT")
    if endpoint:
        options["event_endpoint"] = endpoint
    # Without OPTITRACK_EVENT_ENDPOINT, events go to Optimizely's production Events API.
    sdk_key = os.environ.get("OPTIMIZELY_SDK_KEY")
    if sdk_key:
        return optitrack.SyncClient(sdk_key=sdk_key, **options)
    example = (files("optitrack") / "example_datafile.json").read_text()
    return optitrack.SyncClient(example, **options)


# At import: with gunicorn --preload, in the master. Each worker starts its own copy on
# its first request; nothing is shared between processes.
client = make_client()


def checkout(request: HttpRequest) -> JsonResponse:
    """Decide ``new_checkout`` for a user and track a ``purchase``."""
    user_id = request.GET.get("user") or str(uuid.uuid4())
    plan = request.GET.get("plan", "pro")
    user = client.create_user_context(user_id, {"plan": plan})
    decision = user.decide("new_checkout")  # sends the impression
    tracked = user.track_event("purchase", {"revenue": 4200})
    return JsonResponse(
        {
            "user_id": user_id,
            "enabled": decision.enabled,
            "variation": decision.variation_key,
            "tracked": bool(tracked),
            "reason": tracked.reason,
            "pid": os.getpid(),
        }
    )


urlpatterns = [path("checkout", checkout)]

application = get_wsgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
