"""Settings: read once from the environment over `.env`; a bad value names its variable."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from pathlib import Path

import pytest

from bot.config import DEFAULT_DATABASE_URL, DEFAULT_SLACK_API_URL, ConfigError, Settings

REPO = Path(__file__).resolve().parent.parent

VARIABLES = [
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_CLIENT_ID",
    "SLACK_CLIENT_SECRET",
    "DATABASE_URL",
    "SLACK_API_URL",
    "INCIDENT_TIMEZONE",
    "TEMPLATES_DIR",
    "TIMELINE_EMOJI",
    "INCIDENT_SEVERITIES",
    "INCIDENT_ROLES",
    "INCIDENT_CHANNELS",
]


def load(environ: dict[str, str], env_file: Path | None = None, **kwargs: object) -> Settings:
    return Settings.load(environ=environ, env_file=env_file, **kwargs)  # type: ignore[arg-type]


# --- defaults ---------------------------------------------------------------------------


def test_defaults_with_nothing_set() -> None:
    settings = load({})
    assert settings == Settings(
        slack_bot_token=None,
        slack_signing_secret=None,
        slack_app_token=None,
        slack_client_id=None,
        slack_client_secret=None,
        database_url=DEFAULT_DATABASE_URL,
        slack_api_url=DEFAULT_SLACK_API_URL,
        incident_timezone="UTC",
        templates_dir=None,
    )


def test_empty_and_blank_values_count_as_unset() -> None:
    settings = load(dict.fromkeys(VARIABLES, "  "))
    assert settings == load({})


def test_every_value_read(tmp_path: Path) -> None:
    settings = load(
        {
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_SIGNING_SECRET": "s3cret",
            "SLACK_APP_TOKEN": "xapp-1",
            "SLACK_CLIENT_ID": "123.456",
            "SLACK_CLIENT_SECRET": "client-secret",
            "DATABASE_URL": "postgresql+psycopg://bot@db.example/incidents",
            "SLACK_API_URL": "http://127.0.0.1:8080/api",
            "INCIDENT_TIMEZONE": "Africa/Nairobi",
            "TEMPLATES_DIR": str(tmp_path),
        }
    )
    assert settings.slack_bot_token == "xoxb-1"
    assert settings.slack_signing_secret == "s3cret"
    assert settings.slack_app_token == "xapp-1"
    assert (settings.slack_client_id, settings.slack_client_secret) == ("123.456", "client-secret")
    assert settings.multi_workspace
    assert settings.database_url == "postgresql+psycopg://bot@db.example/incidents"
    assert settings.slack_api_url == "http://127.0.0.1:8080/api/"  # methods are appended
    assert settings.incident_timezone == "Africa/Nairobi"
    assert settings.templates_dir == tmp_path


def test_values_are_stripped() -> None:
    settings = load({"SLACK_BOT_TOKEN": " xoxb-1\n", "INCIDENT_TIMEZONE": " Asia/Kolkata "})
    assert settings.slack_bot_token == "xoxb-1"
    assert settings.incident_timezone == "Asia/Kolkata"


def test_templates_dir_expands_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load({"TEMPLATES_DIR": "~/mine"}).templates_dir == tmp_path / "mine"


def test_settings_are_frozen() -> None:
    settings = load({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database_url = "sqlite://"  # type: ignore[misc]


# --- required values --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"])
def test_a_missing_required_value_names_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} is not set"):
        load({}, require=[name])


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"])
def test_a_blank_required_value_is_missing(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} is not set"):
        load({name: "   "}, require=[name])


def test_the_first_missing_of_several_is_named() -> None:
    environ = {"SLACK_BOT_TOKEN": "xoxb-1"}
    with pytest.raises(ConfigError, match="^SLACK_SIGNING_SECRET is not set"):
        load(environ, require=["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"])


def test_required_values_present() -> None:
    environ = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
    settings = load(environ, require=["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"])
    assert (settings.slack_bot_token, settings.slack_signing_secret) == ("xoxb-1", "s")


def test_nothing_is_required_unless_asked() -> None:
    assert load({}).slack_signing_secret is None


@pytest.mark.parametrize(
    ("given", "missing"),
    [("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"), ("SLACK_CLIENT_SECRET", "SLACK_CLIENT_ID")],
)
def test_one_oauth_credential_without_the_other_names_the_missing_one(
    given: str, missing: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{missing} is not set, but {given} is"):
        load({given: "x"})


def test_without_oauth_credentials_the_bot_runs_on_one_token() -> None:
    assert not load({"SLACK_BOT_TOKEN": "xoxb-1"}).multi_workspace


# --- malformed values -------------------------------------------------------------------


def _pg8000_missing() -> bool:
    return importlib.util.find_spec("pg8000") is None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SLACK_BOT_TOKEN", "xoxp-user-token", "must start with 'xoxb-'"),
        ("SLACK_BOT_TOKEN", "xapp-1", "must start with 'xoxb-'"),
        ("SLACK_APP_TOKEN", "xoxb-1", "must start with 'xapp-'"),
        ("DATABASE_URL", "not a url", "is not a database URL"),
        ("DATABASE_URL", "incidents.db", "is not a database URL"),
        ("DATABASE_URL", "mysql://bot@db/incidents", "only sqlite and postgresql"),
        ("DATABASE_URL", "postgres://bot@db/incidents", "postgresql://, not postgres://"),
        ("DATABASE_URL", "postgresql+nosuchdriver://bot@db/incidents", "unknown driver"),
        ("DATABASE_URL", "sqlite+nosuchdriver:///incidents.db", "unknown driver"),
        ("DATABASE_URL", "postgresql+asyncpg://bot@db/incidents", "async driver"),
        ("DATABASE_URL", "postgresql+psycopg://bot@db:54x32/incidents", "not a number"),
        ("DATABASE_URL", "postgresql+psycopg://bot@db:/incidents", "port that is not a number"),
        ("DATABASE_URL", "postgresql+psycopg://bot@db:99999/incidents", "not a number"),
        ("SLACK_API_URL", "slack.com/api", "must be an http(s) URL"),
        ("SLACK_API_URL", "ftp://slack.com/api/", "must be an http(s) URL"),
        ("SLACK_API_URL", "https://", "must be an http(s) URL"),
        ("SLACK_API_URL", "http://127.0.0.1:notaport/api/", "port that is not a number"),
        ("SLACK_API_URL", "http://127.0.0.1:99999/api/", "port that is not a number"),
        ("SLACK_API_URL", "http://127.0.0.1:0/api/", "port that is not a number"),
        ("SLACK_API_URL", "https://slack.com/api?x=1", "query or fragment"),
        ("SLACK_API_URL", "https://slack.com/api#top", "query or fragment"),
        ("INCIDENT_TIMEZONE", "Mars/Olympus_Mons", "not a known IANA time zone"),
        ("INCIDENT_TIMEZONE", "EAT", "not a known IANA time zone"),
        ("INCIDENT_TIMEZONE", "+03:00", "not a known IANA time zone"),
        ("INCIDENT_TIMEZONE", "../../etc/passwd", "not a known IANA time zone"),
        ("INCIDENT_TIMEZONE", "America", "not a known IANA time zone"),  # a folder of zones
        ("INCIDENT_TIMEZONE", "Etc", "not a known IANA time zone"),
        ("TEMPLATES_DIR", "/nonexistent/templates", "does not name a folder"),
    ],
)
def test_a_malformed_value_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} ") as raised:
        load({name: value})
    assert says in str(raised.value)


def test_a_token_is_not_echoed_in_its_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load({"SLACK_BOT_TOKEN": "xoxp-very-secret"})
    assert "very-secret" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql//bot:hunter2@db/incidents",  # not a URL at all
        "mysql://bot:hunter2@db/incidents",
        "postgres://bot:hunter2@db/incidents",
        "postgresql+nosuchdriver://bot:hunter2@db/incidents",
        "postgresql+asyncpg://bot:hunter2@db/incidents",
        "postgresql+psycopg://bot:hunter2@db:54x32/incidents",
    ],
)
def test_a_database_password_is_not_echoed_in_its_error(url: str) -> None:
    with pytest.raises(ConfigError, match="^DATABASE_URL ") as raised:
        load({"DATABASE_URL": url})
    assert "hunter2" not in str(raised.value)


@pytest.mark.skipif(not _pg8000_missing(), reason="pg8000 is installed here")
def test_a_driver_that_is_not_installed_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="^DATABASE_URL needs the 'pg8000' driver"):
        load({"DATABASE_URL": "postgresql+pg8000://bot@db/incidents"})


def test_templates_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "postmortem.md.j2"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="^TEMPLATES_DIR does not name a folder"):
        load({"TEMPLATES_DIR": str(a_file)})


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///incidents.db",
        "sqlite://",
        "sqlite+pysqlite:///incidents.db",
        "postgresql://bot@db/incidents",
        "postgresql+psycopg://bot:pw@db:5432/incidents",
    ],
)
def test_supported_database_urls_are_accepted(url: str) -> None:
    assert load({"DATABASE_URL": url}).database_url == url


# --- the .env file ----------------------------------------------------------------------


def write_env(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = write_env(
        tmp_path / ".env",
        "# a comment\n"
        "SLACK_BOT_TOKEN=xoxb-from-file\n"
        'INCIDENT_TIMEZONE="Africa/Nairobi"  # quoted, with a comment\n'
        "export DATABASE_URL=sqlite:///from-file.db\n",
    )
    settings = load({}, env_file)
    assert settings.slack_bot_token == "xoxb-from-file"
    assert settings.incident_timezone == "Africa/Nairobi"
    assert settings.database_url == "sqlite:///from-file.db"


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env_file = write_env(
        tmp_path / ".env", "INCIDENT_TIMEZONE=Africa/Nairobi\nSLACK_BOT_TOKEN=xoxb-file\n"
    )
    settings = load({"INCIDENT_TIMEZONE": "Asia/Kolkata"}, env_file)
    assert settings.incident_timezone == "Asia/Kolkata"
    assert settings.slack_bot_token == "xoxb-file"  # not overridden: still from the file


def test_required_value_may_come_from_env_file(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", "SLACK_SIGNING_SECRET=from-file\n")
    settings = load({}, env_file, require=["SLACK_SIGNING_SECRET"])
    assert settings.slack_signing_secret == "from-file"


def test_malformed_value_in_env_file_names_the_variable(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", "INCIDENT_TIMEZONE=Nairobi\n")
    with pytest.raises(ConfigError, match="^INCIDENT_TIMEZONE "):
        load({}, env_file)


def test_a_good_environment_value_hides_a_bad_one_in_the_file(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", "INCIDENT_TIMEZONE=Nairobi\n")
    assert load({"INCIDENT_TIMEZONE": "UTC"}, env_file).incident_timezone == "UTC"


def test_a_missing_env_file_is_fine(tmp_path: Path) -> None:
    assert load({}, tmp_path / "absent.env") == load({})


def test_a_valueless_line_in_env_file_is_unset(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env", "TEMPLATES_DIR\nSLACK_APP_TOKEN=\n")
    settings = load({}, env_file)
    assert settings.templates_dir is None
    assert settings.slack_app_token is None


def test_the_shipped_env_example_loads_as_the_defaults() -> None:
    assert load({}, REPO / ".env.example") == load({})


def test_variables_listed_here_are_those_settings_reads() -> None:
    source = (REPO / "bot" / "config.py").read_text(encoding="utf-8")
    assert set(re.findall(r'get\("([A-Z_]+)"\)', source)) == set(VARIABLES)


@pytest.mark.parametrize("name", VARIABLES)
def test_env_example_documents_every_variable_with_a_comment(name: str) -> None:
    lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
    found = [number for number, line in enumerate(lines) if line.startswith(f"{name}=")]
    assert found, f"{name} is not in .env.example"
    assert lines[found[0] - 1].startswith("#"), f"{name} has no comment above it"


def test_reads_the_process_environment_and_dot_env_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    write_env(tmp_path / ".env", "INCIDENT_TIMEZONE=Africa/Nairobi\nSLACK_BOT_TOKEN=xoxb-file\n")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-process")
    settings = Settings.load()
    assert settings.incident_timezone == "Africa/Nairobi"
    assert settings.slack_bot_token == "xoxb-process"


def test_reading_env_file_does_not_change_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INCIDENT_TIMEZONE", raising=False)
    env_file = write_env(tmp_path / ".env", "INCIDENT_TIMEZONE=Africa/Nairobi\n")
    Settings.load(env_file=env_file)
    assert "INCIDENT_TIMEZONE" not in os.environ


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIMELINE_EMOJI", "push pin"),
        ("TIMELINE_EMOJI", ":<!channel>:"),
        ("INCIDENT_SEVERITIES", ",,"),
        ("INCIDENT_SEVERITIES", "SEV1,sev1"),
        ("INCIDENT_ROLES", "commander,the boss of everything here today"),
        ("INCIDENT_CHANNELS", "maybe"),
    ],
)
def test_malformed_issue3_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load({name: value})


def test_issue3_settings_are_read() -> None:
    settings = load(
        {
            "TIMELINE_EMOJI": ":round_pushpin:",
            "INCIDENT_SEVERITIES": "P1, P2 ,P3",
            "INCIDENT_ROLES": "Commander,Liaison",
            "INCIDENT_CHANNELS": "yes",
        }
    )
    assert settings.timeline_emoji == "round_pushpin"
    assert settings.severities == ("P1", "P2", "P3")
    assert settings.roles == ("commander", "liaison")
    assert settings.incident_channels is True
    defaults = load({})
    assert (defaults.timeline_emoji, defaults.incident_channels) == ("pushpin", False)
    assert defaults.severities == ("SEV1", "SEV2", "SEV3", "SEV4")


def test_secrets_are_not_in_the_settings_repr() -> None:
    # A traceback, a debugger or a log line that shows the settings (or the services that
    # hold them) must not show what lets someone act as the app or read its database.
    settings = load(
        {
            "SLACK_BOT_TOKEN": "xoxb-secret-bot-token",
            "SLACK_SIGNING_SECRET": "secret-signing",
            "SLACK_APP_TOKEN": "xapp-secret-app-token",
            "SLACK_CLIENT_ID": "123.456",
            "SLACK_CLIENT_SECRET": "secret-client",
            "DATABASE_URL": "postgresql+psycopg://bot:db-password@db.internal/incidents",
        }
    )
    shown = repr(settings)
    for secret in ("xoxb-secret", "secret-signing", "xapp-secret", "secret-client", "db-password"):
        assert secret not in shown
    assert "incident_timezone='UTC'" in shown  # the rest is still there to read
