"""optitrack.testing._html: the results page."""

from __future__ import annotations

import pytest

from optitrack.testing import EventsAPI
from tests.testing.conftest import CONVERSION_BODY, client, post

pytestmark = pytest.mark.anyio


async def test_results_page_escapes_keys() -> None:
    api = EventsAPI()
    body = CONVERSION_BODY.replace(b'"key": "purchase"', b'"key": "<script>"')
    async with client(api) as http:
        await post(http, body)
        page = await http.get("/")

    assert "&lt;script&gt;" in page.text
    assert "<script>" not in page.text
