"""The benchmark script runs end to end in its tiny configuration, so that it cannot rot.

Functional checks only: every configuration is reported with a positive throughput and no
errors, every acknowledged note was stored, and the chart is written. No timing assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def one(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [row for row in rows if all(row.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{match}: {found}"
    return found[0]


def run_module(module: str, *args: str) -> None:
    """`python -m module args` from the checkout, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_the_quick_benchmark_reports_every_configuration(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run_module("bench.run", "--out", str(out), "--quick", "--prototype")

    results = json.loads((out / "results.json").read_text())
    plan = results["plan"]
    for server in ("bare", "bare-1thread", "sqlite", "proto-sqlite", "proto-sqlite-lock"):
        for clients in plan["clients"]:
            row = one(results["load"], server=server, clients=clients)
            assert row["throughput"] > 0
            assert (row["ok"], row["errors"]) == (plan["count"], 0), row["error_samples"]
            assert row["ratio_to_bare"] > 0
            assert 0 < row["ratio_to_fastest_bare"] <= row["ratio_to_bare"]
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        steady = one(results["steady"], server=server)
        assert steady["throughput"] > 0
        assert (steady["ok"], steady["errors"]) == (plan["steady_count"], 0)
    assert results["servers"]["sqlite"]["all_acknowledged_stored"]
    soak = results["soak"]
    assert len(soak) == len(plan["soak_checkpoints"])
    for point, checkpoint in zip(soak, plan["soak_checkpoints"], strict=True):
        assert point["handled"] >= checkpoint and point["worker_rss_mb"]
    sizes = {row["entries"]: row for row in results["postmortem"]}
    assert sorted(sizes) == sorted(plan["postmortem_sizes"])
    for entries, row in sizes.items():
        assert row["timeline_lines"] == entries
        assert row["total_s"] > 0 and row["peak_rss_mb"] > 0
    assert results["targets"]
    assert (out / "results.svg").read_text().startswith("<svg")


def test_the_note_cost_breakdown_runs_every_part(tmp_path: Path) -> None:
    # BENCHMARKS.md quotes its figures; it rotted once (a reply's signature changed under it).
    out = tmp_path / "note_cost.json"
    run_module("bench.note_cost", "--count", "3", "--json", str(out))

    results = json.loads(out.read_text())
    assert results["database"] == "sqlite"
    parts = results["cpu_us"]
    for part in (
        "bare Bolt: dispatch an ack-only /incident",
        "bot: dispatch /incident note (everything)",
        "bot.notes: NoteWriter.add, one note alone (its own transaction)",
        "reply: replies.noted().as_ack() (Block Kit objects)",
    ):
        assert parts[part] > 0, part
