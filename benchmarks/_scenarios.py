"""Which scenarios a run measures, and running them with contenders alternating."""

from __future__ import annotations

import contextlib
import smtplib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from . import _sinks
from ._contenders import (
    CHUNKING,
    CONTENDERS,
    DJANGO,
    FLASK_MAIL,
    NODEMAILER,
    PERSISTENT,
    SMTPPOOL,
    WARM_UP,
    Sample,
    run_json,
    worker_argv,
)
from ._sinks import Child, Target

SECURE_THREADS = 4
PLAIN = (SMTPPOOL, PERSISTENT, NODEMAILER)
# Only the Python sink offers CHUNKING (smtp-sink 3.7 answers BDAT with 500), so
# smtppool's chunking=True is measured where that sink serves: STARTTLS+AUTH.
SECURE = (SMTPPOOL, CHUNKING, PERSISTENT, NODEMAILER, DJANGO, FLASK_MAIL)


@attrs.frozen
class Scenario:
    title: str
    secure: bool
    rtt: float  # milliseconds; 0 connects straight to the sink
    threads: int
    messages: int  # per run, over all threads
    warm_up: int  # messages per connection before the clock starts
    contenders: tuple[str, ...]


@attrs.frozen
class Settings:
    rounds: int
    loopback_messages: int  # per run
    per_thread: int  # messages per thread per run at 10 ms, scaled to other RTTs
    threads: tuple[int, ...]
    rtts: tuple[float, ...]
    only: tuple[str, ...]  # contender names; empty for all
    skip: frozenset[str]  # contenders that cannot run here


def plan(settings: Settings) -> list[Scenario]:
    """Loopback plain at each thread count; at each RTT, plain warm sessions at
    each thread count and STARTTLS+AUTH at four threads."""
    scenarios = []
    for rtt in settings.rtts:
        # Fewer messages at a longer RTT, so that every run takes about as long.
        per_thread = max(3, round(settings.per_thread * 10 / rtt)) if rtt else 0
        where = f"{rtt:g} ms RTT" if rtt else "loopback"
        for threads in settings.threads:
            messages = per_thread * threads or settings.loopback_messages
            warm_up = WARM_UP if rtt else max(WARM_UP, messages // threads)
            scenarios.append(
                Scenario(
                    f"{where}, plain, warm, {threads_label(threads)}",
                    False,
                    rtt,
                    threads,
                    messages,
                    warm_up,
                    _chosen(PLAIN, settings),
                )
            )
        if rtt:
            scenarios.append(
                Scenario(
                    f"{where}, STARTTLS+AUTH, {threads_label(SECURE_THREADS)}",
                    True,
                    rtt,
                    SECURE_THREADS,
                    per_thread * SECURE_THREADS,
                    WARM_UP,
                    _chosen(SECURE, settings),
                )
            )
    return scenarios


def threads_label(count: int) -> str:
    return "1 thread" if count == 1 else f"{count} threads"


def _chosen(names: tuple[str, ...], settings: Settings) -> tuple[str, ...]:
    # smtppool always runs: every ratio is to it.
    only = settings.only
    chosen = (n for n in names if not only or n in only or n == SMTPPOOL)
    return tuple(n for n in chosen if n not in settings.skip)


@attrs.frozen
class Outcome:
    scenario: Scenario
    samples: dict[str, list[Sample]]
    proxy_rtt: float | None  # a NOOP's round trip through the proxy, ms
    failures: dict[str, str]


def run(scenario: Scenario, rounds: int, sinks: Sinks) -> Outcome:
    """Run every contender once per round, in an order that rotates each round."""
    names = list(scenario.contenders)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    failures: dict[str, str] = {}
    with sinks.target(scenario.secure, scenario.rtt) as (target, proxy_rtt):
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                if name in failures:
                    continue
                try:
                    sample = CONTENDERS[name].run(
                        target, scenario.threads, scenario.messages, scenario.warm_up
                    )
                except Exception as error:  # reported in the table; the run goes on
                    failures[name] = str(error)
                    print(f"  {name}: failed: {error}", flush=True)
                    continue
                samples[name].append(sample)
                print(f"  {name}: {sample.rate:,.0f} msg/s", flush=True)
    return Outcome(scenario, samples, proxy_rtt, failures)


class Sinks:
    """Starts the sink (and delay proxy) a scenario needs, in subprocesses."""

    def __init__(self, tls_dir: Path) -> None:
        self.tls_dir = tls_dir
        self.use_smtp_sink = _sinks.has_smtp_sink()

    @contextlib.contextmanager
    def target(self, secure: bool, rtt: float) -> Iterator[tuple[Target, float | None]]:
        with self._sink(secure) as sink:
            assert sink.port is not None
            ca_file = str(self.tls_dir / "ca.pem") if secure else None
            if not rtt:
                yield Target("127.0.0.1", sink.port, secure, ca_file), None
                return
            with _sinks.delay_proxy(sink.port, rtt) as proxy:
                assert proxy.port is not None
                target = Target("127.0.0.1", proxy.port, secure, ca_file)
                yield target, _noop_rtt(proxy.port)

    def _sink(self, secure: bool) -> Child:
        if secure:
            return _sinks.python_sink(self.tls_dir)
        if self.use_smtp_sink:
            return _sinks.smtp_sink()
        return _sinks.python_sink()


def _noop_rtt(port: int, count: int = 20) -> float:
    """The median NOOP round trip through the proxy, in ms: the RTT it really adds."""
    with smtplib.SMTP("127.0.0.1", port, "bench.example.test") as smtp:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            smtp.noop()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@attrs.frozen
class Memory:
    secure: bool
    per_session: dict[str, float]  # bytes of RSS per idle session, median


@attrs.frozen
class Checkout:
    pool: float  # microseconds, median over rounds
    lifo: float


MEMORY_CLIENTS = {
    "smtppool (idle in the pool)": "pooled",
    "smtplib.SMTP objects (baseline)": "persistent",
}


def measure_memory(sinks: Sinks, rounds: int, sessions: int) -> list[Memory]:
    results = []
    for secure in (False, True):
        per_session: dict[str, list[float]] = {name: [] for name in MEMORY_CLIENTS}
        with sinks.target(secure, 0) as (target, _):
            for _ in range(rounds):
                for name, client in MEMORY_CLIENTS.items():
                    job = {
                        "job": "memory",
                        "client": client,
                        "sessions": sessions,
                        "target": target.to_dict(),
                    }
                    result = run_json(worker_argv(job), target)
                    per_session[name].append(result["per_session"])
        medians = {name: statistics.median(v) for name, v in per_session.items()}
        results.append(Memory(secure, medians))
    return results


def measure_checkout(sinks: Sinks, rounds: int, loops: int) -> Checkout:
    pool, lifo = [], []
    with sinks.target(False, 0) as (target, _):
        for _ in range(rounds):
            job = {
                "job": "checkout",
                "loops": loops,
                "batches": 5,
                "target": target.to_dict(),
            }
            result = run_json(worker_argv(job), target)
            pool.append(result["pool"])
            lifo.append(result["lifo"])
    return Checkout(statistics.median(pool), statistics.median(lifo))


@contextlib.contextmanager
def sinks_for_run() -> Iterator[Sinks]:
    with tempfile.TemporaryDirectory(prefix="smtppool-bench-") as tls_dir:
        yield Sinks(Path(tls_dir))
