"""The documentation: its code runs, and the configuration page names every option.

Every ```` ```python ```` block of ``README.md`` and ``docs/*.md`` runs as a script of its
own, in a subprocess with a time limit, in an empty directory, without the network:
proxies that lead nowhere are set for everything but loopback, and
``OPTIMIZELY_SDK_KEY`` is unset. A block that talks to the local collector
(``http://127.0.0.1:8765``, what ``optitrack collector`` serves) gets a real one, which
this module starts on a free port; the block's text is pointed at it. A block that
cannot run as it is (it needs an SDK key, a web framework...) is marked in the Markdown
with ``<!-- not-run: the reason -->`` right before it: it must still compile, and the
reason must be given.

The pages are read as text: nothing here needs MkDocs.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import optitrack
from optitrack._cli import main
from optitrack.testing import EventsAPI, Server, serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"
# Where the examples expect `optitrack collector` (its default port).
COLLECTOR = "127.0.0.1:8765"
BLOCK_TIMEOUT = 60
# Where the subprocesses' proxies point: the discard port, refused at once.
NOWHERE = "http://127.0.0.1:9"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)$")
_MARKER = re.compile(r"^<!--\s*not-run:(?P<reason>.*?)-->$", re.S)


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced ```` ```python ```` block of a page."""

    page: Path
    line: int  # of the opening fence, from 1
    code: str
    not_run: str | None  # the marker's reason, when the block is marked

    @property
    def id(self) -> str:
        """``README.md:27``, ``docs/track.md:9``."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The ```` ```python ```` blocks of a Markdown page, with their markers.

    Args:
        page: The page.

    Returns:
        Its Python blocks, in order.
    """
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, info = opening["indent"], opening["info"].strip()
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if info == "python":
            body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
            blocks.append(Block(page, index + 1, "\n".join(body) + "\n", _marker(lines, index)))
        index = end + 1
    return blocks


def _marker(lines: list[str], fence: int) -> str | None:
    # The reason of a `<!-- not-run: ... -->` comment right before the fence (blank
    # lines between allowed), or None.
    index = fence - 1
    while index >= 0 and not lines[index].strip():
        index -= 1
    if index < 0 or not lines[index].strip().endswith("-->"):
        return None
    start = index
    while start >= 0 and "<!--" not in lines[start]:
        start -= 1
    match = _MARKER.match(" ".join(line.strip() for line in lines[start : index + 1]))
    return match["reason"].strip() if match else None


BLOCKS = [block for page in PAGES for block in python_blocks(page)]
RUN = [block for block in BLOCKS if block.not_run is None]
NOT_RUN = [block for block in BLOCKS if block.not_run is not None]


def test_the_pages_have_code() -> None:
    assert len(RUN) >= 10, [block.id for block in RUN]
    assert len(NOT_RUN) <= len(BLOCKS) // 4, [block.id for block in NOT_RUN]


def test_every_not_run_marker_is_before_a_python_block() -> None:
    # A marker left behind when its block went, or put before a shell block, fails.
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        markers = len(re.findall(r"<!--\s*not-run", text))
        marked = sum(1 for block in python_blocks(page) if block.not_run is not None)
        assert markers == marked, f"{page.name}: a not-run marker is not before a python block"


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Server, EventsAPI]]:
    """The Events API stand-in, as ``optitrack collector`` serves it, on a free port."""
    api = EventsAPI()
    with serve_in_thread(api) as server:
        yield server, api


def _environment() -> dict[str, str]:
    unset = {"OPTIMIZELY_SDK_KEY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}
    env = {key: value for key, value in os.environ.items() if key.upper() not in unset}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = NOWHERE
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_code_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    code = block.code
    api: EventsAPI | None = None
    if COLLECTOR in code:
        server, api = request.getfixturevalue("collector")
        code = code.replace(COLLECTOR, f"127.0.0.1:{server.port}")
        events_before = api.event_count
    try:
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", code],
            cwd=tmp_path,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stderr if isinstance(exc.stderr, str) else ""
        pytest.fail(f"{block.id} ran longer than {BLOCK_TIMEOUT} s:\n{output}")
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
    if api is not None and "async with" in code:
        # A block that runs a client reached the collector: the endpoint in its text was
        # the one served (else its events would have been dropped, silently, on close).
        assert api.event_count > events_before, f"{block.id} sent nothing to the collector"


@pytest.mark.parametrize("block", NOT_RUN, ids=[block.id for block in NOT_RUN])
def test_code_block_not_run_says_why_and_compiles(block: Block) -> None:
    assert block.not_run, f"{block.id}: say why it is not run: <!-- not-run: the reason -->"
    # Fragments may await at the top level: compile them as an async REPL would.
    compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


# -- the configuration page -------------------------------------------------------------

_ROW = re.compile(r"^\|\s*`(?P<name>\w+)`\s*\|(?P<default>[^|]*)\|")
_CODE = re.compile(r"`([^`]*)`")


def _documented_options() -> tuple[dict[str, str], dict[str, str]]:
    # The rows of the page's tables, `name` | default | ...: Client's options (tables
    # headed "| option |"), and RetryPolicy's fields (tables headed "| field |").
    client: dict[str, str] = {}
    retry: dict[str, str] = {}
    rows = client
    for line in CONFIGURATION_PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith(("| option |", "| field |")):
            rows = client if line.startswith("| option |") else retry
        match = _ROW.match(line)
        if match:
            assert match["name"] not in rows, f"{match['name']} is documented twice"
            rows[match["name"]] = match["default"]
    return client, retry


def _default_of(cell: str) -> Any:
    # The first code span of a default cell, as a Python literal: `1_000`, `"drop_newest"`.
    found = _CODE.search(cell)
    assert found, f"no default in {cell!r}"
    return ast.literal_eval(found.group(1))


def test_configuration_page_lists_every_option() -> None:
    client_rows, retry_rows = _documented_options()

    parameters = inspect.signature(optitrack.Client.__init__).parameters
    options = {name: p.default for name, p in parameters.items() if name != "self"}
    assert set(client_rows) == set(options), "options of Client() missing or stale in the page"
    for name, default in options.items():
        assert _default_of(client_rows[name]) == default, f"the default of {name}"

    fields = {
        field.name: field.default
        for field in dataclasses.fields(optitrack.RetryPolicy)
        if field.default is not dataclasses.MISSING
    }
    assert len(fields) == len(dataclasses.fields(optitrack.RetryPolicy))
    assert set(retry_rows) == set(fields), "fields of RetryPolicy missing or stale in the page"
    for name, default in fields.items():
        assert _default_of(retry_rows[name]) == default, f"the default of RetryPolicy.{name}"


# -- the command line page --------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["collector"]], ids=["optitrack", "demo", "collector"]
)
def test_cli_page_lists_every_option(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    usage = capsys.readouterr().out
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    options = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", usage))
    assert options, usage
    for option in options:
        assert f"`{option}" in page or f" {option}" in page, f"{option} is not in docs/cli.md"
