"""The contenders, as a registry: a variant is one more entry.

Each measurement runs in a fresh process (``benchmarks._worker`` for Python,
``node/bench.js`` for Nodemailer), so its CPU time is its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ._sinks import Target

NODE_DIR = Path(__file__).parent / "node"
WORKER_TIMEOUT = 300

# Messages each contender sends on every connection it keeps open before the
# clock starts, so that Python's first-call costs are behind it. They count
# towards max_messages on both pools alike. Node.js's JIT needs hundreds of
# messages to settle, so on loopback, where CPU is what is measured, the warm-up
# is as long as the timed run (see _scenarios.plan).
WARM_UP = 10


@attrs.frozen
class Sample:
    """One contender's run in one round."""

    rate: float  # messages per second
    latencies: tuple[float, ...]  # seconds per send
    cpu_per_message: float  # seconds
    errors: int
    first_error: str | None

    @classmethod
    def from_json(cls, result: dict[str, Any]) -> Sample:
        return cls(
            # Only what went out counts; the errors are reported beside it.
            rate=(result["messages"] - result["errors"]) / result["elapsed"],
            latencies=tuple(result["latencies"]),
            cpu_per_message=result["cpu"] / result["messages"],
            errors=result["errors"],
            first_error=result["first_error"],
        )

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)


@attrs.frozen
class Contender:
    name: str
    client: str  # a key of _clients.CLIENTS, or "node"
    options: dict[str, object] = attrs.field(factory=dict)
    # Returns why the contender cannot run here, or None when it can.
    missing: Callable[[], str | None] = lambda: None

    def run(self, target: Target, threads: int, messages: int, warm_up: int) -> Sample:
        job = {
            "job": "send",
            "client": self.client,
            "options": self.options,
            "target": target.to_dict(),
            "threads": threads,
            "messages": messages,
            "warm_up": warm_up,
        }
        if self.client == "node":
            argv = ["node", str(NODE_DIR / "bench.js"), json.dumps(job)]
        else:
            argv = worker_argv(job)
        return Sample.from_json(run_json(argv, target))


def worker_argv(job: dict[str, object]) -> list[str]:
    return [sys.executable, "-m", "benchmarks._worker", json.dumps(job)]


def run_json(argv: list[str], target: Target) -> dict[str, Any]:
    """Run a measuring process; return the JSON it printed last."""
    env = dict(os.environ)
    if target.ca_file is not None:
        # What makes Django's ssl.create_default_context() trust the test CA.
        env["SSL_CERT_FILE"] = target.ca_file
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=WORKER_TIMEOUT,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {last}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _not_installed(module: str, package: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        if importlib.util.find_spec(module) is not None:
            return None
        return f"{package} is not installed (make bench installs the dev extras)"

    return missing


def _no_nodemailer() -> str | None:
    """Check node and npm, installing the pinned Nodemailer on first use."""
    if shutil.which("node") is None:
        return "node not found: install Debian's nodejs and npm, then make bench-deps"
    if (NODE_DIR / "node_modules" / "nodemailer").is_dir():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found (Debian package npm): cannot install Nodemailer"
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"npm ci failed in {NODE_DIR}: {done.stderr.strip()[-200:]}"
    return None


SMTPPOOL = "smtppool"
PERSISTENT = "smtplib persistent"
DJANGO = "Django per message"
FLASK_MAIL = "Flask-Mail per message"
NODEMAILER = "Nodemailer pool"
CHUNKING = "smtppool (chunking)"

CONTENDERS = {
    c.name: c
    for c in (
        Contender(SMTPPOOL, "pooled"),
        Contender(CHUNKING, "pooled", {"chunking": True}),
        Contender(PERSISTENT, "persistent"),
        Contender(DJANGO, "django", missing=_not_installed("django", "Django")),
        Contender(
            FLASK_MAIL, "flask-mail", missing=_not_installed("flask_mail", "Flask-Mail")
        ),
        Contender(NODEMAILER, "node", missing=_no_nodemailer),
    )
}
