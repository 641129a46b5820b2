"""The public test server behaves as documented, so users can rely on it too."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable

import pytest

from smtppool import ConnectionFailed, SMTPPool
from smtppool.testing import IDLE_REPLY, SMTPTestServer

from .conftest import make_message


def plain_client(server: SMTPTestServer, timeout: float = 5) -> smtplib.SMTP:
    return smtplib.SMTP(
        server.host, server.port, "client.example.test", timeout=timeout
    )


def test_fixture_server_records_sessions_and_messages(
    smtp_server: SMTPTestServer,
) -> None:
    """The smtp_server fixture is started on a free port and records everything."""
    msg = make_message()
    with plain_client(smtp_server) as client:
        client.send_message(msg)

    smtp_server.wait_for_sessions_closed()
    (session,) = smtp_server.sessions
    assert session.commands == ("EHLO", "MAIL", "RCPT", "DATA", "QUIT")
    assert not session.is_open
    (received,) = smtp_server.messages
    assert received.message_id == msg["Message-ID"]
    assert received.rcpt_tos == ("rcpt@example.test",)
    assert b"A message from the smtppool test suite." in received.data
    assert smtp_server.deliveries(msg["Message-ID"]) == 1


def test_idle_421_line_is_written_before_closing(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> None:
    """idle_drop='421' sends Postfix's timeout line, then closes."""
    server = smtp_server_factory(idle_timeout=0.3, idle_drop="421")
    client = plain_client(server)
    server.wait_for_sessions_closed()

    assert client.getreply() == (421, IDLE_REPLY[4:].encode())
    client.close()
    assert server.sessions[0].replies == (220, 421)


def test_a_session_is_dropped_at_its_age_however_busy(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> None:
    """max_session_age: NOOPs keep the idle timer away, not the age limit."""
    server = smtp_server_factory(idle_timeout=0.5, max_session_age=0.6, idle_drop="421")
    client = plain_client(server)

    # NOOP after NOOP, with no pause for the idle timer, until one is not 250.
    while client.noop()[0] == 250:
        pass

    client.close()
    server.wait_for_sessions_closed()
    (session,) = server.sessions
    assert 421 in session.replies
    assert session.commands.count("NOOP") > 10
    assert session.ended_at - session.started_at >= 0.6


def test_greeting_can_be_replaced(
    smtp_server: SMTPTestServer, pool_factory: Callable[..., SMTPPool]
) -> None:
    """A scripted greeting (too many connections) reaches the pool as an error."""
    smtp_server.on("CONNECT", "421 4.7.0 too many connections", close=True)
    pool = pool_factory()

    with pytest.raises(ConnectionFailed) as failure:
        pool.send_message(make_message())
    assert failure.value.reply_code == 421
    assert isinstance(failure.value.__cause__, smtplib.SMTPConnectError)
    assert len(smtp_server.sessions) == 2, "one connect and one retry"
    assert pool.stats().size == 0


def test_rules_count_after_and_times(smtp_server: SMTPTestServer) -> None:
    """after lets occurrences through, times limits how often a rule answers."""
    smtp_server.on("NOOP", "421 4.3.2 scripted", after=1, times=1)
    with plain_client(smtp_server) as client:
        codes = [client.noop()[0] for _ in range(3)]
    assert codes == [250, 421, 250]


def test_per_session_rules_count_within_each_session(
    smtp_server: SMTPTestServer,
) -> None:
    """per_session=True restarts the 'after' count in every session."""
    smtp_server.on("NOOP", "550 scripted", after=1, per_session=True)
    for _ in range(2):
        with plain_client(smtp_server) as client:
            assert [client.noop()[0] for _ in range(2)] == [250, 550]


def test_close_after_the_final_dot_reply(smtp_server: SMTPTestServer) -> None:
    """on('.', close=True) answers the end of DATA, then hangs up."""
    smtp_server.on(".", close=True)
    client = plain_client(smtp_server)

    assert client.send_message(make_message()) == {}
    smtp_server.wait_for_sessions_closed()
    assert len(smtp_server.messages) == 1
    client.close()


def test_stop_answering_leaves_clients_waiting(smtp_server: SMTPTestServer) -> None:
    """After stop_answering() nothing is answered, not even the greeting."""
    smtp_server.stop_answering()
    started = time.monotonic()

    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        plain_client(smtp_server, timeout=0.3)

    assert time.monotonic() - started >= 0.3


def test_peak_sessions_counts_concurrent_sessions(
    smtp_server: SMTPTestServer,
) -> None:
    """peak_sessions is the most sessions open at one moment."""
    clients = [plain_client(smtp_server) for _ in range(3)]
    for client in clients:
        client.quit()
    with plain_client(smtp_server) as client:
        client.noop()

    assert smtp_server.peak_sessions == 3


def test_bad_options_are_refused() -> None:
    """Options that cannot work together fail at construction."""
    with pytest.raises(ValueError, match="implicit_tls needs a tls_context"):
        SMTPTestServer(implicit_tls=True)
    with pytest.raises(ValueError, match="require_auth needs auth"):
        SMTPTestServer(require_auth=True)


def test_replies_record_each_reply_code(smtp_server: SMTPTestServer) -> None:
    """A session's replies hold one code per reply, multi-line EHLO included."""
    with plain_client(smtp_server) as client:
        client.ehlo()
        client.noop()
        client.mail("a@example.test")
        client.mail("b@example.test")  # nested MAIL: aiosmtpd answers 503

    smtp_server.wait_for_sessions_closed()
    (session,) = smtp_server.sessions
    assert session.replies == (220, 250, 250, 250, 503, 221)
    assert session.commands == ("EHLO", "NOOP", "MAIL", "MAIL", "QUIT")


def test_auth_can_be_required_without_tls(
    smtp_server_factory: Callable[..., SMTPTestServer],
    pool_factory: Callable[..., SMTPPool],
) -> None:
    """A plain-text server that requires AUTH works under warnings-as-errors."""
    server = smtp_server_factory(auth=("app", "secret"), require_auth=True)
    pool = pool_factory(
        server, username="app", password="secret", allow_unencrypted_auth=True
    )

    pool.send_message(make_message())

    assert server.sessions[0].authenticated_as == "app"
    assert len(server.messages) == 1


def test_reset_instead_of_a_reply(smtp_server: SMTPTestServer) -> None:
    """reset=True with no reply aborts the session with a TCP reset."""
    smtp_server.on("NOOP", reset=True)
    client = plain_client(smtp_server)

    with pytest.raises(smtplib.SMTPServerDisconnected, match="reset by peer"):
        client.noop()
    client.close()


def test_reset_after_a_reply_waits_for_the_client(
    smtp_server: SMTPTestServer,
) -> None:
    """reset=True with a reply answers, then resets once the client sends more."""
    smtp_server.on("DATA", "354 go ahead", reset=True)
    client = plain_client(smtp_server)
    client.ehlo()
    client.mail("a@example.test")
    client.rcpt("b@example.test")

    client.putcmd("data")
    assert client.getreply() == (354, b"go ahead")
    client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.getreply()
    client.close()
    assert smtp_server.messages == []
    smtp_server.wait_for_sessions_closed()
    assert smtp_server.sessions[0].replies[-1] == 354, "nothing read past the reset"


BODY = b"Subject: hi\r\nMessage-ID: <chunked@x>\r\n\r\nhello\r\n"


def chunking_client(server: SMTPTestServer) -> smtplib.SMTP:
    client = plain_client(server)
    client.ehlo("client.example.test")
    assert client.has_extn("chunking")
    client.mail("s@example.test")
    client.rcpt("r@example.test")
    return client


def test_bdat_in_chunks(smtp_server_factory: Callable[..., SMTPTestServer]) -> None:
    """RFC 3030: chunks add up to one message; RSET throws the chunks away."""
    server = smtp_server_factory(chunking=True)
    client = chunking_client(server)
    client.send(b"BDAT 4\r\nlost")
    assert client.getreply()[0] == 250
    assert client.rset()[0] == 250
    client.mail("s@example.test")
    client.rcpt("r@example.test")

    head, tail = BODY[:10], BODY[10:]
    client.send(b"BDAT %d\r\n%s" % (len(head), head))
    assert client.getreply()[0] == 250
    client.send(b"BDAT %d LAST\r\n%s" % (len(tail), tail))
    assert client.getreply()[0] == 250
    client.quit()

    assert [message.data for message in server.messages] == [BODY]
    assert server.sessions[0].commands.count("BDAT") == 3


def test_a_scripted_reply_to_bdat_still_reads_the_chunk(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> None:
    """The chunk's bytes are never taken for commands."""
    server = smtp_server_factory(chunking=True)
    server.on("BDAT", "452 4.3.1 not now", times=1)
    client = chunking_client(server)

    client.send(b"BDAT %d LAST\r\n%s" % (len(BODY), BODY))
    assert client.getreply()[0] == 452
    assert client.rset()[0] == 250
    client.quit()

    assert server.messages == []
    assert server.sessions[0].replies[-3:] == (452, 250, 221)


def test_nothing_sent_after_a_closing_reply_is_taken(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> None:
    """close=True: the commands the client had pipelined behind the scripted one
    are not run, so no message is kept from a session the client saw end."""
    server = smtp_server_factory(chunking=True)
    server.on("RCPT", "421 4.3.2 shutting down", close=True)
    client = plain_client(server)
    client.ehlo("client.example.test")

    client.send(
        b"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\n"
        b"BDAT %d LAST\r\n%s" % (len(BODY), BODY)
    )
    assert client.getreply()[0] == 250
    assert client.getreply()[0] == 421
    client.close()

    server.wait_for_sessions_closed()
    assert server.messages == []
    assert server.sessions[0].commands == ("EHLO", "MAIL", "RCPT")


def test_data_cannot_finish_a_transaction_begun_with_bdat(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server_factory(chunking=True)
    client = chunking_client(server)
    client.send(b"BDAT 4\r\nhalf")
    assert client.getreply()[0] == 250

    assert client.docmd("DATA")[0] == 503
    assert client.rset()[0] == 250
    client.quit()
    assert server.messages == []
