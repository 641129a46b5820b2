"""The demo: the error this library exists for, and the pool that avoids it.

    python -m smtppool.testing.demo

Starts a local SMTP server that drops sessions left idle for about two seconds, as
providers and NATs do, then sends the same workload from several threads twice:
through one SMTPPool, and through one shared smtplib.SMTP kept open between sends.
Needs no network beyond localhost.
"""

from __future__ import annotations

import argparse
import collections
import email.message
import smtplib
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import attrs

from smtppool import PoolStats, SMTPPool

from ._server import SMTPTestServer

CLIENT_NAME = "demo.example.test"


@attrs.frozen
class Outcome:
    """What one way of sending achieved."""

    label: str
    sent: int
    received: int
    errors: collections.Counter[str]
    connections: int
    stats: PoolStats | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def build_message(n: int) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "app@example.test"
    msg["To"] = f"user{n}@example.test"
    msg["Subject"] = f"Your receipt #{n}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@example.test>"
    msg.set_content(f"Thank you for order {n}.\n")
    return msg


@attrs.frozen
class Workload:
    """Bursts of messages from several threads, with idle pauses between bursts."""

    threads: int
    rounds: int
    per_round: int
    pause: float


def run_workload(
    send: Callable[[email.message.EmailMessage], object],
    server: SMTPTestServer,
    workload: Workload,
) -> tuple[list[str], collections.Counter[str]]:
    """Send the bursts; return the Message-IDs sent and the errors seen."""
    message_ids: list[str] = []
    errors: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def worker(count: int, offset: int) -> None:
        for n in range(offset, offset + count):
            msg = build_message(n)
            try:
                send(msg)
            except (smtplib.SMTPException, OSError) as exc:
                with lock:
                    errors[f"{type(exc).__name__}: {exc}"] += 1
            with lock:
                message_ids.append(msg["Message-ID"])

    share = workload.per_round // workload.threads
    for round_number in range(workload.rounds):
        first = round_number * workload.per_round
        workers = [
            threading.Thread(target=worker, args=(share, first + i * share))
            for i in range(workload.threads)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()

        if round_number < workload.rounds - 1:
            # Longer than the server's idle timeout: every open session is dropped.
            time.sleep(workload.pause)
            server.wait_for_sessions_closed(timeout=workload.pause + 5)
    return message_ids, errors


def through_pool(server: SMTPTestServer, workload: Workload) -> Outcome:
    before = len(server.sessions)
    with SMTPPool(
        server.host,
        server.port,
        security="none",
        local_hostname=CLIENT_NAME,
        timeout=10,
        max_size=4,
        name="demo",
    ) as pool:
        ids, errors = run_workload(pool.send_message, server, workload)
    return tally("SMTPPool", server, before, ids, errors, stats=pool.stats())


def through_shared_smtp(server: SMTPTestServer, workload: Workload) -> Outcome:
    before = len(server.sessions)
    shared = smtplib.SMTP(server.host, server.port, CLIENT_NAME, timeout=10)
    lock = threading.Lock()  # the usual guard; it serialises, it does not heal

    def send(msg: email.message.EmailMessage) -> object:
        with lock:
            return shared.send_message(msg)

    ids, errors = run_workload(send, server, workload)
    shared.close()
    return tally("one shared smtplib.SMTP", server, before, ids, errors)


def tally(
    label: str,
    server: SMTPTestServer,
    sessions_before: int,
    message_ids: list[str],
    errors: collections.Counter[str],
    *,
    stats: PoolStats | None = None,
) -> Outcome:
    """Compare what was sent with what the server received."""
    return Outcome(
        label=label,
        sent=len(message_ids),
        received=sum(server.deliveries(i) for i in set(message_ids)),
        errors=errors,
        connections=len(server.sessions) - sessions_before,
        stats=stats,
    )


def report(outcomes: Sequence[Outcome], idle_timeout: float) -> str:
    pool = outcomes[0]
    width = max(len(o.label) for o in outcomes) + 2
    rows: list[tuple[str, Callable[[Outcome], object]]] = [
        ("messages sent", lambda o: o.sent),
        ("messages the server received", lambda o: o.received),
        ("errors", lambda o: o.error_count),
        ("connections opened", lambda o: o.connections),
    ]
    lines = [
        f"Server drops sessions idle for {idle_timeout:g} s; "
        "the workload pauses longer than that between bursts.",
        "",
        f"{'':<30}" + "".join(f"{o.label:>{width}}" for o in outcomes),
    ]
    lines += [
        f"{name:<30}" + "".join(f"{value(o)!s:>{width}}" for o in outcomes)
        for name, value in rows
    ]

    if pool.stats is not None:
        stats = pool.stats
        closed = stats.closed
        lines += [
            "",
            "SMTPPool connections:",
            f"  opened {stats.created}, reused {stats.reused} times, "
            f"NOOPs sent {stats.noops}",
            f"  closed: dropped by the server and caught before use "
            f"{closed.validation_failed}, idle {closed.idle}, lifetime "
            f"{closed.lifetime}, message limit {closed.messages}, broken "
            f"{closed.broken}, at pool close {closed.pool_closed}",
        ]

    for outcome in outcomes:
        if outcome.errors:
            lines += ["", f"Errors from {outcome.label}:"]
            lines += [
                f"  {count:>4} x {error}"
                for error, count in outcome.errors.most_common()
            ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smtppool.testing.demo",
        description="Send through SMTPPool and through one shared smtplib.SMTP.",
    )
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    args = parser.parse_args(argv)

    workload = Workload(
        threads=args.threads,
        rounds=args.rounds,
        per_round=args.per_round,
        pause=args.idle_timeout + 0.5,
    )
    with SMTPTestServer(idle_timeout=args.idle_timeout, idle_drop="silent") as server:
        print(f"SMTP test server on {server.host}:{server.port}", flush=True)
        pool = through_pool(server, workload)
        shared = through_shared_smtp(server, workload)

    print(report([pool, shared], args.idle_timeout))
    ok = pool.error_count == 0 and pool.received == pool.sent
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
