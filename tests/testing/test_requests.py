"""optitrack.testing._requests: reading a body, its size limit, media type and gzip."""

from __future__ import annotations

import gzip

import pytest

from optitrack.testing import MAX_BODY_SIZE, EventsAPI
from tests.testing.conftest import CONVERSION_BODY, JSON, client, post

pytestmark = pytest.mark.anyio


async def test_413_past_the_size_limit_before_or_after_decoding() -> None:
    api = EventsAPI(max_body_size=len(CONVERSION_BODY))
    async with client(api) as http:
        at_limit = await post(http, CONVERSION_BODY)
        too_large = await post(http, CONVERSION_BODY + b" ")
        bomb = gzip.compress(CONVERSION_BODY + b" " * 1000)
        too_large_decoded = await post(http, bomb, **{"content-encoding": "gzip"})

    assert at_limit.status_code == 204
    assert too_large.status_code == 413
    assert too_large.json()["error"] == "payload_too_large"
    assert len(bomb) < len(CONVERSION_BODY)
    assert too_large_decoded.status_code == 413
    assert api.requests[1].body == b""  # an oversized body is not kept


async def test_413_at_the_real_limit() -> None:
    api = EventsAPI()
    assert api.max_body_size == MAX_BODY_SIZE == 3_500_000
    async with client(api) as http:
        response = await post(http, b" " * (MAX_BODY_SIZE + 1))

    assert response.status_code == 413


async def test_gzip_bodies() -> None:
    api = EventsAPI()
    compressed = gzip.compress(CONVERSION_BODY)
    async with client(api) as http:
        accepted = await post(http, compressed, **{"content-encoding": "gzip"})
        garbled = await post(http, compressed[:-10], **{"content-encoding": "gzip"})
        not_gzip = await post(http, CONVERSION_BODY, **{"content-encoding": "gzip"})

    assert accepted.status_code == 204
    first = api.requests[0]
    assert (first.body, first.content) == (compressed, CONVERSION_BODY)
    assert api.event_count == 1
    assert garbled.status_code == 400
    assert garbled.json()["error"] == "invalid_encoding"
    assert not_gzip.status_code == 400


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"content-type": "text/plain"}, id="content-type"),
        pytest.param({**JSON, "content-encoding": "br"}, id="content-encoding"),
    ],
)
async def test_415_on_unsupported_media(headers: dict[str, str]) -> None:
    api = EventsAPI()
    async with client(api) as http:
        response = await http.post("/v1/events", content=CONVERSION_BODY, headers=headers)

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


async def test_content_type_parameters_are_fine() -> None:
    api = EventsAPI()
    async with client(api) as http:
        response = await post(
            http, CONVERSION_BODY, **{"content-type": "application/json; charset=utf-8"}
        )

    assert response.status_code == 204
