"""How a postmortem's cost grows with its timeline: fill a SQLite file, then time the render.

`python -m bench.postmortem_size fill --db FILE --entries N` writes one closed incident with
N entries by SQLAlchemy core bulk inserts; `python -m bench.postmortem_size measure --db FILE`
then times `postmortem.build_context` + `postmortem.render` (Markdown, as published at close)
and measures peak memory, printing JSON. Each runs in a process of its own, so that the
filling does not count towards the render's memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from bot import db, postmortem
from bot.models import Action, Incident, IncidentStatus, TimelineEntry, Workspace

TEAM = "T0BENCH001"
ZONE = "Africa/Nairobi"
STARTED = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
BATCH = 5_000
REPEATS = 3
TEXTS = (
    "Checkout API answers 503 for about 40% of requests",
    "Rolled back deploy #4127 (api-gateway) & watching error rates",
    "DB primary CPU at 95%; read replicas <lagging> by 30s",
    "Paged the on-call for payments: `payments-oncall`",
    "Customers report * failed * card payments in EU_west",
    "- Cache hit ratio back to 92 percent\nqueue depth falling",
)


def fill(path: Path, entries: int) -> dict[str, Any]:
    """One closed incident with `entries` timeline entries, a few measures and every field."""
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_schema(engine)
    began = time.perf_counter()
    # Entries a few seconds apart, so that a large incident spans several days.
    step = timedelta(seconds=7)
    closed_at = STARTED + step * (entries + 1)
    with engine.begin() as conn:
        conn.execute(insert(Workspace), [{"team_id": TEAM, "last_incident_number": 1}])
        incident_id = conn.execute(
            insert(Incident).returning(Incident.id),
            [
                {
                    "team_id": TEAM,
                    "number": 1,
                    "channel_id": "C0BENCH001",
                    "title": "Checkout errors after the gateway deploy",
                    "status": IncidentStatus.CLOSED.value,
                    "timezone": ZONE,
                    "started_at": STARTED,
                    "opened_by": "U0BENCH001",
                    "opened_at": STARTED,
                    "closed_at": closed_at,
                    "closed_by": "U0BENCH001",
                    "impact": "Requests to checkout returned 503 errors for EU customers",
                    "cause": "a connection pool exhausted by a retry storm",
                    "resolution": "Rolled back and capped retries",
                    "summary": "the gateway deploy doubled retries",
                }
            ],
        ).scalar_one()
        for first in range(0, entries, BATCH):
            rows = [
                {
                    "incident_id": incident_id,
                    "occurred_at": STARTED + step * (n + 1),
                    "recorded_at": STARTED + step * (n + 1),
                    "author_id": f"U0BENCH{n % 50:03d}",
                    "kind": "note",
                    "text": f"{TEXTS[n % len(TEXTS)]} ({n})",
                    "number": n + 1,
                }
                for n in range(first, min(entries, first + BATCH))
            ]
            conn.execute(insert(TimelineEntry), rows)
        conn.execute(
            insert(Action),
            [
                {
                    "incident_id": incident_id,
                    "text": f"Measure {n}: cap client retries",
                    "author_id": "U0BENCH001",
                    "created_at": closed_at,
                }
                for n in range(5)
            ],
        )
    engine.dispose()
    return {"entries": entries, "fill_s": time.perf_counter() - began}


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(path: Path) -> dict[str, Any]:
    """Time build_context + render (once cold, then a few times), then trace its memory."""
    engine = db.make_engine(f"sqlite:///{path}")
    sessions = db.make_session_factory(engine)
    env = postmortem.build_environment()
    env.get_template(postmortem.TEMPLATE_NAMES[postmortem.Format.MARKDOWN])  # as at start-up
    now = datetime.now(UTC)

    def once() -> tuple[float, float, int, int]:
        with sessions() as session:
            incident = session.scalars(select(Incident)).one()
            began = time.perf_counter()
            context = postmortem.build_context(session, incident=incident, now=now)
            built = time.perf_counter()
            markdown = postmortem.render(env, context)
            rendered = time.perf_counter()
            return built - began, rendered - built, len(context.timeline), len(markdown)

    cold = once()  # the first one also imports and caches what rendering needs
    gc.collect()
    rss_warm = _rss_mb()
    runs = [once() for _ in range(REPEATS)]
    max_rss = _max_rss_mb()

    gc.collect()
    tracemalloc.start()
    once()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.dispose()

    totals = [build + render for build, render, _, _ in runs]
    return {
        "timeline_lines": runs[0][2],
        "markdown_chars": runs[0][3],
        "build_s": statistics.median(build for build, _, _, _ in runs),
        "render_s": statistics.median(render for _, render, _, _ in runs),
        "total_s": statistics.median(totals),
        "first_total_s": cold[0] + cold[1],
        "repeats": REPEATS,
        "rss_warm_mb": rss_warm,  # the process after one render: interpreter, imports, caches
        "peak_rss_mb": max_rss,  # the process's high-water mark, all renders included
        "traced_peak_mb": traced_peak / 2**20,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postmortem_size", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    fill_step = steps.add_parser("fill")
    fill_step.add_argument("--db", type=Path, required=True)
    fill_step.add_argument("--entries", type=int, required=True)
    measure_step = steps.add_parser("measure")
    measure_step.add_argument("--db", type=Path, required=True)
    args = parser.parse_args(argv)
    result = fill(args.db, args.entries) if args.step == "fill" else measure(args.db)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
