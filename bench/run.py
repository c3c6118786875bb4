"""The benchmark of issue 5, in one run: `python -m bench.run --out DIR [--quick]`.

1. Starts a bare Bolt app that only acknowledges `/incident` (bench/bare.py), twice (the
   bot's threads per worker, and one thread per worker, the faster), and
   `incident-bot serve` on SQLite and, when reachable, PostgreSQL, all on the same gunicorn
   stack with Slack's Web API played by `bot.demo.FakeSlack`, each on a port from the OS.
2. Drives each with the same generator (bench/load.py): one `/incident start` per channel,
   then signed `/incident note` requests from 1, 8 and 32 clients on keep-alive connections,
   then a steady 50 commands/s; on SQLite also a long run that samples a worker's memory.
3. Renders postmortems of 100 to 100,000 entries (bench/postmortem_size.py).
4. Prints a table, and writes results.json and results.svg into --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import chart, load, servers
from bench.load import LoadResult, Target
from bot.demo import FakeSlack, SlashCommand

SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench-token"
TEAM = "T0BENCH001"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BOT_SERVERS = ("sqlite", "postgresql")  # what the targets are about; the rest is reference
# The floor, twice: `bare` has the bot's workers and threads; `bare-1thread` the same workers
# with one thread each, which is faster still (no thread waits for the GIL), so the targets
# are measured against whichever of the two was fastest.
BARE_SERVERS = ("bare", "bare-1thread")
NOTED = b"Added to"  # every acknowledgement of a recorded note says so
STARTED = b"opened"


@dataclass(frozen=True)
class Plan:
    """How much to do; `FULL` is the benchmark of issue 5, `QUICK` only proves it runs."""

    clients: tuple[int, ...]
    count: int  # requests per load configuration
    rounds: int  # each configuration this many times, interleaved; the best round is reported
    warmup: int
    steady_rate: float
    steady_count: int
    steady_connections: int
    soak_checkpoints: tuple[int, ...]  # handled commands at which a worker's memory is read
    soak_clients: int
    postmortem_sizes: tuple[int, ...]
    postgres: bool
    deadline_s: float  # per load configuration


FULL = Plan(
    clients=(1, 8, 32),
    count=6_000,
    rounds=2,
    warmup=400,
    steady_rate=50.0,
    steady_count=1_000,
    steady_connections=8,
    soak_checkpoints=(10_000, 40_000, 70_000, 100_000),
    soak_clients=8,
    postmortem_sizes=(100, 1_000, 10_000, 100_000),
    postgres=True,
    deadline_s=300.0,
)
# For working on the note path: the closed loop and a short steady run, nothing else.
LOAD_ONLY = Plan(
    clients=(1, 8, 32),
    count=3_000,
    rounds=1,
    warmup=400,
    steady_rate=50.0,
    steady_count=250,
    steady_connections=8,
    soak_checkpoints=(),
    soak_clients=8,
    postmortem_sizes=(),
    postgres=True,
    deadline_s=300.0,
)
QUICK = Plan(
    clients=(1, 2),
    count=60,
    rounds=1,
    warmup=20,
    steady_rate=25.0,
    steady_count=25,
    steady_connections=2,
    soak_checkpoints=(200, 300),
    soak_clients=2,
    postmortem_sizes=(100, 1_000),
    postgres=False,
    deadline_s=60.0,
)


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- driving one server --------------------------------------------------------------------


class Bench:
    """Everything one run shares: the plan, the stand-in for Slack, where files go."""

    def __init__(
        self,
        plan: Plan,
        *,
        processes: int,
        workers: int,
        threads: int,
        work: Path,
        new_connections: bool = False,
    ):
        self.plan = plan
        self.new_connections = new_connections
        self.processes = processes
        self.workers = workers
        self.threads = threads
        self.work = work
        self.fake = FakeSlack(team_id=TEAM)
        self.rounds: list[dict[str, Any]] = []
        self.steady: list[dict[str, Any]] = []
        self.soak_points: list[dict[str, Any]] = []
        self.servers: dict[str, dict[str, Any]] = {}
        self.cleanups: list[Callable[[], None]] = []

    def channels(self, server: str, tag: str, count: int) -> tuple[list[str], list[str]]:
        channels = [f"C{server[:2].upper()}{tag}{i:03d}" for i in range(count)]
        users = [f"U{server[:2].upper()}{tag}{i:03d}" for i in range(count)]
        return channels, users

    def start_incidents(
        self, server: servers.Server, channels: list[str], users: list[str]
    ) -> None:
        """`/incident start` once per channel, one at a time, before any note is sent there."""
        expect = None if server.name in BARE_SERVERS else STARTED
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for channel, user in zip(channels, users, strict=True):
                self.fake.users.setdefault(user, "Africa/Nairobi")
                command = SlashCommand(
                    secret=SECRET, team_id=TEAM, channel_id=channel, user_id=user
                )
                body, headers = command.signed(f"start Benchmark load in {channel}")
                connection.request("POST", "/slack/events", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200 or (expect is not None and expect not in answer):
                    raise RuntimeError(f"{server.name}: start failed: {response.status} {answer!r}")
                self.servers[server.name]["handled"] += 1
        finally:
            connection.close()

    def drive(
        self,
        server: servers.Server,
        *,
        tag: str,
        clients: int,
        count: int,
        rate: float | None = None,
        processes: int | None = None,
        start: bool = True,
    ) -> LoadResult:
        channels, users = self.channels(server.name, tag, clients)
        if start:
            self.start_incidents(server, channels, users)
        target = Target(
            host="127.0.0.1",
            port=server.port,
            secret=SECRET,
            team_id=TEAM,
            expect=None if server.name in BARE_SERVERS else NOTED,
            new_connections=self.new_connections,
        )

        def probe() -> dict[str, float]:
            busy, total = servers.machine_cpu()
            return {"server_cpu": server.cpu_seconds(), "machine_busy": busy, "machine": total}

        result = load.drive(
            target,
            channels=channels,
            users=users,
            count=count,
            processes=processes or self.processes,
            rate=rate,
            deadline_s=self.plan.deadline_s,
            label=f"{tag}",
            probe=probe,
        )
        self.servers[server.name]["handled"] += result.ok + result.errors
        self.servers[server.name]["notes_acknowledged"] += result.ok
        return result

    def row(self, server: str, result: LoadResult, **extra: Any) -> dict[str, Any]:
        start, end = result.probe_start or {}, result.probe_end or {}
        wall = result.wall_s
        machine = end.get("machine", 0) - start.get("machine", 0)
        return {
            "server": server,
            "clients": result.clients,
            "count": result.count,
            "ok": result.ok,
            "errors": result.errors,
            "error_samples": result.error_samples,
            "reconnects": result.reconnects,
            "timed_out": result.timed_out,
            "wall_s": wall,
            "throughput": result.throughput,
            "p50_ms": result.percentile(50),
            "p95_ms": result.percentile(95),
            "p99_ms": result.percentile(99),
            "max_ms": max(result.latencies_ms, default=0.0),
            "client_processes": result.client_processes,
            "client_cpu_s": result.client_cpu_s,
            # Cores the generator kept busy, and per process (1.0 would mean it is saturated).
            "client_cores": result.client_cpu_s / wall,
            "client_busiest_process": result.client_cpu_s / wall / result.client_processes,
            "server_cores": (end.get("server_cpu", 0) - start.get("server_cpu", 0)) / wall,
            "machine_busy": (
                (end.get("machine_busy", 0) - start.get("machine_busy", 0)) / machine
                if machine
                else 0.0
            ),
            **extra,
        }

    def prepare(self, server: servers.Server) -> None:
        """Wait for `/healthz`, then warm the server up (imports, caches, first connections)."""
        say(f"== {server.name}: {' '.join(shlex.quote(a) for a in server.command)}")
        server.wait_ready()
        self.servers[server.name] = {
            "command": server.command,
            "environment": {k: v for k, v in server.env.items() if k != "SLACK_SIGNING_SECRET"},
            "workers": self.workers,
            "threads": self.threads,
            "handled": 0,
            "notes_acknowledged": 0,
        }
        if self.plan.warmup:
            warm = self.drive(server, tag="W", clients=8, count=self.plan.warmup)
            if warm.errors:
                raise RuntimeError(f"{server.name}: warm-up failed: {warm.error_samples}")
        self.servers[server.name]["worker_rss_after_warmup_mb"] = server.worker_rss_mb()

    def compare(self, started: Sequence[servers.Server]) -> None:
        """Each load configuration on every server in turn, so that they share the conditions."""
        plan = self.plan
        for round_ in range(plan.rounds):
            for clients in plan.clients:
                for server in started:
                    result = self.drive(
                        server, tag=f"R{round_}L{clients:02d}", clients=clients, count=plan.count
                    )
                    row = self.row(server.name, result, round=round_)
                    self.rounds.append(row)
                    say(_load_line(row))
        for server in started:
            steady = self.drive(
                server,
                tag="S",
                clients=plan.steady_connections,
                count=plan.steady_count,
                rate=plan.steady_rate,
                processes=1,
            )
            row = self.row(server.name, steady, rate=plan.steady_rate)
            self.steady.append(row)
            say(_steady_line(row))
        for server in started:
            if server.database_url is not None:
                self.check_committed(server)
            self.servers[server.name]["log_tail"] = server.tail(10)

    def best_rounds(self) -> list[dict[str, Any]]:
        """Per server and client count, the round with the highest throughput."""
        best: dict[tuple[str, int], dict[str, Any]] = {}
        for row in self.rounds:
            key = (row["server"], row["clients"])
            if key not in best or row["throughput"] > best[key]["throughput"]:
                best[key] = row
        return list(best.values())

    def soak(self, server: servers.Server) -> None:
        """On a fresh server, send notes until it has handled each checkpoint; read its memory."""
        say(f"== {server.name}: {' '.join(shlex.quote(a) for a in server.command)}")
        server.wait_ready()
        self.servers[server.name] = {"command": server.command, "handled": 0}
        self.servers[server.name]["notes_acknowledged"] = 0
        clients = self.plan.soak_clients
        tag = "K"
        channels, users = self.channels(server.name, tag, clients)
        self.start_incidents(server, channels, users)
        for checkpoint in self.plan.soak_checkpoints:
            missing = checkpoint - self.servers[server.name]["handled"]
            if missing > 0:
                result = self.drive(server, tag=tag, clients=clients, count=missing, start=False)
                if result.errors:
                    say(f"   soak: {result.errors} errors, e.g. {result.error_samples[:1]}")
            rss = server.worker_rss_mb()
            point = {
                "server": server.name,
                "handled": self.servers[server.name]["handled"],
                "worker_rss_mb": rss,
            }
            self.soak_points.append(point)
            say(f"   soak: {point['handled']:>7,} commands handled, worker RSS {_mb(rss)}")
        self.check_committed(server)

    def check_committed(self, server: servers.Server) -> None:
        """Every acknowledged note must be in the database (entries counted after the run)."""
        assert server.database_url is not None
        stored = servers.count_entries(server.database_url, pgoptions=server.env.get("PGOPTIONS"))
        acknowledged = self.servers[server.name]["notes_acknowledged"]
        self.servers[server.name]["entries_stored"] = stored
        self.servers[server.name]["all_acknowledged_stored"] = stored >= acknowledged
        say(f"   {server.name}: {stored:,} entries stored for {acknowledged:,} acknowledged notes")


def _mb(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f} MB" for v in values) or "?"


def _load_line(row: dict[str, Any]) -> str:
    return (
        f"   {row['server']:<10} {row['clients']:>3} clients {row['ok']:>6} ok "
        f"{row['errors']:>3} err "
        f"{row['throughput']:>8.1f} req/s  p50 {row['p50_ms']:6.2f}  p95 {row['p95_ms']:6.2f}  "
        f"p99 {row['p99_ms']:6.2f} ms  server {row['server_cores']:.2f} cores, "
        f"client {row['client_cores']:.2f} cores ({row['client_processes']} proc), "
        f"machine {row['machine_busy'] * 100:.0f}% busy"
    )


def _steady_line(row: dict[str, Any]) -> str:
    return (
        f"   {row['server']:<10} steady {row['rate']:.0f}/s: {row['ok']} ok {row['errors']} err "
        f"{row['throughput']:.1f} req/s  p50 {row['p50_ms']:.2f}  p99 {row['p99_ms']:.2f} ms"
    )


# --- postmortems ---------------------------------------------------------------------------


def postmortem_sizes(sizes: Sequence[int], work: Path) -> list[dict[str, Any]]:
    rows = []
    for entries in sizes:
        path = work / f"postmortem-{entries}.db"
        filled = _run_json([sys.executable, "-m", "bench.postmortem_size", "fill"], path, entries)
        measured = _run_json([sys.executable, "-m", "bench.postmortem_size", "measure"], path)
        row = {**filled, **measured, "entries": entries}
        row["us_per_entry"] = row["total_s"] / entries * 1e6
        rows.append(row)
        say(
            f"   {entries:>7,} entries: build {row['build_s'] * 1000:8.1f} ms  render "
            f"{row['render_s'] * 1000:8.1f} ms  total {row['total_s'] * 1000:8.1f} ms "
            f"({row['us_per_entry']:.1f} us/entry)  peak RSS {row['peak_rss_mb']:.0f} MB "
            f"(warm {row['rss_warm_mb']:.0f}), traced peak {row['traced_peak_mb']:.1f} MB"
        )
        path.unlink(missing_ok=True)
    return rows


def _run_json(command: list[str], path: Path, entries: int | None = None) -> dict[str, Any]:
    command = [*command, "--db", str(path)]
    if entries is not None:
        command += ["--entries", str(entries)]
    done = subprocess.run(
        command,
        cwd=servers.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    loaded: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


# --- targets ---------------------------------------------------------------------------------


def fastest(
    rows: Sequence[dict[str, Any]], *, clients: int, servers: Sequence[str] = BARE_SERVERS
) -> dict[str, Any] | None:
    """The row of the bare server with the highest throughput at `clients` clients."""
    candidates = [r for r in rows if r["server"] in servers and r["clients"] == clients]
    return max(candidates, key=lambda r: r["throughput"], default=None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's targets against what this run measured."""
    found: list[dict[str, Any]] = []
    load_rows, plan = results["load"], results["plan"]
    most = max(plan["clients"])
    bare = [r for r in load_rows if r["server"] in BARE_SERVERS]
    fastest_bare = max((r["throughput"] for r in bare), default=0.0)
    bare_top = fastest(bare, clients=most)
    for row in load_rows:
        if row["server"] not in BOT_SERVERS or row["clients"] != most or not fastest_bare:
            continue
        ratio = row["throughput"] / fastest_bare
        found.append(
            {
                "target": f"{row['server']}: throughput at {most} clients >= 0.8x fastest bare",
                "measured": f"{row['throughput']:.0f} / {fastest_bare:.0f} req/s = {ratio:.2f}x",
                "met": ratio >= 0.8,
            }
        )
        if bare_top is not None and bare_top["p99_ms"] > 0:
            p99_ratio = row["p99_ms"] / bare_top["p99_ms"]
            found.append(
                {
                    "target": (
                        f"{row['server']}: p99 at {most} clients <= 1.5x the p99 of the fastest "
                        f"bare ({bare_top['server']})"
                    ),
                    "measured": (
                        f"{row['p99_ms']:.1f} / {bare_top['p99_ms']:.1f} ms = {p99_ratio:.2f}x"
                    ),
                    "met": p99_ratio <= 1.5,
                }
            )
    for row in results["steady"]:
        if row["server"] not in BOT_SERVERS:
            continue
        found.append(
            {
                "target": f"{row['server']}: p99 < 50 ms at a steady {row['rate']:.0f} commands/s",
                "measured": f"{row['p99_ms']:.1f} ms ({row['errors']} errors)",
                "met": row["p99_ms"] < 50 and row["errors"] == 0,
            }
        )
    sizes = {row["entries"]: row for row in results["postmortem"]}
    for entries, limit in ((10_000, 0.5), (100_000, 5.0)):
        if entries in sizes:
            seconds = sizes[entries]["total_s"]
            found.append(
                {
                    "target": f"postmortem of {entries:,} entries in under {limit} s",
                    "measured": f"{seconds:.3f} s",
                    "met": seconds < limit,
                }
            )
    if 100_000 in sizes:
        peak = sizes[100_000]["peak_rss_mb"]
        found.append(
            {
                "target": "postmortem of 100,000 entries: memory under 200 MB",
                "measured": (
                    f"peak RSS {peak:.0f} MB (traced {sizes[100_000]['traced_peak_mb']:.0f} MB)"
                ),
                "met": peak < 200,
            }
        )
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        growth = sizes[large]["us_per_entry"] / sizes[small]["us_per_entry"]
        anchor = 10_000 if 10_000 in sizes and large > 10_000 else small
        linear = sizes[large]["us_per_entry"] / sizes[anchor]["us_per_entry"]
        found.append(
            {
                "target": "postmortem rendering linear in entries",
                "measured": (
                    f"{sizes[large]['us_per_entry']:.1f} us/entry at {large:,} vs "
                    f"{sizes[anchor]['us_per_entry']:.1f} at {anchor:,} "
                    f"(x{linear:.2f}; x{growth:.2f} from {small:,})"
                ),
                "met": linear <= 1.5,
            }
        )
    soak = [p for p in results["soak"] if p["worker_rss_mb"]]
    if len(soak) >= 2:
        first, last = soak[0], soak[-1]
        before, after = sum(first["worker_rss_mb"]), sum(last["worker_rss_mb"])
        change = after / before - 1 if before else 0.0
        found.append(
            {
                "target": (
                    f"worker memory flat (within 10%) from {first['handled']:,} to "
                    f"{last['handled']:,} commands"
                ),
                "measured": f"{before:.1f} MB -> {after:.1f} MB ({change * 100:+.1f}%)",
                "met": abs(change) <= 0.10,
            }
        )
    return found


# --- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else LOAD_ONLY if args.load_only else FULL
    if args.no_postgres:
        plan = Plan(**{**asdict(plan), "postgres": False})
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m", "bench.run"])
    command += " " + " ".join(shlex.quote(a) for a in (args.argv or []))
    results: dict[str, Any] = {
        "title": f"incident-bot benchmark ({'quick' if args.quick else 'full'})",
        "command": command.strip(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": {
                name: _version(name)
                for name in ("slack_bolt", "slack_sdk", "SQLAlchemy", "gunicorn", "psycopg")
            },
        },
        "code": _code_version(),
        "background_cpu_busy": _background_busy(),
        "plan": asdict(plan),
        "connections": "new per request" if args.new_connections else "keep-alive",
        "load": [],
        "steady": [],
        "soak": [],
        "postmortem": [],
        "servers": {},
        "skipped": {},
    }
    say(
        f"== code {results['code']['commit'] or results['code']['source']} "
        f"({len(results['code']['uncommitted'])} uncommitted changes in bot/), "
        f"{results['connections']} connections, "
        f"machine {results['background_cpu_busy'] * 100:.0f}% busy before the start"
    )
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="incident-bot-bench-") as tmp:
        work = Path(tmp)
        bench = Bench(
            plan,
            processes=args.client_processes,
            workers=args.workers,
            threads=args.threads,
            work=work,
            new_connections=args.new_connections,
        )
        bench.fake.start()
        schema: servers.PostgresSchema | None = None
        started: list[servers.Server] = []

        def bot(name: str, database_url: str, **env: str) -> servers.Server:
            return servers.start_bot(
                name,
                secret=SECRET,
                token=TOKEN,
                api_url=bench.fake.api_url,
                database_url=database_url,
                workers=args.workers,
                threads=args.threads,
                workdir=work,
                extra_env=env,
            )

        try:
            started.append(
                servers.start_bare(
                    secret=SECRET,
                    api_url=bench.fake.api_url,
                    workers=args.workers,
                    threads=args.threads,
                    workdir=work,
                )
            )
            started.append(
                servers.start_bare(
                    secret=SECRET,
                    api_url=bench.fake.api_url,
                    workers=args.workers,
                    threads=1,
                    workdir=work,
                    name="bare-1thread",
                )
            )
            started.append(bot("sqlite", f"sqlite:///{work / 'bench.db'}"))
            if plan.postgres:
                problem = servers.postgres_unreachable(args.postgres)
                if problem is None:
                    schema = servers.PostgresSchema(args.postgres)
                    schema.create()
                    started.append(bot("postgresql", args.postgres, PGOPTIONS=schema.pgoptions))
                else:
                    results["skipped"]["postgresql"] = problem
                    say(f"== postgresql skipped: {problem}")
            else:
                results["skipped"]["postgresql"] = "not in this plan (--quick or --no-postgres)"
            if args.prototype:
                started += _prototypes(bench, args, work, schema)
            try:
                for server in started:
                    bench.prepare(server)
                bench.compare(started)
            finally:
                _stop(started, bench)
            if plan.soak_checkpoints:
                soak = [bot("sqlite-soak", f"sqlite:///{work / 'soak.db'}")]
                try:
                    bench.soak(soak[0])
                finally:
                    _stop(soak, bench)
        finally:
            bench.fake.stop()
            if schema is not None:
                schema.drop()
            for cleanup in bench.cleanups:
                cleanup()
        results["load"] = bench.best_rounds()
        results["load_rounds"] = bench.rounds
        results["steady"], results["soak"] = bench.steady, bench.soak_points
        results["servers"] = bench.servers
        for row in results["load"]:
            same = fastest(results["load"], clients=row["clients"], servers=("bare",))
            best = fastest(results["load"], clients=row["clients"])
            row["ratio_to_bare"] = row["throughput"] / same["throughput"] if same else None
            row["ratio_to_fastest_bare"] = row["throughput"] / best["throughput"] if best else None
        say("== postmortems")
        results["postmortem"] = postmortem_sizes(plan.postmortem_sizes, work)
    results["targets"] = targets(results)
    results["duration_s"] = time.monotonic() - began
    return results


def _prototypes(
    bench: Bench, args: argparse.Namespace, work: Path, schema: servers.PostgresSchema | None
) -> list[servers.Server]:
    """bench/prototype.py on each database: the proposed note path, for comparison only."""

    def prototype(name: str, url: str, **options: Any) -> servers.Server:
        return servers.start_prototype(
            name,
            secret=SECRET,
            api_url=bench.fake.api_url,
            database_url=url,
            workers=args.workers,
            threads=args.threads,
            workdir=work,
            **options,
        )

    found = [
        prototype("proto-sqlite", f"sqlite:///{work / 'proto.db'}"),
        prototype(
            "proto-sqlite-lock", f"sqlite:///{work / 'proto-lock.db'}", serialize_writes=True
        ),
    ]
    if schema is not None:
        proto_schema = servers.PostgresSchema(args.postgres)
        proto_schema.create()
        bench.cleanups.append(proto_schema.drop)
        found.append(
            prototype(
                "proto-postgresql",
                args.postgres,
                extra_env={"PGOPTIONS": proto_schema.pgoptions},
            )
        )
    return found


def _stop(started: Sequence[servers.Server], bench: Bench) -> None:
    for server in started:
        if server.process.poll() is not None:
            say(f"{server.name} had exited:\n{server.tail()}")
        server.stop()
        bench.servers.setdefault(server.name, {})["returncode"] = server.process.returncode


def _code_version() -> dict[str, Any]:
    """The commit measured, and which of the bot's files differed from it."""

    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", *arguments], cwd=servers.ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "bot", "templates", "pyproject.toml")
    return {
        "source": str(servers.ROOT),
        "commit": git("rev-parse", "HEAD") or None,  # None: not a git checkout (an export)
        "uncommitted": changed.splitlines(),
    }


def _background_busy(seconds: float = 1.0) -> float:
    """How busy the machine is before we start (other work skews every figure)."""
    busy, total = servers.machine_cpu()
    time.sleep(seconds)
    busy_after, total_after = servers.machine_cpu()
    return (busy_after - busy) / (total_after - total) if total_after > total else 0.0


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def summary(results: dict[str, Any]) -> None:
    say()
    say(
        "server         clients    req/s  x bare  x fastest  p50 ms  p95 ms  p99 ms  errors"
        "  client cores"
    )
    for row in results["load"]:
        say(
            f"{row['server']:<14} {row['clients']:>7} {row['throughput']:>8.1f} "
            f"{row['ratio_to_bare'] or 0:>7.2f} {row['ratio_to_fastest_bare'] or 0:>10.2f} "
            f"{row['p50_ms']:>7.2f} {row['p95_ms']:>7.2f} {row['p99_ms']:>7.2f} "
            f"{row['errors']:>7}  {row['client_cores']:.2f}"
        )
    for row in results["steady"]:
        say(
            f"{row['server']:<12} steady {row['rate']:.0f}/s: p50 {row['p50_ms']:.2f} ms, "
            f"p99 {row['p99_ms']:.2f} ms, {row['errors']} errors"
        )
    say()
    for target in results["targets"]:
        say(f"[{'met' if target['met'] else 'MISSED':>6}] {target['target']}: {target['measured']}")
    say(f"\n{results['duration_s']:.0f} s in all")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json/.svg")
    parser.add_argument("--quick", action="store_true", help="a tiny run, SQLite only")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or DEFAULT_POSTGRES_URL,
        help="PostgreSQL server to use when reachable (a schema is created and dropped)",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="only the closed loop (3,000 notes, one round) and a short steady run",
    )
    parser.add_argument("--workers", type=int, default=1, help="as `incident-bot serve` (1)")
    parser.add_argument("--threads", type=int, default=8, help="as `incident-bot serve` (8)")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="a new connection per request (Connection: close) instead of keep-alive",
    )
    parser.add_argument(
        "--prototype",
        action="store_true",
        help="also measure bench/prototype.py, the note path BENCHMARKS.md proposes",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    results = run(args)
    summary(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.svg").write_text(chart.render_svg(results))
    say(f"wrote {args.out / 'results.json'} and {args.out / 'results.svg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
