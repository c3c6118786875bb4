"""Profile a server's worker under the benchmark's load with py-spy (not a project dependency).

`python -m bench.profile --server sqlite --clients 32 --count 6000 --out DIR` starts the
server as bench.run does, warms it up, then samples its gunicorn worker with
`py-spy record` while the load runs. It writes py-spy's collapsed stacks into DIR (any
flame graph tool reads them) and prints the functions in the most samples, inclusive and
by themselves.
Install py-spy into the virtualenv first: `.venv/bin/pip install py-spy`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import servers
from bench.run import QUICK, SECRET, TOKEN, Bench, say


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def record(pid: int, output: Path, rate: int, *, gil: bool, idle: bool) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into collapsed stacks (one line per stack, with its count)."""
    command = [py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    if gil:  # only the thread holding the GIL: where the worker's one core of Python goes
        command.append("--gil")
    if idle:  # threads waiting too (on a lock, a socket, SQLite's busy handler)
        command.append("--idle")
    command += ["--output", str(output), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(recorder: subprocess.Popen[bytes]) -> None:
    recorder.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
    try:
        recorder.wait(timeout=60)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait(timeout=10)


# Where a sample goes: the first bucket with a frame anywhere on the stack that matches.
BUCKETS = (
    ("database: BEGIN (IMMEDIATE on SQLite: waits for the write lock)", ("_on_begin (",)),
    ("database: find the open incident (ORM select + Incident)", ("find_open_incident (",)),
    ("database: flush + commit (ORM unit of work)", ("Session.commit (",)),
    ("database: rest (session, BEGIN, Core, driver)", ("sqlalchemy/", "sqlite3", "psycopg")),
    ("reply: Block Kit objects to dicts", ("as_ack (",)),
    ("log line (json + logging)", ("logging/",)),
    (
        "bot or prototype: the listener's own code",
        ("bot/slack/", "bot/incidents.py", "bot/timeparse.py", "bench/prototype.py"),
    ),
    ("Bolt: verify signature, parse, middleware, ack", ("slack_bolt/", "slack_sdk/")),
    ("gunicorn: HTTP parsing, threads, sockets", ("gunicorn/", "concurrent/", "selectors.py")),
)


def breakdown(collapsed: Path) -> str:
    """The samples by bucket (see BUCKETS), largest first."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        label = next(
            (name for name, needles in BUCKETS if any(n in stack for n in needles)), "other"
        )
        counts[label] += count
    lines = [f"-- by part ({total} samples)"]
    for label, count in counts.most_common():
        lines.append(f"{count / max(1, total) * 100:6.1f}%  {label}")
    return "\n".join(lines)


def top_functions(collapsed: Path, *, limit: int = 30) -> str:
    """The functions in most samples (inclusive: anywhere on the stack; self: at its top)."""
    inclusive: collections.Counter[str] = collections.Counter()
    itself: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first frame names the thread
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            itself[frames[-1]] += count
    lines = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", itself)):
        lines.append(f"-- {title}")
        for frame, count in counter.most_common(limit):
            lines.append(f"{count / max(1, total) * 100:6.1f}%  {frame}")
    return "\n".join(lines)


def start(
    args: argparse.Namespace, bench: Bench, work: Path, schema: servers.PostgresSchema | None
) -> servers.Server:
    """The server to profile, configured as bench.run configures it."""
    common: dict[str, Any] = {
        "secret": SECRET,
        "api_url": bench.fake.api_url,
        "workers": 1,
        "threads": 8,
        "workdir": work,
    }
    if args.server == "bare":
        return servers.start_bare(**common)
    url = f"sqlite:///{work / 'profile.db'}"
    extra = {}
    if schema is not None:
        url, extra = args.postgres, {"PGOPTIONS": schema.pgoptions}
    if args.server.startswith("proto-"):
        return servers.start_prototype(args.server, database_url=url, extra_env=extra, **common)
    return servers.start_bot(args.server, token=TOKEN, database_url=url, extra_env=extra, **common)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument(
        "--server",
        choices=["bare", "sqlite", "postgresql", "proto-sqlite", "proto-postgresql"],
        default="sqlite",
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument("--idle", action="store_true", help="sample waiting threads too")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="incident-bot-profile-") as tmp:
        work = Path(tmp)
        bench = Bench(QUICK, processes=2, workers=1, threads=8, work=work)
        bench.fake.start()
        schema: servers.PostgresSchema | None = None
        try:
            if args.server.endswith("postgresql"):
                schema = servers.PostgresSchema(args.postgres)
                schema.create()
            server = start(args, bench, work, schema)
            try:
                server.wait_ready()
                bench.servers[server.name] = {"handled": 0, "notes_acknowledged": 0}
                bench.drive(server, tag="W", clients=8, count=300)
                (worker,) = server.workers()
                mode = "-gil" if args.gil else "-idle" if args.idle else ""
                stem = args.out / f"{args.server}-{args.clients}{mode}"
                collapsed = stem.with_suffix(".collapsed.txt")
                recorder = record(worker, collapsed, args.rate, gil=args.gil, idle=args.idle)
                result = bench.drive(server, tag="P", clients=args.clients, count=args.count)
                stop(recorder)
                say(
                    f"{args.server}: {result.ok} ok, {result.errors} errors, "
                    f"{result.throughput:.0f} req/s while sampled ({args.rate}/s)"
                )
                report = breakdown(collapsed) + "\n" + top_functions(collapsed)
                stem.with_suffix(".top.txt").write_text(report + "\n")
                say(report)
            finally:
                server.stop()
        finally:
            bench.fake.stop()
            if schema is not None:
                schema.drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
