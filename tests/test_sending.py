"""Sending: what is resent on a fresh session, what is refused, what is unknown.

Each fault is produced by the test server; each test counts the copies it kept.
"""

from __future__ import annotations

import logging
import pickle
import smtplib
from collections.abc import Callable

import pytest

from smtppool import (
    ConnectionFailed,
    DeliveryUnknown,
    PermanentError,
    SMTPPool,
    Stage,
    TransientError,
)
from smtppool.exceptions import (
    PermanentDataError,
    PermanentRecipientsRefused,
    PermanentSenderRefused,
    TransientDataError,
    TransientRecipientsRefused,
    TransientSenderRefused,
)
from smtppool.testing import SMTPTestServer

from .conftest import assert_in_sequence, make_message

PoolFactory = Callable[..., SMTPPool]

# The server's reply to DATA before it reads the body.
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"


# smtplib's error for a refusal of each command, and the stage it happens at.
SMTPLIB_ERROR_AND_STAGE: dict[str, tuple[type[Exception], Stage]] = {
    "MAIL": (smtplib.SMTPSenderRefused, Stage.MAIL),
    "RCPT": (smtplib.SMTPRecipientsRefused, Stage.RCPT),
    "DATA": (smtplib.SMTPDataError, Stage.DATA),
}


@pytest.fixture(params=["lockstep", "pipelining"])
def smtp_server(
    request: pytest.FixtureRequest,
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> SMTPTestServer:
    """Every test here runs against a server that offers PIPELINING, as real ones
    do, and against one that does not, which smtplib's own sendmail serves."""
    return smtp_server_factory(pipelining=request.param == "pipelining")


@pytest.mark.parametrize("close", [True, False], ids=["then-closes", "stays-open"])
@pytest.mark.parametrize("step", ["CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "."])
def test_421_before_acceptance_is_sent_again_on_a_new_session(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory, step: str, close: bool
) -> None:
    """A 421 at any step up to the final dot's reply: one resend, one copy."""
    pool = pool_factory()
    smtp_server.on(step, "421 4.3.2 service shutting down", close=close, times=1)
    msg = make_message()

    pool.send_message(msg)

    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert len(smtp_server.messages) == 1
    assert pool.stats().retries == 1
    # The pool hung up on the first session without another command, whatever
    # smtplib had left open.
    smtp_server.wait_until(lambda: not smtp_server.sessions[0].is_open)
    first = smtp_server.sessions[0]
    if step in ("CONNECT", "."):
        assert first.replies[-1] == 421
    else:
        # After the 421, only the rest of the group the client had already sent
        # with it, if the server offers PIPELINING.
        answered = first.commands.index(step)
        assert first.replies[answered + 1] == 421
        rest = first.commands[answered + 1 :]
        assert set(rest) <= ({"RCPT", "DATA"} if smtp_server.pipelining else set())
    assert "HELO" not in first.commands
    assert "QUIT" not in first.commands


@pytest.mark.parametrize(
    "fault",
    [
        {"command": "QUIT", "reply": "421 4.3.2 going away"},
        {"command": "QUIT", "drop": True},
        {"command": ".", "close": True},
    ],
    ids=["421-to-quit", "drop-at-quit", "closed-before-quit"],
)
def test_a_failing_quit_does_not_turn_a_delivery_into_an_error(
    smtp_server: SMTPTestServer,
    pool_factory: PoolFactory,
    fault: dict[str, object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """F04: accepted, then QUIT fails; a retry-on-error caller sends one copy."""
    caplog.set_level(logging.DEBUG, logger="smtppool")
    # max_messages=1 makes the pool say QUIT right after the message.
    pool = pool_factory(max_messages=1)
    smtp_server.on(**fault)  # type: ignore[arg-type]
    msg = make_message()

    attempts = 0
    for _ in range(3):
        attempts += 1
        try:
            pool.send_message(msg)
            break
        except smtplib.SMTPException:
            continue

    pool.close()
    assert attempts == 1
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert "close.quit_failed" in caplog.text


def test_drop_after_354_on_one_message(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """F03: the session dies after 354; that message raises, the rest go out."""
    pool = pool_factory()
    smtp_server.on("DATA", GO_AHEAD, reset=True, after=1, times=1)
    messages = [make_message() for _ in range(5)]

    pool.send_message(messages[0])
    with pytest.raises(DeliveryUnknown):
        pool.send_message(messages[1])
    for msg in messages[2:]:
        pool.send_message(msg)

    copies = [smtp_server.deliveries(m["Message-ID"]) for m in messages]
    assert copies == [1, 0, 1, 1, 1]
    assert {m.session_id for m in smtp_server.messages[1:]} == {2}
    assert pool.stats().closed.broken == 1


def test_reset_after_354_is_unknown_once_the_dot_is_written(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """A small message is written whole before the reset shows: outcome unknown."""
    pool = pool_factory()
    smtp_server.on("DATA", GO_AHEAD, reset=True, times=1)
    msg = make_message()

    with pytest.raises(DeliveryUnknown) as failure:
        pool.send_message(msg)

    error = failure.value
    assert error.stage is Stage.DOT_WRITTEN
    assert error.message_id == msg["Message-ID"]
    assert error.may_have_been_delivered
    assert smtp_server.count("MAIL") == 1, "never resent"
    assert smtp_server.deliveries(msg["Message-ID"]) == 0


def big_message(size: int) -> bytes:
    """A message of about ``size`` bytes, in lines of legal length."""
    line = b"x" * 998 + b"\r\n"
    head = b"From: a@example.test\r\nTo: b@example.test\r\nMessage-ID: <big@t>\r\n\r\n"
    return head + line * (size // len(line))


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_reset_while_the_body_is_written_is_resent(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory, retries: int
) -> None:
    """A body larger than the socket buffers fails mid-write, before the dot."""
    pool = pool_factory(retries=retries)
    smtp_server.on("DATA", GO_AHEAD, reset=True, times=1)
    # More than both ends' kernel buffers can hold, so the write must fail.
    data = big_message(24 * 1024 * 1024)

    if retries == 0:
        with pytest.raises(ConnectionFailed) as failure:
            pool.sendmail("a@example.test", ["b@example.test"], data)
        assert failure.value.stage is Stage.BODY
        assert failure.value.message_id == "<big@t>"
        assert smtp_server.deliveries("<big@t>") == 0
    else:
        pool.sendmail("a@example.test", ["b@example.test"], data)
        assert smtp_server.deliveries("<big@t>") == 1


def test_reset_after_the_final_dot_is_unknown_and_not_resent(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """The server keeps the message and resets before replying: one copy."""
    pool = pool_factory()
    smtp_server.on(".", reset=True, times=1)
    msg = make_message()

    with pytest.raises(DeliveryUnknown) as failure:
        pool.send_message(msg)

    assert failure.value.recipients == ("rcpt@example.test",)
    assert failure.value.reply_code is None
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert pool.stats().delivery_unknown == 1
    assert pool.stats().retries == 0
    pool.send_message(make_message())
    assert len(smtp_server.sessions) == 2


@pytest.mark.parametrize("api", ["send_message", "sendmail"])
def test_slow_reply_to_the_final_dot_is_unknown(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory, api: str
) -> None:
    """F08: the reply comes after the client's timeout; one copy, not resent."""
    pool = pool_factory(timeout=0.3)
    smtp_server.on(".", delay=1.0, times=1)
    msg = make_message()

    def send() -> object:
        if api == "send_message":
            return pool.send_message(msg)
        return pool.sendmail(msg["From"], [msg["To"]], msg.as_bytes())

    with pytest.raises(DeliveryUnknown) as failure:
        send()

    assert failure.value.message_id == msg["Message-ID"]
    assert msg["Message-ID"] in str(failure.value)
    smtp_server.wait_for_messages(1)
    assert smtp_server.deliveries(msg["Message-ID"]) == 1
    assert smtp_server.count("MAIL") == 1


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        ("451 4.3.0 try again later", TransientDataError, "4.3.0"),
        ("454 Throttling failure: Maximum sending rate", TransientDataError, None),
        ("554 5.6.0 message rejected", PermanentDataError, "5.6.0"),
    ],
)  # fmt: skip
def test_refusal_of_the_message_is_raised_not_resent(
    smtp_server: SMTPTestServer,
    pool_factory: PoolFactory,
    reply: str,
    kind: type[Exception],
    status: str | None,
) -> None:
    """A 4xx or 5xx to the final dot (not 421): no copy, no resend, session kept."""
    code = int(reply[:3])
    pool = pool_factory()
    smtp_server.on(".", reply, times=1)
    msg = make_message()

    with pytest.raises(kind) as failure:
        pool.send_message(msg)

    error = failure.value
    assert isinstance(error, smtplib.SMTPDataError)
    assert isinstance(error, TransientError) == (code < 500)
    assert isinstance(error, PermanentError) == (code >= 500)
    assert (error.reply_code, error.enhanced_status) == (code, status)
    assert error.stage is Stage.REPLIED
    assert not error.may_have_been_delivered
    assert smtp_server.count("MAIL") == 1
    assert smtp_server.deliveries(msg["Message-ID"]) == 0

    pool.send_message(make_message())
    assert len(smtp_server.sessions) == 1
    assert_in_sequence(smtp_server)


@pytest.mark.parametrize(
    ("command", "reply", "kind"),
    [
        ("MAIL", "451 4.3.0 later", TransientSenderRefused),
        ("MAIL", "550 5.7.1 not you", PermanentSenderRefused),
        ("RCPT", "450 4.2.1 mailbox busy", TransientRecipientsRefused),
        ("RCPT", "550 5.1.1 no such user", PermanentRecipientsRefused),
        ("DATA", "451 4.3.0 later", TransientDataError),
        ("DATA", "554 5.5.1 no valid recipients", PermanentDataError),
    ],
)
def test_refusals_keep_smtplib_types_and_the_session(
    smtp_server: SMTPTestServer,
    pool_factory: PoolFactory,
    command: str,
    reply: str,
    kind: type[Exception],
) -> None:
    """F07: a refused transaction, then the next message on the same session
    inside one block; the strict server never answers 503."""
    smtplib_kind, stage = SMTPLIB_ERROR_AND_STAGE[command]
    pool = pool_factory()
    smtp_server.on(command, reply, times=1)
    refused, delivered = make_message(), make_message()

    with pool.connection() as conn:
        with pytest.raises(kind) as failure:
            conn.send_message(refused)
        conn.send_message(delivered)

    error = failure.value
    assert isinstance(error, smtplib_kind)
    assert error.stage is stage  # type: ignore[attr-defined]
    assert error.message_id == refused["Message-ID"]  # type: ignore[attr-defined]
    assert error.reply_code == int(reply[:3])  # type: ignore[attr-defined]
    assert smtp_server.deliveries(delivered["Message-ID"]) == 1
    assert smtp_server.deliveries(refused["Message-ID"]) == 0
    assert len(smtp_server.sessions) == 1
    assert_in_sequence(smtp_server)
    # One RSET: smtplib's own where it sends one, else the pool's.
    assert smtp_server.count("RSET") == 1


def test_refused_transaction_then_pool_send(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """F07 through the pool: the refused session is reset before it is reused."""
    pool = pool_factory()
    smtp_server.on("RCPT", "550 5.1.1 no such user", times=1)

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        pool.send_message(make_message())
    pool.send_message(make_message())

    assert len(smtp_server.messages) == 1
    assert len(smtp_server.sessions) == 1
    assert_in_sequence(smtp_server)


def test_partly_refused_recipients_are_returned_and_logged(
    smtp_server: SMTPTestServer,
    pool_factory: PoolFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Some recipients refused: smtplib's dict comes back, the count is logged."""
    caplog.set_level(logging.INFO, logger="smtppool")
    pool = pool_factory()
    smtp_server.on("RCPT", "550 5.1.1 no such user", times=1)
    msg = make_message()
    del msg["To"]
    msg["To"] = "gone@example.test, here@example.test"

    refused = pool.send_message(msg)
    pool.send_message(make_message())

    assert refused == {"gone@example.test": (550, b"5.1.1 no such user")}
    assert smtp_server.messages[0].rcpt_tos == ("here@example.test",)
    assert len(smtp_server.messages) == 2
    assert len(smtp_server.sessions) == 1
    assert "send.refused" in caplog.text
    assert "recipients=1 codes=550" in caplog.text
    assert "gone@example.test" not in caplog.text


def test_retries_zero_turns_resending_off(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """With retries=0 a lost session is the caller's error, and nothing went out."""
    pool = pool_factory(retries=0)
    smtp_server.on("MAIL", "421 4.3.2 shutting down", close=True, times=1)
    msg = make_message()

    with pytest.raises(ConnectionFailed) as failure:
        pool.send_message(msg)

    error = failure.value
    assert isinstance(error, smtplib.SMTPServerDisconnected)
    assert isinstance(error, ConnectionError)
    assert (error.attempts, error.reply_code, error.stage) == (1, 421, Stage.MAIL)
    assert error.enhanced_status == "4.3.2"
    assert smtp_server.deliveries(msg["Message-ID"]) == 0
    assert pool.stats().retries == 0


def test_resending_stops_after_retries(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """A server that keeps dropping gets retries + 1 attempts, then an error."""
    pool = pool_factory(retries=2)
    smtp_server.on("MAIL", drop=True)

    with pytest.raises(ConnectionFailed, match="3 time") as failure:
        pool.send_message(make_message())

    assert failure.value.attempts == 3
    assert smtp_server.count("MAIL") == 3
    assert pool.stats().size == 0


def test_a_lease_carries_on_after_a_lost_session(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """Inside one block, the connection takes a new session and keeps it."""
    pool = pool_factory(max_size=1)
    smtp_server.on("MAIL", "421 4.3.2 closing", close=True, after=1, times=1)
    messages = [make_message() for _ in range(3)]

    with pool.connection() as conn:
        for msg in messages:
            conn.send_message(msg)

    assert [smtp_server.deliveries(m["Message-ID"]) for m in messages] == [1, 1, 1]
    assert [m.session_id for m in smtp_server.messages] == [1, 2, 2]
    assert pool.stats().size == 1


@pytest.mark.parametrize("max_messages", [3, None])
def test_provider_cap_on_messages_per_session(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory, max_messages: int | None
) -> None:
    """F05: a cap of 3 per session; rotate first, or recover from each 421."""
    smtp_server.on(
        "MAIL",
        "421 4.7.0 Maximum message count per session reached.",
        close=True,
        after=3,
        per_session=True,
    )
    pool = pool_factory(max_size=1, max_messages=max_messages)
    messages = [make_message() for _ in range(10)]

    for msg in messages:
        pool.send_message(msg)

    assert all(smtp_server.deliveries(m["Message-ID"]) == 1 for m in messages)
    saw_421 = any(421 in s.replies for s in smtp_server.sessions)
    if max_messages is None:
        assert saw_421
        assert pool.stats().retries == 3
    else:
        assert not saw_421
        assert pool.stats().closed.messages == 3


def test_max_messages_rotates_sessions_inside_one_block(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """A block that sends more than max_messages moves to a new session, after
    QUIT, without waiting for the block to end."""
    pool = pool_factory(max_size=1, max_messages=3)

    with pool.connection() as conn:
        for _ in range(7):
            conn.send_message(make_message())

    assert [m.session_id for m in smtp_server.messages] == [1, 1, 1, 2, 2, 2, 3]
    smtp_server.wait_until(lambda: smtp_server.sessions[1].ended_at is not None)
    assert smtp_server.sessions[0].commands[-1] == "QUIT"
    assert smtp_server.sessions[1].commands[-1] == "QUIT"


def test_errors_survive_pickling(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """Task queues pickle errors; the fields come back."""
    pool = pool_factory()
    smtp_server.on("MAIL", "550 5.7.1 not you", times=1)
    smtp_server.on(".", reset=True, times=1)
    errors: list[Exception] = []
    for _ in range(2):
        try:
            pool.send_message(make_message())
        except smtplib.SMTPException as exc:
            errors.append(exc)

    sender, unknown = (pickle.loads(pickle.dumps(e)) for e in errors)  # noqa: S301
    assert isinstance(sender, PermanentSenderRefused)
    assert (sender.smtp_code, sender.reply_code, sender.stage) == (
        550,
        550,
        Stage.MAIL,
    )
    assert sender.sender == "sender@example.test"
    assert isinstance(unknown, DeliveryUnknown)
    assert unknown.recipients == ("rcpt@example.test",)
    assert unknown.message_id == errors[1].message_id  # type: ignore[attr-defined]


def test_failure_to_open_the_first_session_names_the_message(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """Every connect is turned away: the error still says which message failed."""
    pool = pool_factory()
    smtp_server.on("CONNECT", "421 4.7.0 too many connections", close=True)
    msg = make_message()

    with pytest.raises(ConnectionFailed) as failure:
        pool.send_message(msg)

    assert failure.value.message_id == msg["Message-ID"]
    assert (failure.value.stage, failure.value.attempts) == (Stage.CONNECT, 2)


def test_failure_to_open_a_replacement_names_the_message(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """The session is lost, and every new one is turned away at the greeting."""
    pool = pool_factory()
    smtp_server.on("MAIL", "421 4.3.2 closing", close=True, times=1)
    smtp_server.on("CONNECT", "421 4.7.0 too many connections", close=True, after=1)
    msg = make_message()

    with pytest.raises(ConnectionFailed) as failure:
        pool.send_message(msg)

    assert failure.value.message_id == msg["Message-ID"]
    assert failure.value.stage is Stage.CONNECT
    assert failure.value.reply_code == 421
    assert len(smtp_server.sessions) == 3, "the first session, a connect and a retry"
    assert smtp_server.deliveries(msg["Message-ID"]) == 0
    assert pool.stats().size == 0


def test_raw_message_bytes_of_any_kind_are_named_in_errors(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """A bytearray message, which smtplib sends, still gets DeliveryUnknown."""
    pool = pool_factory()
    smtp_server.on(".", reset=True, times=1)
    raw = bytearray(b"From: a@example.test\r\nMessage-ID: <ba@t>\r\n\r\nbody\r\n")

    with pytest.raises(DeliveryUnknown) as failure:
        pool.sendmail("a@example.test", ["b@example.test"], raw)

    assert failure.value.message_id == "<ba@t>"
    assert smtp_server.deliveries("<ba@t>") == 1


def test_an_unreadable_reply_to_the_dot_is_unknown(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """smtplib gives up on an over-long reply line: the outcome is unknown."""
    pool = pool_factory()
    smtp_server.on(".", "250 " + "x" * 9000, times=1)
    msg = make_message()

    with pytest.raises(DeliveryUnknown) as failure:
        pool.send_message(msg)

    assert failure.value.stage is Stage.DOT_WRITTEN
    assert smtp_server.deliveries(msg["Message-ID"]) == 1


def test_no_recipients_is_a_permanent_refusal(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """An empty recipient list fails as smtplib fails it, as a PermanentError."""
    pool = pool_factory()

    with pytest.raises(PermanentRecipientsRefused):
        pool.sendmail("a@example.test", [], b"Subject: x\r\n\r\nbody\r\n")

    pool.send_message(make_message())
    assert len(smtp_server.messages) == 1
    assert_in_sequence(smtp_server)


def test_the_raw_session_is_reset_before_the_pool_uses_it(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """What the caller leaves open through conn.smtp never reaches a later MAIL,
    on this connection or after it goes back."""
    pool = pool_factory(max_size=1)

    with pool.connection() as conn:
        raw = conn.smtp
        raw.ehlo()
        raw.mail("x@example.test")
        conn.send_message(make_message())
        raw.mail("y@example.test")
    pool.send_message(make_message())

    assert len(smtp_server.messages) == 2
    assert len(smtp_server.sessions) == 1
    assert_in_sequence(smtp_server)


def test_421_to_auth_ends_the_handshake(
    smtp_server_factory: Callable[..., SMTPTestServer], pool_factory: PoolFactory
) -> None:
    """smtplib would try another mechanism on a session that answered 421."""
    server = smtp_server_factory(auth=("app", "secret"))
    server.on("AUTH", "421 4.7.0 try again later", times=1)
    pool = pool_factory(
        server, username="app", password="secret", allow_unencrypted_auth=True
    )

    pool.send_message(make_message())

    first = server.sessions[0]
    assert first.commands.count("AUTH") == 1
    assert len(server.sessions) == 2
    assert server.messages[0].session_id == server.sessions[1].id


def test_421_to_noop_closes_the_session_at_once(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """conn.noop() that gets 421 hangs up then and there."""
    pool = pool_factory()
    smtp_server.on("NOOP", "421 4.3.2 closing", times=1)

    with pool.connection() as conn:
        assert conn.noop()[0] == 421
        smtp_server.wait_until(lambda: not smtp_server.sessions[0].is_open)
        conn.send_message(make_message())

    assert smtp_server.messages[0].session_id == smtp_server.sessions[1].id
