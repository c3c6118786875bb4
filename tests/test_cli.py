"""The console script as a newcomer uses it: `demo`, then `export`; and a real wheel install."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from bot import db, incidents, postmortem
from bot.demo import FakeSlack, Fault, SlashCommand
from tests.conftest import ALICE, TEAM
from tests.test_web import served

REPO = Path(__file__).resolve().parent.parent


def bot_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("newcomer")


@pytest.fixture(scope="module")
def demo_run(demo_dir: Path) -> subprocess.CompletedProcess[str]:
    return bot_cli("demo", cwd=demo_dir)


def without_footer(markdown: str) -> str:
    return markdown.split("\n---\n", 1)[0]


def test_demo_prints_the_postmortem_and_leaves_the_database(
    demo_run: subprocess.CompletedProcess[str], demo_dir: Path
) -> None:
    assert demo_run.returncode == 0, demo_run.stderr
    assert demo_run.stdout.startswith("# Postmortem: ")
    assert "From 1:06 AM to 2:46 AM EAT, requests to the company's servers" in demo_run.stdout
    assert "* 2:46 AM - 100% traffic online" in demo_run.stdout
    assert (demo_dir / "incidents.db").is_file()
    assert "INC-1 opened" in demo_run.stderr  # the commands and their answers, on stderr


def test_the_demo_leaves_its_incident_in_incidents_db_itself(
    demo_run: subprocess.CompletedProcess[str], demo_dir: Path, tmp_path: Path
) -> None:
    # Before any export of it below: one that opens and closes it folds the log in.
    assert demo_run.returncode == 0, demo_run.stderr

    exported = only_the_file(demo_dir / "incidents.db", tmp_path)

    assert exported.returncode == 0, exported.stderr
    assert "100% traffic online" in exported.stdout


def test_demo_writes_to_incidents_db_here_never_to_the_configured_database(tmp_path: Path) -> None:
    # README step 2 has the operator's .env name the production database; the demo, run
    # beside it, must neither migrate that database nor write a sample incident into it.
    production = "postgresql+psycopg://bot:hunter2@127.0.0.1:9/production"
    (tmp_path / ".env").write_text(f"DATABASE_URL={production}\n")

    result = bot_cli("demo", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "incidents.db").is_file()
    assert "hunter2" not in result.stderr


def test_export_prints_the_same_postmortem_from_the_database(
    demo_run: subprocess.CompletedProcess[str], demo_dir: Path
) -> None:
    exported = bot_cli("export", "INC-1", cwd=demo_dir)
    assert exported.returncode == 0, exported.stderr
    assert without_footer(exported.stdout) == without_footer(demo_run.stdout)

    html = bot_cli("export", "inc-1", "--format", "html", cwd=demo_dir)
    assert html.returncode == 0, html.stderr
    assert html.stdout.startswith("<!DOCTYPE html>")
    assert "<h2>Timeline:</h2>" in html.stdout and "100% traffic online" in html.stdout


@pytest.mark.parametrize(
    ("reference", "code", "says"),
    [
        ("INC-99", 1, "There is no INC-99"),
        ("yesterday", 2, "not an incident reference"),
        ("INC-99999999999999999999", 2, "not an incident reference"),  # no database holds it
        ("INC-\u0661", 2, "not an incident reference"),  # an Arabic-Indic 1 is not INC-1
    ],
)
def test_export_refuses_what_it_cannot_find(
    demo_run: subprocess.CompletedProcess[str], demo_dir: Path, reference: str, code: int, says: str
) -> None:
    assert demo_run.returncode == 0
    result = bot_cli("export", reference, cwd=demo_dir)
    assert result.returncode == code
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_export_asks_for_the_workspace_when_a_number_is_in_several(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'incidents.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    now = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    with db.make_session_factory(engine)() as session:
        for team, title in (("T0AAAAAAA1", "Ours"), ("T0BBBBBBB1", "Theirs")):
            incidents.start_incident(
                session,
                team_id=team,
                channel_id="C1",
                user_id="U1",
                title=title,
                started_at=now,
                timezone="UTC",
                now=now,
            )
        session.commit()
    engine.dispose()

    ambiguous = bot_cli("export", "INC-1", cwd=tmp_path, env={"DATABASE_URL": url})
    assert ambiguous.returncode == 1 and "--team" in ambiguous.stderr
    theirs = bot_cli(
        "export", "INC-1", "--team", "T0BBBBBBB1", cwd=tmp_path, env={"DATABASE_URL": url}
    )
    assert theirs.returncode == 0 and theirs.stdout.startswith("# Postmortem: Theirs")


def test_export_closes_the_direction_typed_text_opens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'incidents.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    now = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    with db.make_session_factory(engine)() as session:
        incident = incidents.start_incident(
            session,
            team_id="T1",
            channel_id="C1",
            user_id="U1",
            title="\u202eevil",
            started_at=now,
            timezone="UTC",
            now=now,
        )
        incidents.add_entry(
            session, incident=incident, text="\u2067evil", occurred_at=now, author_id="U1", now=now
        )
        session.commit()
    engine.dispose()

    for form in ("md", "html"):
        exported = bot_cli(
            "export", "INC-1", "--format", form, cwd=tmp_path, env={"DATABASE_URL": url}
        )
        assert exported.returncode == 0, exported.stderr
        assert "\u202eevil\u202c" in exported.stdout
        assert "\u2067evil\u2069" in exported.stdout


def test_a_built_wheel_carries_the_templates_and_runs_from_anywhere(tmp_path: Path) -> None:
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(wheels), str(REPO)], check=True, timeout=300
    )
    [wheel] = wheels.glob("incident_bot-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300
    )

    env = {"PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import bot.postmortem as p; print(p.builtin_templates_dir())"],
        cwd=elsewhere,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(site), probe.stdout  # not the checkout's

    demo = bot_cli("demo", cwd=elsewhere, env=env)
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.startswith("# Postmortem: ")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN is not set"),
        ({"SLACK_BOT_TOKEN": "xoxb-x"}, "SLACK_SIGNING_SECRET is not set"),
        # Multi-workspace needs no bot token: it gets as far as the schema check.
        (
            {"SLACK_SIGNING_SECRET": "s", "SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "c"},
            "incident-bot db upgrade",
        ),
    ],
)
def test_serve_names_what_it_lacks(tmp_path: Path, env: dict[str, str], says: str) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = bot_cli("serve", "--port", "0", cwd=tmp_path, env={**env, "DATABASE_URL": url})
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["--workers", "--threads"])
@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_serve_refuses_a_count_that_is_not_positive(
    tmp_path: Path, option: str, value: str
) -> None:
    result = bot_cli("serve", option, value, cwd=tmp_path, env={"SLACK_SIGNING_SECRET": "s"})
    assert result.returncode == 2
    assert f"argument {option}: '{value}' is not a whole number of at least 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["99999", "65536", "-5"])
def test_serve_refuses_a_port_that_does_not_exist(tmp_path: Path, value: str) -> None:
    env = {"SLACK_SIGNING_SECRET": "s", "SLACK_BOT_TOKEN": "xoxb-x"}
    result = bot_cli("serve", "--port", value, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert f"argument --port: '{value}' is not a port number (0 to 65535)" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_warns_that_several_workers_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {"SLACK_SIGNING_SECRET": "s", "SLACK_BOT_TOKEN": "xoxb-x", "DATABASE_URL": url}
    assert bot_cli("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL"))}
    command = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--workers", "2"],
        cwd=tmp_path,
        env={**clean, **env, "SLACK_API_URL": "http://127.0.0.1:9/api/"},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # gunicorn's workers go with it
    )
    seen: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the warning comes before gunicorn starts
            seen.append(line)
            if "Booting worker" in line or len(seen) > 50:
                break
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    said = "".join(seen)
    assert "2 workers share one SQLite file" in said, said


# --- export only reads ---------------------------------------------------------------------


def test_export_without_a_database_says_so_and_creates_none(tmp_path: Path) -> None:
    for url in (None, f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'incidents.db'}"):
        exported = bot_cli(
            "export", "INC-1", cwd=tmp_path, env={"DATABASE_URL": url} if url else {}
        )
        assert exported.returncode == 2
        assert exported.stderr.startswith("incident-bot: there is no database at ")
        assert "incident-bot db upgrade" in exported.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_an_older_schema_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = db.make_engine(url)
    with db.migration_connection(engine) as connection:
        command.upgrade(db.alembic_config(connection), "0001")  # workers of the last release
    engine.dispose()

    exported = bot_cli("export", "INC-1", cwd=tmp_path, env={"DATABASE_URL": url})

    assert exported.returncode == 2
    assert exported.stderr.startswith("incident-bot: will not export: ")
    engine = db.make_engine(url)
    with engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        )
    engine.dispose()


@pytest.mark.usefixtures("demo_run")  # the demo's database, in demo_dir
def test_export_with_a_broken_template_names_it_without_a_traceback(
    demo_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "postmortem.md.j2").write_text("{% if %}broken\n")

    exported = bot_cli("export", "INC-1", cwd=demo_dir, env={"TEMPLATES_DIR": str(tmp_path)})

    assert exported.returncode == 1
    template = tmp_path / "postmortem.md.j2"
    assert exported.stderr.startswith(f"incident-bot: the postmortem template {template} failed")
    assert "Traceback" not in exported.stderr


@pytest.mark.usefixtures("demo_run")  # the demo's database, in demo_dir
@pytest.mark.parametrize(
    ("template", "line", "error"),
    [
        # A name `pm` does not have: Jinja's error names neither the file nor the line, and
        # export said "the postmortem template a template failed".
        ("# {{ pm.title }}\n{{ pm.no_such_field }}\n", 2, "has no attribute 'no_such_field'"),
        # An error that is not Jinja's own (a division by zero in the template) was a traceback.
        ("# {{ pm.title }}\n\n{{ pm.actions|length // 0 }}\n", 3, "by zero"),
    ],
)
def test_export_with_a_template_that_fails_as_it_renders_names_its_file_and_line(
    demo_dir: Path, tmp_path: Path, template: str, line: int, error: str
) -> None:
    (tmp_path / "postmortem.md.j2").write_text(template)

    exported = bot_cli("export", "INC-1", cwd=demo_dir, env={"TEMPLATES_DIR": str(tmp_path)})

    assert exported.returncode == 1
    assert exported.stdout == ""
    where = f"{tmp_path / 'postmortem.md.j2'} failed at line {line}"
    assert exported.stderr.startswith(f"incident-bot: the postmortem template {where}: "), (
        exported.stderr
    )
    assert error in exported.stderr
    assert "Traceback" not in exported.stderr


def test_export_of_a_file_that_is_not_a_database_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    url = f"sqlite:///{tmp_path / 'notes.txt'}"

    exported = bot_cli("export", "INC-1", cwd=tmp_path, env={"DATABASE_URL": url})

    assert exported.returncode == 1
    assert exported.stderr.startswith("incident-bot: cannot read the database at ")
    assert "Traceback" not in exported.stderr


# --- templates are checked at start-up --------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{% if %}broken\n", "line 1: Expected an expression"),
        ("# {{ pm.title }}\n\n{{ pm.titel }}\n", "line 3: 'bot.postmortem.PostmortemContext"),
    ],
)
@pytest.mark.parametrize(
    ("mode", "env"),
    [
        ("serve", {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s"}),
        ("socket", {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xapp-x"}),
    ],
)
def test_serving_refuses_a_template_that_fails_before_the_first_close(
    tmp_path: Path, mode: str, env: dict[str, str], template: str, says: str
) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "postmortem.md.j2").write_text(template)
    assert bot_cli("db", "upgrade", cwd=tmp_path).returncode == 0  # nothing else stops it
    env = {**env, "TEMPLATES_DIR": str(folder), "SLACK_API_URL": "http://127.0.0.1:9/api/"}

    result = bot_cli(mode, cwd=tmp_path, env=env)

    assert result.returncode == 2
    assert result.stderr.startswith(
        f"incident-bot: configuration error: TEMPLATES_DIR holds a template that fails: "
        f"{folder / 'postmortem.md.j2'}, {says}"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_copies_of_the_built_in_templates_pass_the_start_up_check(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    for template in postmortem.builtin_templates_dir().glob("*.j2"):
        (folder / template.name).write_text(template.read_text())
    env = {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xapp-x", "TEMPLATES_DIR": str(folder)}

    result = bot_cli("socket", cwd=tmp_path, env=env)  # no database: the next thing it checks

    assert result.returncode == 2
    assert result.stderr.startswith("incident-bot: there is no database at "), result.stderr


# --- the bot token is tried before serving ----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "env"),
    [("serve", {"SLACK_SIGNING_SECRET": "s"}), ("socket", {"SLACK_APP_TOKEN": "xapp-x"})],
)
def test_serving_on_a_token_slack_refuses_names_the_token(
    tmp_path: Path, mode: str, env: dict[str, str]
) -> None:
    assert bot_cli("db", "upgrade", cwd=tmp_path).returncode == 0
    slack = FakeSlack(tokens={"xoxb-the-right-one": "T0DEMO0001"}).start()
    try:
        result = bot_cli(
            mode,
            cwd=tmp_path,
            env={**env, "SLACK_BOT_TOKEN": "xoxb-revoked", "SLACK_API_URL": slack.api_url},
        )
    finally:
        slack.stop()

    assert result.returncode == 2
    assert result.stderr.startswith(
        "incident-bot: configuration error: SLACK_BOT_TOKEN was refused by Slack (invalid_auth)"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_serving_on_an_api_url_that_is_not_slacks_says_so(tmp_path: Path) -> None:
    assert bot_cli("db", "upgrade", cwd=tmp_path).returncode == 0
    slack = FakeSlack().start()
    try:
        env = {"SLACK_SIGNING_SECRET": "s", "SLACK_BOT_TOKEN": "xoxb-x"}
        result = bot_cli("serve", cwd=tmp_path, env={**env, "SLACK_API_URL": slack.base})
    finally:
        slack.stop()

    assert result.returncode == 1
    said = f"{slack.base}/ (SLACK_API_URL) did not answer as Slack's Web API does: HTTP 404"
    assert said in result.stderr, result.stderr
    assert "SLACK_BOT_TOKEN" not in result.stderr and "Traceback" not in result.stderr


def test_socket_mode_on_an_app_token_slack_refuses_names_the_token(tmp_path: Path) -> None:
    assert bot_cli("db", "upgrade", cwd=tmp_path).returncode == 0
    slack = FakeSlack().start()
    slack.fail("apps.connections.open", Fault(error="invalid_auth"))
    try:
        env = {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xapp-revoked"}
        result = bot_cli("socket", cwd=tmp_path, env={**env, "SLACK_API_URL": slack.api_url})
    finally:
        slack.stop()

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "incident-bot: configuration error: SLACK_APP_TOKEN was refused by Slack (invalid_auth)"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_socket_mode_when_slack_cannot_open_a_connection_says_so_without_a_traceback(
    tmp_path: Path,
) -> None:
    """apps.connections.open answers 503 (Slack is down, or SLACK_API_URL is not Slack): the
    bot stops as `serve` does when Slack cannot be reached, saying what answered."""
    assert bot_cli("db", "upgrade", cwd=tmp_path).returncode == 0
    slack = FakeSlack().start()
    slack.fail("apps.connections.open", Fault(status=503, times=10))
    try:
        env = {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xapp-x"}
        result = bot_cli("socket", cwd=tmp_path, env={**env, "SLACK_API_URL": slack.api_url})
    finally:
        slack.stop()

    assert result.returncode == 1, result.stderr
    said = (
        f"incident-bot: {slack.api_url} (SLACK_API_URL) could not open a Socket Mode "
        "connection (apps.connections.open): HTTP 503"
    )
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# --- --help ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve"], ["--host HOST", "(default 0.0.0.0)", "(default 3000", "(default 1)"]),
        (["export"], ["INC-<n>", "(default md)"]),
    ],
)
def test_help_says_what_each_option_is_and_its_default(
    args: list[str], says: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    with pytest.raises(SystemExit) as stopped:
        main([*args, "--help"])

    assert stopped.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for phrase in says:
        assert phrase in shown, shown


def test_export_asks_for_the_workspace_even_when_only_one_has_the_number(
    tmp_path: Path,
) -> None:
    # Someone of the second workspace asking for its INC-2, which it does not have, must not
    # be handed the first workspace's INC-2 without a word.
    url = f"sqlite:///{tmp_path / 'incidents.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    now = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    with db.make_session_factory(engine)() as session:
        for team, channel in (("T0AAAAAAA1", "C1"), ("T0AAAAAAA1", "C2"), ("T0BBBBBBB1", "C1")):
            incidents.start_incident(
                session,
                team_id=team,
                channel_id=channel,
                user_id="U1",
                title="Outage",
                started_at=now,
                timezone="UTC",
                now=now,
            )
        session.commit()
        with pytest.raises(incidents.IncidentNotFoundError, match="--team T0AAAAAAA1"):
            incidents.get_incident(session, team_id=None, number=2)
        assert incidents.get_incident(session, team_id="T0AAAAAAA1", number=2).number == 2
    engine.dispose()


def test_socket_mode_refuses_the_multi_workspace_variables_naming_them(tmp_path: Path) -> None:
    """Installing in several workspaces goes through /slack/install and an OAuth redirect,
    which only `serve` answers: `socket` set up that way ignored SLACK_BOT_TOKEN (after
    checking it) and told every command of a workspace not installed by `serve` that the
    app was not authorized, while logging that it was answering Slack."""
    assert bot_cli("db", "upgrade", cwd=tmp_path).returncode == 0
    env = {
        "SLACK_BOT_TOKEN": "xoxb-x",
        "SLACK_APP_TOKEN": "xapp-x",
        "SLACK_CLIENT_ID": "1.2",
        "SLACK_CLIENT_SECRET": "shh",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # not asked: the refusal comes first
    }

    result = bot_cli("socket", cwd=tmp_path, env=env)

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "incident-bot: configuration error: SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set"
    ), result.stderr
    assert "shh" not in result.stderr and "Traceback" not in result.stderr


# --- a stopped bot leaves its SQLite database in one file --------------------------------


def only_the_file(database_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`export INC-1` from a copy of `database_file` alone, as README's backup makes it."""
    backup = tmp_path / "backup"
    backup.mkdir()
    shutil.copy(database_file, backup / "copy.db")
    env = {"DATABASE_URL": f"sqlite:///{backup / 'copy.db'}"}
    return bot_cli("export", "INC-1", cwd=backup, env=env)


def test_a_stopped_serve_leaves_what_it_recorded_in_the_sqlite_file(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    """README: back up SQLite by copying its file while the bot is stopped. What the bot
    wrote must then be in that file, not only in the write-ahead log beside it."""
    env = {
        "SLACK_BOT_TOKEN": "xoxb-x",
        "SLACK_SIGNING_SECRET": "s",
        "SLACK_API_URL": fake_slack.api_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'incidents.db'}",
    }
    assert bot_cli("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL"))}
    slash = SlashCommand(secret="s", team_id=TEAM, channel_id="C0TEST0001", user_id=ALICE)
    with served({**clean, **env}, tmp_path) as server:
        for typed in ("start Checkout is down", "note rolled back the deploy"):
            body, headers = slash.signed(typed)
            request = urllib.request.Request(f"{server.base}/slack/events", body.encode(), headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        server.process.terminate()
        assert server.process.wait(timeout=30) == 0, server.log.read_text()

    exported = only_the_file(tmp_path / "incidents.db", tmp_path)

    assert exported.returncode == 0, exported.stderr
    assert "rolled back the deploy" in exported.stdout
