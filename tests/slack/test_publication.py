"""A closed incident's postmortem is pending until it has reached Slack (bot/slack/publish.py)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from bot import incidents
from bot.demo import Fault
from bot.models import Incident, Postmortem, Publication
from bot.services import Services, build_services
from bot.slack import publish
from tests.conftest import ALICE, CHANNEL, TOKEN, Bot, Clock, at_once
from tests.slack.test_channels import delete

OTHER_CHANNEL = "C0OTHER001"


def close_without_publishing(bot: Bot, *, channel: str = CHANNEL) -> int:
    """Close the channel's open incident through the use case and commit, as a worker does
    before it acknowledges: no follow-up runs (as if the worker died right after)."""
    with bot.services.sessions() as session:
        incident = session.scalars(
            select(Incident).where(Incident.channel_id == CHANNEL, Incident.status == "open")
        ).one()
        incidents.close_incident(
            session,
            incident=incident,
            closed_at=bot.clock(),
            user_id=ALICE,
            text="fixed",
            now=bot.clock(),
            publish_to=incidents.PublishTo(channel_id=channel),
        )
        session.commit()
        return incident.id


def publication(bot: Bot, incident_id: int) -> Publication:
    with bot.services.sessions() as session:
        found = session.get(Publication, incident_id)
        assert found is not None
        session.expunge(found)
        return found


def test_a_close_records_its_publication_pending_and_a_reopen_withdraws_it(bot: Bot) -> None:
    bot.command("start Checkout is failing")
    incident_id = close_without_publishing(bot, channel=OTHER_CHANNEL)

    pending = publication(bot, incident_id)
    assert pending.pending and pending.channel_id == OTHER_CHANNEL
    assert pending.claim is not None  # the closing worker's follow-up holds it
    assert pending.claimed_until == bot.clock() + incidents.PUBLICATION_LEASE
    assert pending.attempts == 1 and not pending.summary_posted

    assert "reopened" in bot.command("reopen not fixed after all").text.lower()
    withdrawn = publication(bot, incident_id)
    assert not withdrawn.pending and withdrawn.claim is None

    bot.clock.advance(minutes=10)
    close_without_publishing(bot)
    again = publication(bot, incident_id)
    assert again.pending and again.channel_id == CHANNEL
    assert again.claim not in (None, pending.claim)
    assert again.claimed_until == bot.clock() + incidents.PUBLICATION_LEASE


def incident_id_of(bot: Bot, reference_number: int = 1) -> int:
    with bot.services.sessions() as session:
        return session.scalars(select(Incident.id).where(Incident.number == reference_number)).one()


def test_a_published_postmortem_is_no_longer_pending(bot: Bot) -> None:
    bot.command("start Checkout is failing")
    bot.command("close fixed")
    bot.wait()

    assert "# Postmortem: Checkout is failing" in bot.fake.uploaded_text()
    done = publication(bot, incident_id_of(bot))
    assert not done.pending and done.claim is None and done.summary_posted


# What a later attempt could get past: Slack's 5xx, its transient error codes, a rate limit
# that outlasts the retries, a connection that drops.
RETRYABLE = [
    Fault(status=500, error="internal_error", times=3),
    Fault(error="fatal_error"),
    Fault(status=429, retry_after=0, times=3),
    Fault(cut=True, times=3),
]


@pytest.mark.parametrize("fault", RETRYABLE, ids=["5xx", "fatal_error", "rate_limited", "cut"])
def test_an_upload_slack_could_take_later_leaves_the_postmortem_pending(
    bot: Bot, fault: Fault
) -> None:
    bot.fake.fail("files.getUploadURLExternal", fault)
    bot.command("start Checkout is failing")
    bot.command("close fixed")
    bot.wait()

    assert not bot.fake.uploads
    responses = bot.fake.wait_for_responses(2)
    assert any("I will try again" in r["text"] for r in responses)
    pending = publication(bot, incident_id_of(bot))
    assert pending.pending and pending.claim is None and pending.attempts == 1
    assert pending.summary_posted  # the next attempt uploads the file alone
    assert pending.claimed_until == bot.clock() + incidents.PUBLICATION_RETRY_FIRST


def test_a_refusal_for_good_said_in_the_channel_ends_the_publication(bot: Bot) -> None:
    # A private channel the bot is not in: the summary and the reason go through the
    # response URL, and nothing a later attempt does would differ until someone invites it.
    bot.fake.members_only.add(CHANNEL)
    bot.fake.private.add(CHANNEL)
    bot.command("start Checkout is failing")
    bot.command("close fixed")
    bot.wait()

    responses = bot.fake.wait_for_responses(2)
    assert any("invite" in r["text"].lower() for r in responses)
    assert not publication(bot, incident_id_of(bot)).pending


# --- the sweeper: what no follow-up published ---------------------------------------------------


def fresh_services(bot: Bot, clock: Clock) -> Services:
    """Another worker's services on the same database (a restart, or a second process)."""
    return build_services(
        bot.services.settings, engine=bot.services.engine, clock=clock, create_schema=False
    )


def completed_uploads(bot: Bot) -> list[str]:
    return [c.params["channel_id"] for c in bot.fake.calls_to("files.completeUploadExternal")]


def test_a_postmortem_slack_would_not_take_is_published_by_the_sweeper_once_it_does(
    bot: Bot,
) -> None:
    bot.fake.fail("files.getUploadURLExternal", Fault(status=500, error="internal_error", times=3))
    bot.command("start Checkout is failing")
    bot.command("close fixed")
    bot.wait()
    assert not bot.fake.uploads

    # Not before its wait is over: Slack has just said it is failing.
    assert publish.publish_pending(bot.services) == 0
    bot.clock.advance(seconds=incidents.PUBLICATION_RETRY_FIRST.total_seconds())
    assert publish.publish_pending(bot.services) == 1

    assert "# Postmortem: Checkout is failing" in bot.fake.uploaded_text()
    assert completed_uploads(bot) == [CHANNEL]
    assert len(bot.fake.calls_to("chat.postMessage")) == 1  # the summary was posted once
    done = publication(bot, incident_id_of(bot))
    assert not done.pending and done.attempts == 2
    assert publish.publish_pending(bot.services) == 0


def test_a_summary_slack_failed_to_take_is_posted_with_the_next_attempt(bot: Bot) -> None:
    bot.fake.fail("chat.postMessage", Fault(status=503, times=3))
    bot.fake.fail("files.getUploadURLExternal", Fault(status=503, times=3))
    bot.command("start Checkout is failing")
    bot.command("close fixed")
    bot.wait()
    assert not publication(bot, incident_id_of(bot)).summary_posted

    bot.clock.advance(minutes=1)
    publish.publish_pending(bot.services)

    posted = bot.fake.calls_to("chat.postMessage")
    assert len(posted) == 4 and "INC-1" in posted[-1].params["text"]
    assert completed_uploads(bot) == [CHANNEL]


def test_a_close_whose_follow_up_never_ran_is_published_by_the_next_worker_to_start(
    bot: Bot,
) -> None:
    bot.command("start Checkout is failing")
    incident_id = close_without_publishing(bot, channel=OTHER_CHANNEL)  # the worker dies here

    # Within the dead worker's claim, no one takes it: it might be a live, slow follow-up.
    assert publish.publish_pending(fresh_services(bot, bot.clock)) == 0
    assert not bot.fake.calls_to("files.getUploadURLExternal")

    later = Clock(bot.clock() + incidents.PUBLICATION_LEASE)
    restarted = fresh_services(bot, later)
    publish.start_sweeper(restarted, every=3600)  # its first sweep runs at once
    try:
        assert bot.fake.wait_for("files.completeUploadExternal", 1)
        assert restarted.followups.wait(timeout=30)
    finally:
        restarted.stop(5)

    # Where the close was typed, with the workspace's token.
    assert completed_uploads(bot) == [OTHER_CHANNEL]
    [summary] = bot.fake.calls_to("chat.postMessage")
    assert summary.params["channel"] == OTHER_CHANNEL and summary.token == TOKEN
    assert "# Postmortem: Checkout is failing" in bot.fake.uploaded_text()
    assert not publication(bot, incident_id).pending


def test_two_sweepers_at_once_publish_a_pending_postmortem_once(bot: Bot) -> None:
    bot.command("start Checkout is failing")
    close_without_publishing(bot)
    later = Clock(bot.clock() + incidents.PUBLICATION_LEASE)
    workers = [fresh_services(bot, later), fresh_services(bot, later)]

    tried = at_once(2, lambda n: publish.publish_pending(workers[n]))

    assert sorted(tried) == [0, 1]
    assert completed_uploads(bot) == [CHANNEL]
    assert len(bot.fake.calls_to("chat.postMessage")) == 1


def test_a_postmortem_slack_never_takes_is_given_up_after_its_attempts(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.fake.fail("files.getUploadURLExternal", Fault(error="internal_error", times=1000))
    bot.command("start Checkout is failing")
    bot.command("close fixed")
    bot.wait()

    sweeps = 0
    while publication(bot, incident_id_of(bot)).pending:
        bot.clock.advance(seconds=incidents.PUBLICATION_RETRY_LONGEST.total_seconds())
        publish.publish_pending(bot.services)
        sweeps += 1
        assert sweeps < incidents.PUBLICATION_ATTEMPTS

    given_up = publication(bot, incident_id_of(bot))
    assert given_up.attempts == incidents.PUBLICATION_ATTEMPTS
    tries = bot.fake.calls_to("files.getUploadURLExternal")
    assert len(tries) == incidents.PUBLICATION_ATTEMPTS
    assert any(
        "gave up publishing the postmortem of INC-1" in r.getMessage()
        and "export INC-1" in r.getMessage()
        for r in caplog.records
        if r.levelname == "ERROR"
    )
    # Told "I will try again" at the close, the channel is told it will not be.
    said = [c.params["text"] for c in bot.fake.calls_to("chat.postMessage")]
    assert len(said) == 2 and "INC-1" in said[0], said  # the summary, then this
    assert "gave up posting the postmortem of INC-1 after 8 attempts" in said[1]
    assert "`incident-bot export INC-1` prints it" in said[1]
    bot.clock.advance(hours=24)
    assert publish.publish_pending(bot.services) == 0
    assert len(bot.fake.calls_to("chat.postMessage")) == 2


def test_a_postmortem_whose_last_attempt_died_is_given_up_in_the_channel(bot: Bot) -> None:
    bot.command("start Checkout is failing")
    incident_id = close_without_publishing(bot, channel=OTHER_CHANNEL)
    with bot.services.sessions() as session:  # as after 8 attempts, the last one's worker dead
        session.get_one(Publication, incident_id).attempts = incidents.PUBLICATION_ATTEMPTS
        session.commit()

    later = Clock(bot.clock() + incidents.PUBLICATION_LEASE)
    assert publish.publish_pending(fresh_services(bot, later)) == 0

    assert completed_uploads(bot) == []
    [told] = bot.fake.calls_to("chat.postMessage")
    assert told.params["channel"] == OTHER_CHANNEL and told.token == TOKEN
    assert "gave up posting the postmortem of INC-1" in told.params["text"]
    assert not publication(bot, incident_id).pending


def test_a_deleted_private_channels_postmortem_left_pending_is_posted_nowhere(bot: Bot) -> None:
    # Closed by name from another channel, as the closing worker dies: the sweeper keeps the
    # close's promise that a deleted private channel's timeline is shown to no one elsewhere.
    bot.command("start Payroll export leaks")
    bot.command("note 9:10 AM - secret detail")
    assert delete(bot, CHANNEL, private=True).status == 200
    incident_id = close_without_publishing(bot, channel=OTHER_CHANNEL)

    later = Clock(bot.clock() + incidents.PUBLICATION_LEASE)
    assert publish.publish_pending(fresh_services(bot, later)) == 1

    assert bot.fake.calls_to("chat.postMessage") == []
    assert completed_uploads(bot) == []
    assert not publication(bot, incident_id).pending


def stored_postmortems(bot: Bot) -> list[str]:
    with bot.services.sessions() as session:
        return list(session.scalars(select(Postmortem.markdown).order_by(Postmortem.id)))


def test_a_retried_postmortem_is_kept_once_per_close_as_last_sent(bot: Bot) -> None:
    bot.fake.fail("files.getUploadURLExternal", Fault(error="internal_error", times=3))
    bot.command("start Checkout is failing")
    bot.command("close fixed")
    bot.wait()
    bot.clock.advance(minutes=1)
    assert publish.publish_pending(bot.services) == 1  # 3 attempts, 1 upload
    bot.clock.advance(minutes=2)
    assert publish.publish_pending(bot.services) == 1
    bot.clock.advance(minutes=4)
    assert publish.publish_pending(bot.services) == 1

    assert not publication(bot, incident_id_of(bot)).pending
    assert stored_postmortems(bot) == [bot.fake.uploaded_text()]

    # A reopen and a second close keep the first close's copy and add the second's.
    bot.command("reopen not fixed after all")
    bot.command("close fixed for real")
    bot.wait()
    first, second = stored_postmortems(bot)
    assert "fixed for real" not in first and "fixed for real" in second


def test_a_reopen_while_the_postmortem_is_being_kept_waits_for_it_rather_than_deadlock(
    bot: Bot,
) -> None:
    # The close's follow-up holds the publication, then stores the postmortem (whose foreign
    # key shares the incident's row); a reopen locks the incident's row, then the
    # publication. Taken in opposite orders, PostgreSQL broke the tie by failing one: the
    # reopen was answered "the database did not answer".
    if bot.services.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no two locks to take in turn")
    bot.command("start Checkout is failing")
    incident_id = close_without_publishing(bot)
    claim = publication(bot, incident_id).claim
    assert claim is not None
    publishing = bot.services.sessions()
    held = incidents.hold_publication(
        publishing, incident_id=incident_id, claim=claim, now=bot.clock()
    )
    assert held is not None
    answers: list[str] = []
    reopening = threading.Thread(target=lambda: answers.append(bot.command("reopen not over").text))
    reopening.start()
    reopening.join(timeout=0.5)  # it waits for a lock the follow-up holds

    incidents.record_postmortem(publishing, publication=held, markdown="# kept", now=bot.clock())
    publishing.commit()
    publishing.close()
    reopening.join(timeout=30)

    assert not reopening.is_alive()
    assert answers and "INC-1 reopened" in answers[0], answers
    assert not publication(bot, incident_id).pending
