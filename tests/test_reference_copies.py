"""The tests' copies of the reference postmortems are the originals, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "reference-postmortems"
ORIGINALS = Path(__file__).resolve().parents[2] / "shared" / "reference-postmortems"


@pytest.mark.skipif(not ORIGINALS.is_dir(), reason="no ../shared/ beside this checkout")
@pytest.mark.parametrize("name", ["README.md", "hum-ddos-outage.md", "payment-site-outage.html"])
def test_the_copy_is_the_original(name: str) -> None:
    assert (HERE / name).read_bytes() == (ORIGINALS / name).read_bytes()
