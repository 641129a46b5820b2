"""A property-based walk through the pool's life: checkouts, checkins, sends,
time passing, the server dropping every session, forks and closing, with the
pool's invariants checked after every step against a real server."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from smtppool import (
    Connection,
    PermanentError,
    PoolClosed,
    SMTPPool,
    TransientError,
)
from smtppool.testing import SMTPTestServer

from .conftest import FakeClock, assert_in_sequence, in_child, make_message

MAX_SIZE = 3

pytestmark = [
    pytest.mark.slow,
    # Forking with the test server's thread running; the children only use sockets.
    pytest.mark.filterwarnings(
        "ignore:This process .* is multi-threaded:DeprecationWarning"
    ),
]


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server = SMTPTestServer().start()
        self.clock = FakeClock()
        self.pool = SMTPPool(
            self.server.host,
            self.server.port,
            security="none",
            local_hostname="client.example.test",
            timeout=5,
            max_size=MAX_SIZE,
            acquire_timeout=0.2,
            max_idle=30,
            max_lifetime=100,
            max_messages=5,
            clock=self.clock,
        )
        self.held: list[Connection] = []
        self.sent: list[str] = []
        self.closed = False

    def teardown(self) -> None:
        for conn in self.held:
            conn.__exit__(None, None, None)
        self.pool.close()
        self.server.stop()

    # Borrowing

    @precondition(lambda self: not self.closed and len(self.held) < MAX_SIZE)
    @rule()
    def check_out(self) -> None:
        self.held.append(self.pool.connection().__enter__())

    @precondition(lambda self: self.held)
    @rule(data=st.data(), failed=st.booleans())
    def check_in(self, data: st.DataObject, failed: bool) -> None:
        index = data.draw(st.integers(0, len(self.held) - 1))
        conn = self.held.pop(index)
        if failed:  # the block raised: the session must be reset before reuse
            conn.__exit__(RuntimeError, RuntimeError("block failed"), None)
        else:
            conn.__exit__(None, None, None)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def send_on_a_held_connection(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.held))
        msg = make_message()
        try:
            conn.send_message(msg)
        except PoolClosed:
            # A held connection that needs a new session cannot get one from a
            # closed pool; nothing was sent.
            assert self.closed
            return
        self.sent.append(msg["Message-ID"])

    @precondition(lambda self: not self.closed and len(self.held) < MAX_SIZE)
    @rule()
    def send_through_the_pool(self) -> None:
        msg = make_message()
        self.pool.send_message(msg)
        self.sent.append(msg["Message-ID"])

    @precondition(lambda self: not self.closed and len(self.held) < MAX_SIZE)
    @rule(
        command=st.sampled_from(["MAIL", "RCPT", "DATA", "."]),
        transient=st.booleans(),
    )
    def a_send_is_refused(self, command: str, transient: bool) -> None:
        reply = "451 4.3.0 try later" if transient else "550 5.7.1 refused"
        self.server.on(command, reply, times=1)
        with pytest.raises(TransientError if transient else PermanentError):
            self.pool.send_message(make_message())
        self.server.clear_rules()

    # The world changing

    @rule(seconds=st.floats(min_value=0, max_value=40))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def server_drops_every_session(self) -> None:
        self.server.drop_sessions()
        self.server.wait_for_sessions_closed()

    @rule()
    def prune(self) -> None:
        self.pool.prune()

    @precondition(lambda self: not self.closed)
    @rule()
    def fork_and_send_from_the_child(self) -> None:
        before = [s.bytes_received for s in self.server.sessions]

        def work() -> str:
            msg = make_message("from a child")
            self.pool.send_message(msg)
            assert self.pool.stats().size == 1
            return str(msg["Message-ID"])

        self.sent.append(in_child(work))
        after = [s.bytes_received for s in self.server.sessions[: len(before)]]
        assert after == before, "a child wrote to a session it inherited"

    @rule()
    def close(self) -> None:
        self.pool.close()
        self.closed = True

    # What must always hold

    @invariant()
    def bookkeeping_is_consistent(self) -> None:
        pool = self.pool
        with pool._lock:
            idle, sessions = list(pool._idle), set(pool._sessions)
            loans, size = set(pool._loans), pool._size
        lent = {loan.session for loan in loans if loan.session is not None}

        assert size <= MAX_SIZE
        assert size == len(sessions), "no session is being opened between steps"
        assert len(set(idle)) == len(idle)
        assert not set(idle) & lent, "a session is both idle and lent"
        assert set(idle) | lent <= sessions
        assert len(loans) == len(self.held)
        if self.closed:
            assert not idle

        stats = pool.stats()
        assert stats.idle + stats.in_use == stats.size
        assert stats.created - stats.closed.total == len(sessions)
        assert stats.waiting == 0

    @invariant()
    def commands_stay_in_sequence(self) -> None:
        assert_in_sequence(self.server)

    @invariant()
    def every_message_is_delivered_once(self) -> None:
        received = [m.message_id for m in self.server.messages]
        assert sorted(received) == sorted(self.sent)


PoolMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_pool_state_machine = pytest.mark.timeout(600)(PoolMachine.TestCase)
