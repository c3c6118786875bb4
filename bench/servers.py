"""Starting and watching the servers under test: ports, readiness, CPU and memory, databases."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Variables the bot reads; the servers get ours only, never the caller's (or a .env's).
BOT_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "DATABASE_URL",
    "SLACK_API_URL",
    "INCIDENT_TIMEZONE",
    "TEMPLATES_DIR",
    "PGOPTIONS",
)


def free_port() -> int:
    """A port the OS says is free on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process we started (a gunicorn arbiter) and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    command: list[str]
    port: int
    log_path: Path
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll `GET /healthz` until it answers 200; fail with the log's tail if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                status = connection.getresponse().status
                connection.close()
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready in {timeout:.0f}s:\n{self.tail()}")

    def workers(self) -> list[int]:
        """The pids of the arbiter's worker processes."""
        return children_of(self.process.pid)

    def cpu_seconds(self) -> float:
        """CPU used so far by the arbiter and its workers."""
        return sum(process_cpu(pid) for pid in [self.process.pid, *self.workers()])

    def worker_rss_mb(self) -> list[float]:
        return [rss_mb(pid) for pid in self.workers()]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop gracefully (SIGTERM to the arbiter), then by force if it lingers."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for pid in self.workers():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)


def _environment(values: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in BOT_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(values)
    return env


def _spawn(name: str, command: list[str], values: dict[str, str], workdir: Path) -> Server:
    log_path = workdir / f"{name}.log"
    port = int(values.pop("_PORT"))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,  # no .env is read from here
            env=_environment(values),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(
        name=name, process=process, command=command, port=port, log_path=log_path, env=values
    )


def start_bare(
    *, secret: str, api_url: str, workers: int, threads: int, workdir: Path, name: str = "bare"
) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.bare", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--threads", str(threads)]
    values = {"SLACK_SIGNING_SECRET": secret, "SLACK_API_URL": api_url, "_PORT": str(port)}
    return _spawn(name, command, values, workdir)


def start_prototype(
    name: str,
    *,
    secret: str,
    api_url: str,
    database_url: str,
    workers: int,
    threads: int,
    workdir: Path,
    serialize_writes: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """bench/prototype.py (the proposed note path) on the bot's schema, on a port of its own."""
    port = free_port()
    command = [sys.executable, "-m", "bench.prototype", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--threads", str(threads)]
    if serialize_writes:
        command.append("--serialize-writes")
    values = {
        "SLACK_SIGNING_SECRET": secret,
        "SLACK_API_URL": api_url,
        "DATABASE_URL": database_url,
        "_PORT": str(port),
        **(extra_env or {}),
    }
    upgrade_schema(values, workdir)
    server = _spawn(name, command, values, workdir)
    server.database_url = database_url
    return server


def incident_bot_command() -> list[str]:
    """`incident-bot` from this interpreter's environment, or `python -m bot` without it."""
    script = Path(sys.executable).with_name("incident-bot")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bot"]


def start_bot(
    name: str,
    *,
    secret: str,
    token: str,
    api_url: str,
    database_url: str,
    workers: int,
    threads: int,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """`incident-bot db upgrade` (where the CLI has it), then `serve` on a port of its own."""
    port = free_port()
    command = [*incident_bot_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--threads", str(threads)]
    values = {
        "SLACK_SIGNING_SECRET": secret,
        "SLACK_BOT_TOKEN": token,
        "SLACK_API_URL": api_url,
        "DATABASE_URL": database_url,
        "INCIDENT_TIMEZONE": "UTC",
        "_PORT": str(port),
        **(extra_env or {}),
    }
    upgrade_schema(values, workdir)
    server = _spawn(name, command, values, workdir)
    server.database_url = database_url
    return server


def upgrade_schema(values: dict[str, str], workdir: Path) -> None:
    """Run `incident-bot db upgrade`, which `serve` requires first; older CLIs lack it."""
    env = _environment({k: v for k, v in values.items() if not k.startswith("_")})
    done = subprocess.run(
        [*incident_bot_command(), "db", "upgrade"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == 2 and "invalid choice: 'db'" in done.stderr:
        return  # this version's `serve` creates the schema itself
    if done.returncode != 0:
        raise RuntimeError(f"incident-bot db upgrade failed:\n{done.stdout}{done.stderr}")


# --- /proc ---------------------------------------------------------------------------------


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


# --- databases -----------------------------------------------------------------------------


def postgres_unreachable(url: str) -> str | None:
    """None when PostgreSQL at `url` answers, else why not."""
    try:
        engine = create_engine(make_url(url), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


@dataclass
class PostgresSchema:
    """A schema of our own on a PostgreSQL server, dropped when the benchmark ends."""

    url: str
    name: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:12]}")

    @property
    def pgoptions(self) -> str:
        return f"-csearch_path={self.name}"

    def create(self) -> None:
        engine = create_engine(make_url(self.url))
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        engine.dispose()

    def drop(self) -> None:
        engine = create_engine(make_url(self.url))
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        engine.dispose()


def count_entries(database_url: str, *, pgoptions: str | None = None) -> int:
    """How many timeline entries the database holds (to check every ack was committed)."""
    connect_args = {"options": pgoptions} if pgoptions else {}
    engine = create_engine(make_url(database_url), connect_args=connect_args)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM timeline_entries")).scalar_one())
    finally:
        engine.dispose()
