"""Compare smtppool with smtplib, Django, Flask-Mail and Nodemailer.

    python -m benchmarks [--quick] [--rounds 5] [--threads 1,4,16] [--rtt 0,10,50]

Sinks, the delay proxy and every measurement run in processes of their own;
contenders alternate within each round. Writes a Markdown report to
benchmarks/results/ and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import _report, _scenarios, _sinks
from ._contenders import CONTENDERS, NODE_DIR, WARM_UP
from ._report import Run
from ._scenarios import Settings

RESULTS = Path(__file__).parent / "results"

METHOD = [
    "each contender sends the fields of `smtppool.testing.demo.build_message(n)` "
    "(From, To, Subject, one-line body, a new Message-ID), built per send; "
    "smtppool and smtplib send that `EmailMessage`, Django and Flask-Mail their own "
    "message class with the same fields, Nodemailer a message object with them",
    "every run is a fresh process; contenders alternate within each round, in an "
    "order rotated each round; medians over rounds",
    "`smtppool ÷ this` is smtppool's msg/s over the contender's: above 1 means "
    "smtppool is faster (median of the per-round ratios); msg/s counts only the "
    "messages that went out. A target met in some rounds and not in others is "
    "within noise",
    "warm: before the clock starts, smtppool, smtplib and Nodemailer open all "
    f"their connections (one per thread) and send {WARM_UP} messages on each, on "
    "loopback as many as the timed run (Node.js's JIT takes hundreds of messages "
    "to settle, and on loopback CPU is what is measured); these count towards "
    "max_messages on both pools. Django and Flask-Mail send one message, then "
    "open a new session for every message as they do in use",
    "smtppool uses its defaults (validate_after=1 s, max_messages=100); "
    "Nodemailer uses pool: true, maxConnections = threads, maxMessages = 100 "
    "(smtppool's default, so both recycle sessions equally often)",
    "TLS: smtppool, smtplib and Nodemailer verify against the run's trustme CA "
    "(an explicit context / `tls.ca`); Django through `SSL_CERT_FILE`, which "
    "its `ssl.create_default_context()` reads; Flask-Mail calls `starttls()` "
    "without a context and so verifies nothing",
    "EHLO name: smtppool, smtplib and Nodemailer say bench.example.test; Django "
    "says the machine's FQDN (looked up once), Flask-Mail too (smtplib looks it "
    "up every session)",
    "p50/p99: time per send call over all rounds; CPU: the client process's own "
    "user+system time while the clock runs (sinks and proxy excluded)",
    "RTT: an asyncio proxy in its own process holds each chunk rtt/2 in each "
    "direction, and connects to the sink 1.5 x rtt after accepting (TCP handshake)",
    "STARTTLS+AUTH sink: the smtppool test server (aiosmtpd, Python) in its own "
    "process, which advertises PIPELINING and CHUNKING; plain sink: Postfix's "
    "smtp-sink when present, which advertises PIPELINING and not CHUNKING. "
    "smtppool (chunking) is smtppool with chunking=True",
]


def main() -> None:
    args = _parse()
    started = time.monotonic()
    load_before = _load()
    date = datetime.date.today().isoformat()
    skipped = _skipped(args.only)
    for name, why in skipped.items():
        print(f"{name}: skipped: {why}", flush=True)
    if not _sinks.has_smtp_sink():
        print(_sinks.MISSING_SMTP_SINK, flush=True)

    settings = Settings(
        rounds=args.rounds,
        loopback_messages=args.messages,
        per_thread=args.per_thread,
        threads=args.threads,
        rtts=args.rtt,
        only=tuple(args.only),
        skip=frozenset(skipped),
    )
    outcomes, memory, checkout = [], [], None
    with _scenarios.sinks_for_run() as sinks:
        for scenario in _scenarios.plan(settings):
            print(f"{scenario.title}: {scenario.messages} messages", flush=True)
            outcomes.append(_scenarios.run(scenario, args.rounds, sinks))
        if not args.only:
            print("memory per idle session", flush=True)
            memory = _scenarios.measure_memory(sinks, 3, args.sessions)
            print("checkout and checkin", flush=True)
            checkout = _scenarios.measure_checkout(sinks, 3, 20_000)

    run = Run(
        date=date,
        command=shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        machine=_machine(load_before),
        method=METHOD,
        skipped=skipped,
        outcomes=outcomes,
        memory=memory,
        checkout=checkout,
        minutes=(time.monotonic() - started) / 60,
    )
    text = _report.render(run)
    path = args.output or _new_report_path(date, quick=args.quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print()
    print(text)
    print(f"written to {path}")


def _new_report_path(date: str, *, quick: bool) -> Path:
    """``<date>-<host>[-quick].md`` in the results folder, numbered rather than
    written over a report already there (the docs cite those by name)."""
    stem = f"{date}-{socket.gethostname()}{'-quick' if quick else ''}"
    path = RESULTS / f"{stem}.md"
    number = 2
    while path.exists():
        path = RESULTS / f"{stem}-{number}.md"
        number += 1
    return path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a run of about a minute")
    parser.add_argument("--rounds", type=int, help="default 5, 2 with --quick")
    parser.add_argument(
        "--messages", type=int, help="per loopback run (default 1500, 300 quick)"
    )
    parser.add_argument(
        "--per-thread",
        type=int,
        help="messages per thread per run at 10 ms RTT, fewer at longer RTTs "
        "(default 20, 8 quick)",
    )
    parser.add_argument(
        "--threads", type=_numbers, default=(1, 4, 16), help="default 1,4,16"
    )
    parser.add_argument("--rtt", type=_numbers, help="ms; default 0,10,50 (0,10 quick)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=list(CONTENDERS),
        metavar="NAME",
        help="run only these contenders (and smtppool); repeatable. One of: "
        + ", ".join(CONTENDERS),
    )
    parser.add_argument("--sessions", type=int, default=50, help="for memory")
    parser.add_argument("--output", type=Path, help="report path")
    args = parser.parse_args()

    quick = args.quick
    args.rounds = args.rounds or (2 if quick else 5)
    args.messages = args.messages or (300 if quick else 1500)
    args.per_thread = args.per_thread or (8 if quick else 20)
    args.rtt = args.rtt or ((0, 10) if quick else (0, 10, 50))
    return args


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _skipped(only: list[str]) -> dict[str, str]:
    skipped = {}
    for name, contender in CONTENDERS.items():
        if only and name not in only and name != "smtppool":
            continue
        why = contender.missing()
        if why is not None:
            skipped[name] = why
    return skipped


def _machine(load_before: str) -> dict[str, str]:
    node = shutil.which("node")
    return {
        "host": socket.gethostname(),
        "CPU": f"{_cpu_model()}, {os.cpu_count()} cores",
        "load average (1, 5, 15 min)": f"{load_before} before, {_load()} after",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "smtppool": _smtppool_version(),
        "node": _output([node, "--version"]) if node else "not found",
        "Nodemailer": _nodemailer_version() if node else "not run",
        "smtp-sink": _sinks.smtp_sink_version() or "not found (Python server used)",
    }


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _smtppool_version() -> str:
    """The version, commit, and whether smtppool/ differs from that commit."""
    version = importlib.metadata.version("smtppool")
    commit = _output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    changed = _output(["git", "status", "--porcelain", "--", "smtppool"])
    return f"{version} at commit {commit}" + (" + local changes" if changed else "")


def _nodemailer_version() -> str:
    package = NODE_DIR / "node_modules" / "nodemailer" / "package.json"
    if not package.exists():
        return "not installed"
    return str(json.loads(package.read_text())["version"])


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return done.stdout.strip()


if __name__ == "__main__":
    main()
