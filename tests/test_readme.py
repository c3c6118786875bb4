"""README.md as a newcomer reads it in a fresh clone: what it points to is there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def named_paths() -> set[str]:
    """Files and folders README names: its links, and code spans that read as a path to a
    file (`bot/notes.py`) or a folder (`bench/`). `builtin/…` names a template, not a path."""
    links = set(re.findall(r"\]\(([^)#:]+)\)", README))
    spans = set(re.findall(r"`((?:\./)?[A-Za-z_][\w.-]*(?:/[\w.-]+)*(?:\.\w+|/))`", README))
    return {p for p in links | spans if "/" in p or p in links} - {
        p for p in spans if p.startswith("builtin/")
    }


def test_every_file_the_readme_names_is_in_the_repository() -> None:
    missing = sorted(p for p in named_paths() if not (REPO / p).exists())
    assert not missing, f"README names what a clone does not have: {missing}"


def test_the_check_reads_the_paths_in_the_readme() -> None:
    assert {"bot/notes.py", "manifest.yaml", "bench/"} <= named_paths()
