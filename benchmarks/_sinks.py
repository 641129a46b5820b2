"""The servers the contenders send to, each in a process of its own, so that
their CPU time and the GIL stay out of the clients' figures.

    python -m benchmarks._sinks [--tls DIR]

runs the smtppool test server (aiosmtpd): plain, or with ``--tls`` offering
STARTTLS and requiring AUTH, with a certificate from a trustme CA whose
certificate it writes to ``DIR/ca.pem``. Prints ``PORT <n>`` once it listens and
runs until its standard input closes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
from typing_extensions import Self

# Debian installs it in /usr/sbin, which is not on every user's PATH.
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
USERNAME = "bench"
PASSWORD = "bench-password"  # noqa: S105 - a throwaway login for a local test server

MISSING_SMTP_SINK = (
    "smtp-sink not found (Debian package postfix; run make bench-deps): "
    "using the Python test server for plain throughput"
)


@attrs.frozen
class Target:
    """Where and how a contender connects."""

    host: str
    port: int
    tls: bool = False
    ca_file: str | None = None

    @property
    def username(self) -> str | None:
        return USERNAME if self.tls else None

    @property
    def password(self) -> str | None:
        return PASSWORD if self.tls else None

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Target:
        return cls(fields["host"], fields["port"], fields["tls"], fields["ca_file"])

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self) | {
            "username": self.username,
            "password": self.password,
        }


class Child:
    """A helper process that listens on a port, ended when the block is left."""

    def __init__(self, argv: list[str], port: int | None = None) -> None:
        self.argv = argv
        self.port = port
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self.port is None:
            self.port = self._read_port()
        _wait_until_listening(self.port)
        return self

    def __exit__(self, *exc_info: object) -> None:
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _read_port(self) -> int:
        assert self._process is not None
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{self.argv[:3]} did not start: {line!r}")
        return int(line.split()[1])


def has_smtp_sink() -> bool:
    return os.access(SMTP_SINK, os.X_OK)


def smtp_sink() -> Child:
    """Postfix's smtp-sink on a free port; it advertises PIPELINING (``-p`` would
    turn that off) and, as of Postfix 3.7, never CHUNKING."""
    port = _free_port()
    # It refuses to run as root without -u; 256 is the listen backlog.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return Child([SMTP_SINK, *user, f"127.0.0.1:{port}", "256"], port)


def python_sink(tls_dir: Path | None = None) -> Child:
    """The smtppool test server; with ``tls_dir``, STARTTLS and AUTH required."""
    tls = ["--tls", str(tls_dir)] if tls_dir is not None else []
    return Child([sys.executable, "-m", "benchmarks._sinks", *tls])


def delay_proxy(port: int, rtt_ms: float) -> Child:
    to = f"127.0.0.1:{port}"
    return Child(
        [sys.executable, "-m", "benchmarks._proxy", "--to", to, "--rtt", str(rtt_ms)]
    )


def smtp_sink_version() -> str | None:
    """Postfix's version from dpkg, or None where smtp-sink is missing."""
    if not has_smtp_sink():
        return None
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return "present"
    result = subprocess.run(
        [dpkg, "-W", "-f", "${Version}", "postfix"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"postfix {result.stdout.strip()}" if result.returncode == 0 else "present"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


def _serve(tls_dir: Path | None) -> None:
    # Imported here so that the parent process never loads aiosmtpd or trustme.
    from smtppool.testing import SMTPTestServer  # noqa: PLC0415

    context = None
    auth = None
    if tls_dir is not None:
        import trustme  # noqa: PLC0415

        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        auth = (USERNAME, PASSWORD)

    # CHUNKING too, so that smtppool's chunking=True has something to use.
    server = SMTPTestServer(
        tls_context=context, auth=auth, require_auth=auth is not None, chunking=True
    )
    with server:
        print(f"PORT {server.port}", flush=True)
        sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls", type=Path, help="directory for ca.pem")
    _serve(parser.parse_args().tls)


if __name__ == "__main__":
    main()
