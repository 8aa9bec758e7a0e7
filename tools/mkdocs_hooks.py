"""MkDocs hooks: the site's Home is the README and its Changelog is CHANGELOG.md.

Both files live at the repository's root, where people and package indexes read them;
the site renders them as they are, not copies that could drift. Their links to
``docs/X.md`` point into the site (``X.md``), and the README's to ``CHANGELOG.md`` to the
changelog page.

Used by ``mkdocs.yml`` (``hooks``).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

# Root file -> the page it becomes.
PAGES = {"README.md": "index.md", "CHANGELOG.md": "changelog.md"}

_LINK = re.compile(r"\]\((?:\./)?(docs/|CHANGELOG\.md)")


def _site_links(text: str) -> str:
    # ](docs/track.md) -> ](track.md); ](CHANGELOG.md) -> ](changelog.md)
    return _LINK.sub(lambda m: "](" + ("" if m.group(1) == "docs/" else "changelog.md"), text)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the README and the changelog to the site's pages.

    Args:
        files: The files MkDocs found in ``docs/``.
        config: The site's configuration.

    Returns:
        The files, with ``index.md`` and ``changelog.md``.
    """
    root = Path(config.config_file_path).parent
    for source, page in PAGES.items():
        text = _site_links((root / source).read_text(encoding="utf-8"))
        files.append(File.generated(config, page, content=text))
    return files
