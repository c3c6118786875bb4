"""What listeners need besides the request: storage, templates, clocks, follow-up work."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.client import HTTPException
from ssl import SSLContext
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request

from jinja2 import Environment
from slack_sdk import WebClient
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryHandler, RetryState
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.web.file_upload_v2_result import FileUploadV2Result
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot import db, incidents, postmortem
from bot.config import Settings
from bot.notes import NoteWriter
from bot.slack.channel_names import ChannelDirectory
from bot.slack.middleware import AFTER_RETRY_S, patience, time_left
from bot.slack.people import UserDirectory

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


# At shutdown (`serve`'s workers, `socket`), how long follow-up work may still take.
FOLLOWUP_GRACE_S = 5.0
# Threads that run follow-up work (posting, uploading, pruning), each with a connection.
FOLLOWUP_THREADS = 4


class FollowUps:
    """Work that runs after the acknowledgement (posting, uploading), on a few threads."""

    def __init__(self, max_workers: int = FOLLOWUP_THREADS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="followup")
        self._futures: dict[Future[None], str] = {}  # what each still running or queued does
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], object], *, what: str = "follow-up work") -> None:
        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("follow-up work failed")

        # In a context of its own: the work runs after the answer, with no answer's deadline.
        future = self._executor.submit(contextvars.Context().run, run)
        with self._lock:
            self._futures[future] = what
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.pop(future, None)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the work submitted so far; True when all of it finished."""
        with self._lock:
            pending = set(self._futures)
        done, not_done = wait(pending, timeout=timeout)
        return not not_done

    def finish(self, timeout: float) -> None:
        """At shutdown: wait up to `timeout` seconds for the work submitted, then name in the
        log what is left (the process may be stopped before it ends) and start no more."""
        if self.wait(timeout):
            return
        with self._lock:
            left = sorted(self._futures.values())
        for what in left:
            log.error("stopping before this was done: %s", what)
        self._executor.shutdown(wait=False, cancel_futures=True)


class RequestPruning:
    """Forgets the requests too old to come again (`incidents.forget_handled_requests`), a
    batch at a time, after a command's answer: the command itself asks nothing more of the
    database. One batch at a time per process, every `every` at most (the first `every`
    after the process's first command); a full batch means more are waiting, and the next
    command starts the next one."""

    def __init__(self, *, batch: int = 1000, every: timedelta = timedelta(minutes=10)) -> None:
        self.batch = batch
        self.every = every
        self._lock = threading.Lock()
        self._running = False
        self._next: datetime | None = None  # None: no command seen yet

    def start(self, services: Services) -> None:
        """Submit a batch to the follow-ups if one is due and none is running."""
        now = services.clock()
        with self._lock:
            if self._next is None:
                self._next = now + self.every
            if self._running or now < self._next:
                return
            self._running = True
        services.followups.submit(
            lambda: self._run(services, now), what="forgetting requests handled long ago"
        )

    def _run(self, services: Services, now: datetime) -> None:
        forgotten = 0
        try:
            with services.sessions() as session:
                forgotten = incidents.forget_handled_requests(session, now=now, limit=self.batch)
                session.commit()
        finally:
            with self._lock:
                self._running = False
                self._next = now if forgotten >= self.batch else now + self.every


class Periodic:
    """Runs `work` on the follow-ups once as soon as it is started, then every `every`
    seconds, one run at a time: a run still going when the next is due is not doubled."""

    def __init__(
        self, followups: FollowUps, work: Callable[[], object], *, every: float, what: str
    ) -> None:
        self.every = every
        self._followups = followups
        self._work = work
        self._what = what
        self._stop = threading.Event()
        self._running = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="periodic", daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Start no more runs (one under way is left to FollowUps.finish)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._running.acquire(blocking=False):
                try:
                    self._followups.submit(self._run, what=self._what)
                except RuntimeError:  # the follow-ups were shut down
                    self._running.release()
                    return
            self._stop.wait(self.every)

    def _run(self) -> None:
        try:
            self._work()
        finally:
            self._running.release()


@dataclass
class Services:
    """What listeners need besides the request: storage, templates, clocks and helpers."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    templates: Environment
    people: UserDirectory
    channels: ChannelDirectory
    followups: FollowUps = field(default_factory=FollowUps)
    clock: Callable[[], datetime] = utc_now
    notes: NoteWriter = field(init=False)
    pruning: RequestPruning = field(default_factory=RequestPruning)
    # Jobs started with the worker (the sweeper of pending postmortems), stopped with it.
    periodic: list[Periodic] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.notes = NoteWriter(self.engine)

    def stop(self, grace: float) -> None:
        """At shutdown: start no more periodic jobs, give the follow-ups `grace` seconds
        (FollowUps.finish), then close the database's connections. On SQLite the last one
        closed moves what the write-ahead log holds into the database file; left open to the
        process's end, the log kept it beside the file, and a backup that copies the file
        alone (README) had none of it."""
        for job in self.periodic:
            job.stop()
        self.followups.finish(grace)
        self.engine.dispose()


def build_services(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Callable[[], datetime] = utc_now,
    create_schema: bool = True,
    request_threads: int = 10,
) -> Services:
    """The services of one process that answers on `request_threads` threads at once."""
    # Every request thread and every follow-up may hold a connection at the same moment.
    connections = request_threads + FOLLOWUP_THREADS
    engine = engine or db.make_engine(settings.database_url, connections=connections)
    if create_schema:
        db.create_schema(engine)
    return Services(
        settings=settings,
        engine=engine,
        sessions=db.make_session_factory(engine),
        templates=postmortem.build_environment(settings.templates_dir),
        people=UserDirectory(fallback=settings.incident_timezone, api_url=settings.slack_api_url),
        channels=ChannelDirectory(api_url=settings.slack_api_url),
        clock=clock,
    )


def web_client(settings: Settings, token: str | None) -> WebClient:
    """A Web API client that retries what Slack asks to be retried, a bounded number of times."""
    return SlackClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=settings.slack_timeout,
        retry_handlers=retry_handlers(),
    )


class SlackClient(WebClient):
    """A Web API client whose calls, made while a request is being answered, give up when
    the answer is due: Slack wants it within 3 seconds, and a Slack that is slow to answer
    (not a 429) would otherwise hold the request for the whole `timeout`.

    After the answer (follow-ups) each attempt waits the whole `timeout`.
    """

    def __init__(self, *, timeout: int, **kwargs: Any) -> None:
        self.longest = timeout  # seconds an attempt may take when no answer is due
        super().__init__(timeout=timeout, **kwargs)

    @property  # type: ignore[override]  # urllib takes any number of seconds, not only whole ones
    def timeout(self) -> float:
        return patience(self.longest)

    @timeout.setter
    def timeout(self, value: int) -> None:
        self.longest = value

    def copy(self, *, token: str | None, team_id: str | None) -> SlackClient:
        """A client like this one for another token (Bolt makes one for each request)."""
        return SlackClient(
            token=token,
            base_url=self.base_url,
            timeout=self.longest,
            ssl=self.ssl,
            proxy=self.proxy,
            headers=self.headers,
            team_id=team_id,
            logger=self.logger,
            retry_handlers=list(self.retry_handlers),
        )

    def _upload_file(
        self,
        *,
        url: str,
        data: bytes,
        logger: logging.Logger,
        timeout: int,
        proxy: str | None,
        ssl: SSLContext | None,
    ) -> FileUploadV2Result:
        """files_upload_v2's second step, the file to the URL Slack handed out, which the SDK
        sends once: tried again as the other steps are (a connection error, a 429 after its
        Retry-After, a 500 or 503). Nothing is shared until the third step, so sending the
        file again duplicates nothing."""
        state = RetryState()
        request = HttpRequest(method="POST", url=url, headers={}, data=data)
        while True:
            state.next_attempt_requested = False
            response: HttpResponse | None = None
            try:
                return super()._upload_file(
                    url=url, data=data, logger=logger, timeout=timeout, proxy=proxy, ssl=ssl
                )
            except HTTPError as error:  # urllib raises on any status but 2xx
                failure: Exception = error
                headers: dict[str, str | list[str]] = dict(error.headers.items())
                response = HttpResponse(status_code=error.code, headers=headers)
            except (OSError, HTTPException) as error:
                failure = error
            for handler in self.retry_handlers:
                if handler.can_retry(
                    state=state, request=request, response=response, error=failure
                ):
                    handler.prepare_for_next_attempt(
                        state=state, request=request, response=response, error=failure
                    )
                    break
            if not state.next_attempt_requested:
                raise failure

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        if self.timeout <= 0:
            # Raised as a timeout is: the retry handlers do not try it again.
            raise TimeoutError(f"no time left to call {url} before the answer is due")
        return super()._perform_urllib_http_request_internal(url, req)


def retry_handlers() -> list[RetryHandler]:
    """Connection errors, 429 (after its Retry-After) and 5xx: each tried again twice at most."""
    return [
        ConnectionRetryHandler(max_retry_count=2),
        RateLimitRetryHandler(max_retry_count=2),
        ServerRetryHandler(max_retry_count=2),
    ]


class WithinAnswer(RetryHandler):
    """An SDK retry handler (next in the subclass's bases) that, while a request is being
    answered, retries only when its wait (`_wait`) leaves `AFTER_RETRY_S` for the answer, and
    then waits exactly that: the SDK adds up to a second at random to each wait to spread
    many clients' retries, a second the answer does not have.

    After the answer (follow-ups) it retries and waits as the SDK's handler does.
    """

    def _wait(self, state: RetryState, response: HttpResponse | None) -> float:
        raise NotImplementedError

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        left = time_left()
        return left is None or self._wait(state, response) + AFTER_RETRY_S <= left

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if time_left() is None:
            super().prepare_for_next_attempt(
                state=state, request=request, response=response, error=error
            )
            return
        state.next_attempt_requested = True
        time.sleep(self._wait(state, response))
        state.increment_current_attempt()


class BackoffWithinAnswer(WithinAnswer):
    """Tried again after a growing wait (0.5 s, 1 s...), within the answer's time."""

    def _wait(self, state: RetryState, _response: HttpResponse | None) -> float:
        return _backoff(state)


def _backoff(state: RetryState) -> float:
    """The SDK's wait before the next attempt, without its random part."""
    return BACKOFF_S * 2.0 ** int(state.current_attempt)


BACKOFF_S = 0.5  # the SDK's default backoff factor


class ConnectionRetryHandler(BackoffWithinAnswer, ConnectionErrorRetryHandler):
    """A connection error is tried again, within the answer's time (`BackoffWithinAnswer`)."""


class ServerRetryHandler(BackoffWithinAnswer, ServerErrorRetryHandler):
    """A 500 or 503 is tried again, within the answer's time (`BackoffWithinAnswer`)."""


class RateLimitRetryHandler(WithinAnswer, RateLimitErrorRetryHandler):
    """A 429 is tried again after its Retry-After, unless that wait would take the request
    being handled past its answer's deadline: Slack would show the person an error (or send
    the event again) while the bot slept. The call then fails as Slack answered it.

    After the answer (follow-ups) it waits as long as Slack asks, as the SDK's handler does.
    """

    def _wait(self, _state: RetryState, response: HttpResponse | None) -> float:
        return _retry_after(response)


def _retry_after(response: HttpResponse | None) -> float:
    """The seconds a 429 asks to wait (Slack sends whole seconds); 1 when it does not say."""
    headers = response.headers if response is not None else {}
    for name, values in headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return max(0.0, float(values[0]))
            except ValueError:
                break
    return 1.0
