"""PIPELINING (RFC 2920) and CHUNKING (RFC 3030): fewer round trips, same outcomes.

Each reply combination is played against a server that offers neither (smtplib's
own sendmail runs), one that offers PIPELINING, and one that offers CHUNKING too,
to a pool that asks for it; the caller must not be able to tell them apart.
"""

from __future__ import annotations

import email.header
import email.message
import email.mime.application
import email.mime.multipart
import smtplib
from collections.abc import Callable
from typing import Any

import pytest

from smtppool import DeliveryUnknown, SMTPPool, Stage
from smtppool.testing import SMTPTestServer

from .conftest import assert_in_sequence, make_message

ServerFactory = Callable[..., SMTPTestServer]
PoolFactory = Callable[..., SMTPPool]

MODES = ["lockstep", "pipelining", "chunking"]
RECIPIENTS = ["a@example.test", "b@example.test", "c@example.test"]


def start(mode: str, smtp_server_factory: ServerFactory, **options: Any) -> Any:
    return smtp_server_factory(
        pipelining=mode != "lockstep", chunking=mode == "chunking", **options
    )


def pool_for(mode: str, pool_factory: PoolFactory, server: SMTPTestServer) -> SMTPPool:
    return pool_factory(server, chunking=mode == "chunking")


def outcome(pool: SMTPPool, recipients: list[str] = RECIPIENTS) -> tuple[Any, ...]:
    """Send one message to three recipients; describe what the caller saw."""
    msg = make_message()
    del msg["To"]
    msg["To"] = ", ".join(recipients)
    try:
        refused = pool.send_message(msg)
    except smtplib.SMTPException as exc:
        recipients = getattr(exc, "recipients", None)
        return (
            type(exc).__name__,
            getattr(exc, "smtp_code", None),
            recipients,
            exc.stage,  # type: ignore[attr-defined]
        )
    return ("delivered", refused)


# Scripted replies, and what smtplib's own sendmail makes of them.
SCENARIOS: dict[str, tuple[list[dict[str, Any]], tuple[Any, ...]]] = {
    "all-accepted": ([], ("delivered", {})),
    "sender-refused": (
        [{"command": "MAIL", "reply": "550 5.7.1 not you"}],
        ("PermanentSenderRefused", 550, None, Stage.MAIL),
    ),
    "sender-deferred": (
        [{"command": "MAIL", "reply": "451 4.3.0 later"}],
        ("TransientSenderRefused", 451, None, Stage.MAIL),
    ),
    "one-recipient-refused": (
        [
            {
                "command": "RCPT",
                "reply": "550 5.1.1 no such user",
                "after": 1,
                "times": 1,
            }
        ],
        (
            "delivered",
            {"b@example.test": (550, b"5.1.1 no such user")},
        ),
    ),
    "all-recipients-refused": (
        [{"command": "RCPT", "reply": "550 5.1.1 no such user"}],
        (
            "PermanentRecipientsRefused",
            None,
            dict.fromkeys(RECIPIENTS, (550, b"5.1.1 no such user")),
            Stage.RCPT,
        ),
    ),
    "message-refused": (
        [{"command": ".", "reply": "554 5.6.0 bad content"}],
        ("PermanentDataError", 554, None, Stage.REPLIED),
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_reply_combination_gives_what_smtplib_gives(
    smtp_server_factory: ServerFactory,
    pool_factory: PoolFactory,
    mode: str,
    scenario: str,
) -> None:
    rules, expected = SCENARIOS[scenario]
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    for rule in rules:
        server.on(**{"times": len(RECIPIENTS), **rule})

    assert outcome(pool) == expected

    server.clear_rules()
    assert outcome(pool) == ("delivered", {})
    assert len(server.sessions) == 1
    assert_in_sequence(server)


@pytest.mark.parametrize("mode", ["lockstep", "pipelining"])
def test_a_refused_data_command_is_reported_as_smtplib_does(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, mode: str
) -> None:
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    server.on("DATA", "451 4.3.0 not now", times=1)

    assert outcome(pool) == ("TransientDataError", 451, None, Stage.DATA)

    assert outcome(pool) == ("delivered", {})
    assert len(server.sessions) == 1
    assert len(server.messages) == 1
    assert_in_sequence(server)


def test_a_server_without_pipelining_never_gets_a_command_early(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory
) -> None:
    """Each command waits for the reply to the one before, whatever happens."""
    server = smtp_server_factory(pipelining=False)
    pool = pool_factory(server, chunking=True)
    for scenario, (rules, _) in SCENARIOS.items():
        for rule in rules:
            server.on(**{"times": len(RECIPIENTS), **rule})
        outcome(pool)
        server.clear_rules()
        assert all(session.pipelined == 0 for session in server.sessions), scenario

    assert server.count("MAIL") == len(SCENARIOS)
    assert server.count("BDAT") == 0


def test_a_pipelining_server_gets_the_envelope_and_data_in_one_write(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory
) -> None:
    """MAIL, three RCPTs and DATA arrive together; only the body waits for 354."""
    server = smtp_server_factory()
    pool = pool_factory(server)

    assert outcome(pool) == ("delivered", {})

    (session,) = server.sessions
    # Something followed MAIL and each RCPT before the server had answered it.
    assert session.pipelined == 1 + len(RECIPIENTS)
    assert server.messages[0].rcpt_tos == tuple(RECIPIENTS)


def test_pipelining_can_be_turned_off(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory
) -> None:
    server = smtp_server_factory()
    pool = pool_factory(server, pipelining=False)

    assert outcome(pool) == ("delivered", {})

    assert server.sessions[0].pipelined == 0


def test_chunking_sends_the_whole_message_in_one_write(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory
) -> None:
    server = smtp_server_factory(chunking=True)
    pool = pool_factory(server, chunking=True)

    assert outcome(pool) == ("delivered", {})

    (session,) = server.sessions
    assert "DATA" not in session.commands
    assert session.commands.count("BDAT") == 1
    assert session.pipelined == 1 + len(RECIPIENTS)


def test_chunking_is_off_unless_asked_for(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory
) -> None:
    server = smtp_server_factory(chunking=True)
    pool = pool_factory(server)

    assert outcome(pool) == ("delivered", {})

    assert server.count("BDAT") == 0
    assert server.count("DATA") == 1


def test_chunking_needs_pipelining() -> None:
    with pytest.raises(ValueError, match=r"chunking .* needs pipelining"):
        SMTPPool("localhost", 25, chunking=True, pipelining=False)


@pytest.mark.parametrize("mode", MODES)
def test_the_server_receives_the_same_bytes_every_way(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, mode: str
) -> None:
    """Dot-stuffing on the DATA paths, none with BDAT: the same message stored.
    Lines starting with a dot, a lone dot, and no line break at the end."""
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    body = b"Subject: dots\r\nMessage-ID: <dots@x>\r\n\r\n.hidden\r\n.\r\n..two\r\nend"

    pool.sendmail("s@example.test", ["r@example.test"], body)

    assert server.messages[0].data == body + b"\r\n"


def test_text_messages_get_crlf_line_endings_as_smtplib_gives_them(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory
) -> None:
    servers = [start(mode, smtp_server_factory) for mode in MODES]
    text = "Subject: eol\nMessage-ID: <eol@x>\n\nbare lf\rbare cr\r\ncrlf\n"

    for mode, server in zip(MODES, servers, strict=True):
        pool_for(mode, pool_factory, server).sendmail("s@x.test", "r@x.test", text)

    stored = {server.messages[0].data for server in servers}
    assert stored == {
        b"Subject: eol\r\nMessage-ID: <eol@x>\r\n\r\nbare lf\r\nbare cr\r\ncrlf\r\n"
    }


@pytest.mark.parametrize("mode", ["pipelining", "chunking"])
def test_a_line_break_in_an_option_is_refused_before_anything_is_written(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, mode: str
) -> None:
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    pool.send_message(make_message())  # the session is up and warm

    with pytest.raises(ValueError, match="line break"):
        pool.sendmail(
            "s@x.test", ["r@x.test"], b"x\r\n", rcpt_options=["NOTIFY=NEVER\r\nRSET"]
        )

    # The pool says RSET as it takes the session back after an error; the
    # refused group itself, which starts with MAIL, never went out.
    assert server.sessions[0].commands[-1] == "RSET"
    assert server.count("MAIL") == 1
    pool.send_message(make_message())
    assert len(server.sessions) == 1


@pytest.mark.parametrize("close", [True, False], ids=["then-closes", "stays-open"])
@pytest.mark.parametrize("command", ["MAIL", "RCPT", "."])
def test_chunking_resends_after_a_421_at_any_reply(
    smtp_server_factory: ServerFactory,
    pool_factory: PoolFactory,
    command: str,
    close: bool,
) -> None:
    """A 421 says the server is closing and kept nothing: safe to send again."""
    server = smtp_server_factory(chunking=True)
    pool = pool_factory(server, chunking=True)
    server.on(command, "421 4.3.2 shutting down", close=close, times=1)
    msg = make_message()

    pool.send_message(msg)

    assert server.deliveries(msg["Message-ID"]) == 1
    assert pool.stats().retries == 1


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "."])
def test_chunking_turns_a_silent_loss_into_delivery_unknown(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, command: str
) -> None:
    """The cost of one round trip: the whole message was written before any
    reply, so a session lost with no reply is never resent, even where the
    two-trip path would have resent it."""
    server = smtp_server_factory(chunking=True)
    pool = pool_factory(server, chunking=True)
    server.on(command, drop=True, times=1)
    msg = make_message()

    with pytest.raises(DeliveryUnknown) as failure:
        pool.send_message(msg)

    assert failure.value.message_id == msg["Message-ID"]
    assert pool.stats().retries == 0
    assert server.deliveries(msg["Message-ID"]) == (1 if command == "." else 0)
    pool.send_message(make_message())
    assert len(server.messages) == (2 if command == "." else 1)


def test_the_test_server_refuses_bdat_unless_it_offers_chunking(
    smtp_server: SMTPTestServer,
) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.ehlo("client.example.test")
        assert not client.has_extn("chunking")
        assert client.docmd("BDAT", "3 LAST")[0] == 500


@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_stays_a_refusal_when_the_server_then_hangs_up(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, mode: str
) -> None:
    """The RSET after a refused message meets a closed session: the caller still
    hears the refusal, not a lost session or an unknown outcome."""
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    server.on(".", "554 5.6.0 bad content", close=True, times=1)

    assert outcome(pool) == ("PermanentDataError", 554, None, Stage.REPLIED)

    assert outcome(pool) == ("delivered", {})
    assert len(server.messages) == 1


@pytest.mark.parametrize(("count", "pipelined"), [(100, 101), (101, 0)])
def test_long_recipient_lists_go_one_command_at_a_time(
    smtp_server_factory: ServerFactory,
    pool_factory: PoolFactory,
    count: int,
    pipelined: int,
) -> None:
    """Past 100 recipients the replies could fill the socket buffers while the
    client is still writing; such a list is sent as smtplib sends it."""
    server = smtp_server_factory()
    pool = pool_factory(server)
    recipients = [f"r{n}@example.test" for n in range(count)]

    assert pool.send_message(make_message(), to_addrs=recipients) == {}

    assert server.messages[0].rcpt_tos == tuple(recipients)
    assert server.sessions[0].pipelined == pipelined


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("MAIL", ("PermanentSenderRefused", 550, None, Stage.MAIL)),
        (
            "RCPT",
            (
                "PermanentRecipientsRefused",
                None,
                {"a@example.test": (550, b"5.7.1 go away")},
                Stage.RCPT,
            ),
        ),
    ],
)
def test_a_refused_envelope_then_a_hang_up_is_still_a_refusal(
    smtp_server_factory: ServerFactory,
    pool_factory: PoolFactory,
    mode: str,
    command: str,
    expected: tuple[Any, ...],
) -> None:
    """A 5xx and then the connection closed (an Exim ACL "drop"): smtplib stops
    at the refusal, so the pipelined commands lost after it change nothing. Not
    a lost session to resend, nor, with chunking, an unknown outcome. (With more
    recipients to go after a refused one, smtplib too meets the closed session.)
    """
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    server.on(command, "550 5.7.1 go away", close=True, times=1)

    assert outcome(pool, ["a@example.test"]) == expected

    assert pool.stats().retries == 0
    assert len(server.sessions) == 1
    assert len(server.messages) == 0


def test_refusals_in_a_row_keep_the_session_in_sequence(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """A refused message, then a refused sender whose pipelined RCPT and DATA
    the server answers with 503, then a delivery: all on one session."""
    pool = pool_factory()
    for command in (".", "MAIL"):
        smtp_server.on(command, "550 5.7.1 refused", times=1)
        with pytest.raises(smtplib.SMTPResponseException):
            pool.send_message(make_message())

    pool.send_message(make_message())

    assert len(smtp_server.sessions) == 1
    assert smtp_server.sessions[0].replies.count(503) == 2
    assert_in_sequence(smtp_server)


INJECTED = "evil@example.test>\r\nRCPT TO:<victim@example.test"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("role", ["sender", "recipient"])
def test_an_address_with_a_line_break_is_refused_before_anything_is_written(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, mode: str, role: str
) -> None:
    """smtplib would quietly send to a different address; the pool says no."""
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    sender, recipient = "s@example.test", "r@example.test"
    if role == "sender":
        sender = INJECTED
    else:
        recipient = INJECTED

    with pytest.raises(ValueError, match=f"the {role} address .* line break"):
        pool.sendmail(sender, [recipient], b"Subject: x\r\n\r\nbody\r\n")

    assert server.count("MAIL") == 0
    pool.send_message(make_message())
    assert len(server.messages) == 1
    assert server.messages[0].rcpt_tos != ("victim@example.test",)


@pytest.mark.parametrize("mode", MODES)
def test_a_header_that_would_start_another_is_refused(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, mode: str
) -> None:
    """A compat32 message takes any string as a header value; a line break that
    does not fold the header would add one (here a Bcc) to what is sent."""
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    msg = email.message.Message()
    msg["From"] = "s@example.test"
    msg["To"] = "r@example.test"
    msg["Subject"] = "hello\r\nBcc: victim@example.test"
    msg.set_payload("body\r\n")

    with pytest.raises(ValueError, match="'Subject' header contains a line break"):
        pool.send_message(msg)

    assert server.count("MAIL") == 0
    folded = email.message.Message()
    folded["From"], folded["To"] = "s@example.test", "r@example.test"
    folded["Subject"] = "a long subject\r\n folded onto a second line"
    folded.set_payload("body\r\n")
    pool.send_message(folded)
    assert len(server.messages) == 1


# What Python's email package also writes as a line break in a compat32 header.
OTHER_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", [f"hi{b}X-Injected : yes" for b in OTHER_BREAKS])
def test_every_kind_of_line_break_in_a_header_is_refused(
    smtp_server_factory: ServerFactory, pool_factory: PoolFactory, mode: str, value: str
) -> None:
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)
    msg = email.message.Message()
    msg["From"], msg["To"] = "s@example.test", "r@example.test"
    msg["Subject"] = value
    msg.set_payload("body\r\n")

    with pytest.raises(ValueError, match="'Subject' header contains a line break"):
        pool.send_message(msg)

    assert server.count("MAIL") == 0


def test_a_header_object_with_a_line_break_is_refused(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """email.header.Header values are not strings, and not checked by the email
    package: the pool checks their text."""
    pool = pool_factory()
    msg = email.message.Message()
    msg["From"], msg["To"] = "s@example.test", "r@example.test"
    msg["Subject"] = email.header.Header("hi\r\nBcc: victim@example.test")
    msg.set_payload("body\r\n")

    with pytest.raises(ValueError, match="'Subject' header contains a line break"):
        pool.send_message(msg)

    assert smtp_server.count("MAIL") == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("<> BODY=8BITMIME", "cannot be read as one address"),
        ("<<s@example.test> NOTIFY=NEVER", "cannot be read as one address"),
        ("s@example.test NOTIFY=NEVER", "would go out as 's@example.testNOTIFY"),
        ("s@exa\tmple.test", "would go out as 's@example.test'"),
        # Python 3.13's stricter parser cannot read it as an address at all.
        (
            "a@example.test, victim@example.test",
            "holds more than one address|cannot be read as one address",
        ),
        ("s@example.test\x0bRCPT", "contains a line break or a control character"),
        ("s@example.test\x00", "contains a line break or a control character"),
    ],
)
def test_an_address_that_would_change_the_command_is_refused(
    smtp_server_factory: ServerFactory,
    pool_factory: PoolFactory,
    mode: str,
    address: str,
    reason: str,
) -> None:
    """smtplib writes a string it cannot parse as it is, so anything after the
    address would become an ESMTP parameter; or it quietly sends elsewhere."""
    server = start(mode, smtp_server_factory)
    pool = pool_for(mode, pool_factory, server)

    for sender, recipient in [(address, "r@example.test"), ("s@example.test", address)]:
        with pytest.raises(ValueError, match=reason):
            pool.sendmail(sender, [recipient], b"Subject: x\r\n\r\nbody\r\n")

    assert server.count("MAIL") == 0


@pytest.mark.parametrize(
    "address",
    [
        "",  # the null sender of bounces
        "<>",
        "Name <s@example.test>",
        '"Doe, John" <s@example.test>',
        '"john doe"@example.test',
        "postmaster",
        "s@example.test (Sales)",
        "(Sales) s@example.test",
        "Sales\tDept <s@example.test>",
        "<@relay.example.test,@other.example.test:s@example.test>",
        "s@[127.0.0.1]",
    ],
)
def test_unusual_but_sound_addresses_still_go_out(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory, address: str
) -> None:
    pool = pool_factory()

    pool.sendmail(address, ["r@example.test"], b"Subject: x\r\n\r\nbody\r\n")

    assert len(smtp_server.messages) == 1


def test_a_line_break_in_a_parts_header_is_refused(
    smtp_server: SMTPTestServer, pool_factory: PoolFactory
) -> None:
    """An attachment's file name is a header of its part: a break there would end
    the part's headers early and turn the rest into its body."""
    pool = pool_factory()
    msg = email.mime.multipart.MIMEMultipart()
    msg["From"], msg["To"] = "s@example.test", "r@example.test"
    attachment = email.mime.application.MIMEApplication(b"%PDF", "pdf")
    attachment.add_header(
        "Content-Disposition", "attachment", filename="invoice.pdf\r\nINJECTED"
    )
    msg.attach(attachment)

    with pytest.raises(ValueError, match="'Content-Disposition' header contains"):
        pool.send_message(msg)

    assert smtp_server.count("MAIL") == 0
