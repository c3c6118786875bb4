"""Settings: the only reader of the environment and `.env`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

DEFAULT_DATABASE_URL = "sqlite:///incidents.db"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")
DEFAULT_ROLES = ("commander", "communications", "scribe")


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its environment, validated once at start-up."""

    # Not in the repr (a traceback, a debugger, a log line): they let anyone act as the app,
    # and the URL may hold the database's password.
    slack_bot_token: str | None = field(repr=False)
    slack_signing_secret: str | None = field(repr=False)
    slack_app_token: str | None = field(repr=False)
    slack_client_id: str | None
    slack_client_secret: str | None = field(repr=False)
    database_url: str = field(repr=False)
    slack_api_url: str
    incident_timezone: str
    templates_dir: Path | None
    timeline_emoji: str = "pushpin"
    severities: tuple[str, ...] = DEFAULT_SEVERITIES
    roles: tuple[str, ...] = DEFAULT_ROLES
    incident_channels: bool = False
    # Seconds to wait for one Slack Web API call after the acknowledgement (posting, upload).
    slack_timeout: int = 10

    @classmethod
    def load(
        cls,
        *,
        require: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
    ) -> Settings:
        """Read settings from `environ` (default: the process environment) over `env_file`.

        `require` names variables this command cannot run without (for example `serve`
        needs `SLACK_SIGNING_SECRET`); a missing one raises `ConfigError` naming it.
        """
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)

        def get(name: str) -> str | None:
            value = values.get(name, "").strip()
            return value or None

        for name in require:
            if get(name) is None:
                raise ConfigError(f"{name} is not set; see .env.example for what it should hold.")
        oauth = [name for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET") if get(name)]
        if len(oauth) == 1:
            missing = ({"SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"} - set(oauth)).pop()
            raise ConfigError(
                f"{missing} is not set, but {oauth[0]} is: set both for multi-workspace "
                "installs, or neither to run on SLACK_BOT_TOKEN."
            )

        settings = cls(
            slack_bot_token=_token(get("SLACK_BOT_TOKEN"), "SLACK_BOT_TOKEN", "xoxb-"),
            slack_signing_secret=get("SLACK_SIGNING_SECRET"),
            slack_app_token=_token(get("SLACK_APP_TOKEN"), "SLACK_APP_TOKEN", "xapp-"),
            slack_client_id=get("SLACK_CLIENT_ID"),
            slack_client_secret=get("SLACK_CLIENT_SECRET"),
            database_url=_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            slack_api_url=_api_url(get("SLACK_API_URL") or DEFAULT_SLACK_API_URL),
            incident_timezone=_timezone(get("INCIDENT_TIMEZONE") or "UTC"),
            templates_dir=_templates_dir(get("TEMPLATES_DIR")),
            timeline_emoji=_emoji(get("TIMELINE_EMOJI") or "pushpin"),
            severities=_names(
                get("INCIDENT_SEVERITIES"), "INCIDENT_SEVERITIES", DEFAULT_SEVERITIES
            ),
            roles=tuple(
                r.lower() for r in _names(get("INCIDENT_ROLES"), "INCIDENT_ROLES", DEFAULT_ROLES)
            ),
            incident_channels=_flag(get("INCIDENT_CHANNELS"), "INCIDENT_CHANNELS"),
        )
        return settings

    @property
    def multi_workspace(self) -> bool:
        """Installed per workspace through OAuth, rather than on one SLACK_BOT_TOKEN."""
        return bool(self.slack_client_id and self.slack_client_secret)


def _token(value: str | None, name: str, prefix: str) -> str | None:
    if value is not None and not value.startswith(prefix):
        raise ConfigError(f"{name} must start with {prefix!r}; check that the right token is set.")
    return value


def _database_url(value: str) -> str:
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(
            f"DATABASE_URL is not a database URL: {_without_password(value)!r} "
            "(expected e.g. sqlite:///incidents.db or postgresql+psycopg://user@host/db)."
        ) from None
    except ValueError:  # make_url reads the port with int()
        raise ConfigError(_bad_port(value)) from None
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(_bad_port(value))
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        hint = " (write postgresql://, not postgres://)" if backend == "postgres" else ""
        raise ConfigError(
            f"DATABASE_URL names {backend!r}; only sqlite and postgresql are supported{hint}."
        )
    # Find a wrong or missing driver now, by the variable's name, not at the first query.
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"DATABASE_URL names an unknown driver {url.drivername!r}; "
            "use sqlite:/// or postgresql+psycopg://."
        ) from None
    if dialect.is_async:
        raise ConfigError(
            f"DATABASE_URL names the async driver {url.get_driver_name()!r}; "
            "use postgresql+psycopg:// instead."
        )
    try:
        dialect.import_dbapi()
    except ImportError:
        raise ConfigError(
            f"DATABASE_URL needs the {url.get_driver_name()!r} driver, which is not installed; "
            "use postgresql+psycopg:// with pip install 'incident-bot[postgres]'."
        ) from None
    return value


def _bad_port(value: str) -> str:
    return (
        "DATABASE_URL names a port that is not a number from 1 to 65535: "
        f"{_without_password(value)!r}."
    )


def _without_password(value: str) -> str:
    # The message is printed and logged; a URL SQLAlchemy cannot parse may still hold one.
    return re.sub(r"^((?:[^@/]*//)?[^:@/]*):.*@", r"\1:***@", value)


def _api_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"SLACK_API_URL must be an http(s) URL, got {value!r}.")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = 0
    if port == 0:
        raise ConfigError(
            f"SLACK_API_URL names a port that is not a number from 1 to 65535, got {value!r}."
        )
    if parts.query or parts.fragment:
        # Method names are appended to it (".../api/chat.postMessage").
        raise ConfigError(f"SLACK_API_URL must not have a query or fragment, got {value!r}.")
    return value if value.endswith("/") else value + "/"


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "America"
        raise ConfigError(
            f"INCIDENT_TIMEZONE is not a known IANA time zone: {value!r} (e.g. Africa/Nairobi)."
        ) from None
    return value


def _templates_dir(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"TEMPLATES_DIR does not name a folder: {value!r}.")
    return path


def _emoji(value: str) -> str:
    name = value.strip().strip(":")
    if not re.fullmatch(r"[a-z0-9_+'-]+", name):
        raise ConfigError(f"TIMELINE_EMOJI must be an emoji name such as pushpin, got {value!r}.")
    return name


def _names(value: str | None, variable: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names or any(not re.fullmatch(r"[\w-]{1,32}", n) for n in names):
        raise ConfigError(
            f"{variable} must be a comma-separated list of short words (e.g. "
            f"{','.join(default)}), got {value!r}."
        )
    if len({n.lower() for n in names}) != len(names):
        raise ConfigError(f"{variable} names the same value twice: {value!r}.")
    return names


def _flag(value: str | None, variable: str) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{variable} must be true or false, got {value!r}.")
