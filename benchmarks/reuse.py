"""How much a pooled session saves over a new session per message.

    python benchmarks/reuse.py [--messages 200] [--rounds 5]

Sends the same messages, from one thread, to the local test server in three ways,
alternating them over several rounds: through an SMTPPool, through a new
smtplib.SMTP per message (what Django's backend and Flask-Mail's mail.send do), and
through one smtplib.SMTP kept open. Prints the median messages per second of each
and its ratio to the pool. The server is Python (aiosmtpd), so absolute figures say
more about it than about the clients; the ratios are the point. Needs the
``testing`` extra.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import time
from collections.abc import Callable

from smtppool import SMTPPool
from smtppool.testing import SMTPTestServer
from smtppool.testing.demo import build_message

CLIENT_NAME = "bench.example.test"


def per_message(server: SMTPTestServer) -> Callable[[int], None]:
    def send(count: int) -> None:
        for n in range(count):
            with smtplib.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
                smtp.send_message(build_message(n))

    return send


def kept_open(server: SMTPTestServer) -> Callable[[int], None]:
    def send(count: int) -> None:
        with smtplib.SMTP(server.host, server.port, CLIENT_NAME) as smtp:
            for n in range(count):
                smtp.send_message(build_message(n))

    return send


def pooled(server: SMTPTestServer) -> Callable[[int], None]:
    def send(count: int) -> None:
        with SMTPPool(
            server.host, server.port, security="none", local_hostname=CLIENT_NAME
        ) as pool:
            for n in range(count):
                pool.send_message(build_message(n))

    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with SMTPTestServer() as server:
        contenders = {
            "SMTPPool": pooled(server),
            "new smtplib.SMTP per message": per_message(server),
            "one smtplib.SMTP kept open": kept_open(server),
        }
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, send in contenders.items():
                started = time.perf_counter()
                send(args.messages)
                rates[name].append(args.messages / (time.perf_counter() - started))

    pool_rate = statistics.median(rates["SMTPPool"])
    print(f"{args.messages} messages x {args.rounds} rounds, one thread, localhost")
    print(f"{'':<32}{'msg/s (median)':>16}{'vs SMTPPool':>14}")
    for name, samples in rates.items():
        rate = statistics.median(samples)
        print(f"{name:<32}{rate:>16.0f}{rate / pool_rate:>13.2f}x")


if __name__ == "__main__":
    main()
