"""What ``smtppool check`` finds out about a server.

The check opens one session the way the pool does (the same settings, the same
TLS context, the same steps and error hints from ``_session``) and times each
step. The idle probe then holds a session and tries it after longer and longer
silences, to find how long the server keeps an idle session open.
"""

from __future__ import annotations

import contextlib
import math
import re
import select
import smtplib
import socket
import ssl
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import attrs

from . import _session
from ._config import PoolConfig
from ._smtp import StagedSMTP, StagedSMTP_SSL

# How many NOOPs the round-trip time is the median of.
ROUND_TRIPS = 5

# A recommended limit is this fraction of what the server was seen to allow, so
# that the pool closes a session itself before the server drops it.
MARGIN = 0.8

# Certificates expiring sooner than this are reported as a problem to fix soon.
EXPIRY_WARNING_DAYS = 14


class _Timed(StagedSMTP):
    """The pool's client, also keeping the greeting and how long the TCP (and,
    for implicit TLS, the TLS) connection took before it."""

    greeting: tuple[int, bytes] | None = None
    connected_in: float | None = None
    _started: float | None = None

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        self._started = time.perf_counter()
        self.greeting = super().connect(host, port, source_address)
        return self.greeting

    def getreply(self) -> tuple[int, bytes]:
        # The first reply read is the greeting: the connection is made by then.
        if self.connected_in is None and self._started is not None:
            self.connected_in = time.perf_counter() - self._started
        return super().getreply()


class _TimedSSL(_Timed, StagedSMTP_SSL):
    """The implicit-TLS counterpart of :class:`_Timed`."""


@attrs.define
class Certificate:
    """The parts of the server's certificate a person checks."""

    subject: str
    issuer: str
    names: list[str]
    expires: str
    days_left: int


@attrs.define
class TLS:
    """The encrypted channel: how it was made and what it runs."""

    version: str | None
    cipher: str | None
    seconds: float | None
    # Whether the context checked the certificate and the host name (the default
    # does; a handshake that got this far passed both).
    verified: bool
    certificate: Certificate | None


@attrs.define
class IdleProbe:
    """How long the server keeps a silent session, and the limits that follow."""

    # Silences the session survived, in seconds, in the order they were tried.
    survived: list[float] = attrs.field(factory=list)
    # The silence that ended the session, if one did, and how far into it the
    # server closed it, when it said so (a 421 or a close, not a silent drop).
    dropped_after: float | None = None
    dropped_at_silence: float | None = None
    # What ended the first session: "silence", or "age" when a session kept
    # busy was dropped at about the same age. ``dropped_at_age`` is the age the
    # busy one was dropped at, if it was: an age limit either way.
    cause: str | None = None
    dropped_at_age: float | None = None
    # The limits to set; max_idle is None when no silence was seen survived.
    max_idle: float | None = None
    max_lifetime: float | None = None
    # Whether it was stopped (Ctrl-C) before it finished.
    interrupted: bool = False


@attrs.define
class Report:
    """Everything the check found, in the order it found it."""

    host: str
    port: int
    security: str
    username: str | None
    ok: bool = False
    # The step that failed, and why, when ``ok`` is false.
    failed_step: str | None = None
    problem: str | None = None
    hint: str | None = None
    warnings: list[str] = attrs.field(factory=list)
    addresses: list[str] = attrs.field(factory=list)
    resolve_seconds: float | None = None
    # The name sent in EHLO, and how long working it out took (this machine's
    # own name lookup, slow where the name does not resolve).
    local_hostname: str | None = None
    local_hostname_seconds: float | None = None
    connect_seconds: float | None = None
    greeting: str | None = None
    greeting_seconds: float | None = None
    # EHLO's keywords and their parameters, as the session last saw them (after
    # STARTTLS when there is one); those seen before STARTTLS apart.
    extensions: dict[str, str] = attrs.field(factory=dict)
    # Whether the server answered EHLO (False: only HELO, so no extensions).
    esmtp: bool | None = None
    extensions_before_tls: dict[str, str] | None = None
    tls: TLS | None = None
    auth_mechanisms: list[str] = attrs.field(factory=list)
    # "ok", "refused" (535: wrong credentials), "failed" (any other reply or
    # error) or "not tried" (no username given, or an earlier failure).
    login: str = "not tried"
    # "password" or "oauth2" (AUTH XOAUTH2), when a login was asked for.
    login_with: str | None = None
    login_seconds: float | None = None
    round_trip_seconds: float | None = None
    idle_probe: IdleProbe | None = None


class _Failed(Exception):
    """Raised inside the check to stop at the first failed step."""


def check(report: Report, config: PoolConfig, context: ssl.SSLContext | None) -> None:
    """Open a session as the pool would, one timed step at a time, filling in
    ``report`` as it goes (so that an interrupted check still tells what it saw).

    ``context`` is the TLS context the pool would use (None for ``"none"``). Never
    raises for a failure of the server or the network: it is in the report.
    """
    with contextlib.suppress(_Failed):
        _run(report, config, context)


def _run(report: Report, config: PoolConfig, context: ssl.SSLContext | None) -> None:
    with _step(report, "resolve"):
        start = time.perf_counter()
        found = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
        report.resolve_seconds = time.perf_counter() - start
        report.addresses = list(dict.fromkeys(str(info[4][0]) for info in found))

    # The name for EHLO, which the pool works out once per process: outside the
    # connection's timing, where a slow lookup would pass for a slow server.
    start = time.perf_counter()
    report.local_hostname = config.local_hostname or _session.default_local_hostname()
    report.local_hostname_seconds = time.perf_counter() - start

    with _step(report, "connect"):
        start = time.perf_counter()
        # One of the two classes passed in.
        smtp = cast(
            "_Timed", _session._connect(config, context, plain=_Timed, tls=_TimedSSL)
        )
    try:
        _after_connect(report, smtp, config, context, time.perf_counter() - start)
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()

    report.ok = True
    _warn_about(report, config)


def _after_connect(
    report: Report,
    smtp: _Timed,
    config: PoolConfig,
    context: ssl.SSLContext | None,
    elapsed: float,
) -> None:
    report.connect_seconds = smtp.connected_in
    report.greeting_seconds = elapsed - (smtp.connected_in or 0.0)
    if smtp.greeting is not None:
        report.greeting = _text(smtp.greeting)
    if config.security == "ssl":
        # The handshake is part of the connection time: no time of its own.
        report.tls = _tls_of(smtp, context, None)

    with _step(report, "ehlo"):
        _session._greet(smtp)
    report.esmtp = bool(smtp.does_esmtp)
    report.extensions = _features(smtp)

    if config.security == "starttls":
        with _step(report, "starttls"):
            start = time.perf_counter()
            _session._starttls(smtp, config, context)
            report.tls = _tls_of(smtp, context, time.perf_counter() - start)
        with _step(report, "ehlo after starttls"):
            _session._greet(smtp)
        report.extensions_before_tls = report.extensions
        report.extensions = _features(smtp)

    report.auth_mechanisms = report.extensions.get("AUTH", "").upper().split()
    if config.username is not None:
        report.login_with = "password" if config.oauth_token is None else "oauth2"
        with _step(report, "login"):
            start = time.perf_counter()
            try:
                _session._login(smtp, config.username, config)
            except Exception as exc:
                # 535 is "these credentials are wrong" (RFC 4954 section 6).
                code = getattr(exc, "smtp_code", None)
                report.login = "refused" if code == 535 else "failed"
                raise
            report.login = "ok"
            report.login_seconds = time.perf_counter() - start

    with _step(report, "round trip"):
        times = []
        for _ in range(ROUND_TRIPS):
            start = time.perf_counter()
            code, reply = smtp.noop()
            if code != 250:
                raise smtplib.SMTPResponseException(code, reply)
            times.append(time.perf_counter() - start)
        report.round_trip_seconds = statistics.median(times)


@contextlib.contextmanager
def _step(report: Report, name: str) -> Iterator[None]:
    """Record the first failure of the check, with a hint, and stop there."""
    try:
        yield
    except Exception as exc:
        report.failed_step = name
        report.problem = describe(exc)
        report.hint = _hint(exc, report)
        raise _Failed from exc


def describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text((0, exc.smtp_error))}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"SSLCertVerificationError: {exc.verify_message}"
    return f"{type(exc).__name__}: {exc}"


def _hint(exc: BaseException, report: Report) -> str | None:
    """What to change for the common failures the pool's own errors do not
    already explain."""
    if isinstance(exc, socket.gaierror):
        return f"the name {report.host!r} does not resolve: check its spelling"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens on that port: check the host and the port"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate_hint(exc.verify_code, report.host)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _login_hint(exc.smtp_code, report.login_with)
    if isinstance(exc, smtplib.SMTPConnectError) and exc.smtp_code == 421:
        return (
            "the server turned this connection away for now (421); the pool tries "
            "again on its own (retries=), so run the check again"
        )
    return None


def _certificate_hint(code: int, host: str) -> str:
    if code in (9, 10):  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
        return (
            "the server's certificate is outside its dates: its administrator must "
            "renew it (or this machine's clock is wrong)"
        )
    if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_...
        return (
            f"the certificate is not for {host!r}: connect with a name (or "
            "address) the certificate holds"
        )
    return (
        "the certificate is not signed by an authority this machine trusts: for a "
        "private authority, pass --cafile (ssl_context= in the pool)"
    )


def _login_hint(code: int, login_with: str | None) -> str | None:
    if code == 535 and login_with == "oauth2":
        return (
            "the server refused the token: check that it is current and has the "
            "scope the provider asks for sending mail"
        )
    return _LOGIN_HINTS.get(code)


# Replies to AUTH that say what to change (RFC 4954 section 6).
_LOGIN_HINTS = {
    534: (
        "the server wants another way to log in: an app password, or OAuth2 "
        "(--oauth-token-env here, oauth_token= in the pool)"
    ),
    535: (
        "the server refused these credentials (the login itself is offered): check "
        "the user and password; providers that turned basic authentication off "
        "need an app password or OAuth2 (oauth_token=)"
    ),
}


def _warn_about(report: Report, config: PoolConfig) -> None:
    """What works today but deserves attention."""
    certificate = report.tls.certificate if report.tls is not None else None
    if certificate is not None and certificate.days_left < EXPIRY_WARNING_DAYS:
        report.warnings.append(
            f"the certificate expires in {certificate.days_left} days"
        )
    if config.security == "none":
        offered = "STARTTLS" in report.extensions
        report.warnings.append(
            "the session is not encrypted (security='none')"
            + ("; the server offers STARTTLS: use 'starttls'" if offered else "")
        )
    if "PIPELINING" not in report.extensions:
        report.warnings.append(
            "no PIPELINING: each message costs a round trip per command"
        )


def _features(smtp: StagedSMTP) -> dict[str, str]:
    """EHLO's keywords, upper case as RFC 5321 writes them, with their
    parameters (smtplib keeps both as the server sent them, spaces included)."""
    return {
        name.upper(): " ".join(value.split())
        for name, value in smtp.esmtp_features.items()
    }


def _tls_of(
    smtp: StagedSMTP, context: ssl.SSLContext | None, seconds: float | None
) -> TLS:
    sock = smtp.sock
    verified = context is not None and context.check_hostname
    if not isinstance(sock, ssl.SSLSocket):
        return TLS(None, None, seconds, verified, None)

    cipher = sock.cipher()
    return TLS(
        version=sock.version(),
        cipher=cipher[0] if cipher else None,
        seconds=seconds,
        verified=verified,
        certificate=_certificate(sock.getpeercert()),
    )


def _certificate(cert: Any) -> Certificate | None:
    """The parts of ``getpeercert()`` a person reads; it is empty when the
    context does not verify certificates."""
    if not cert:
        return None

    expires = ssl.cert_time_to_seconds(cert["notAfter"])
    return Certificate(
        subject=_name(cert.get("subject", ())),
        issuer=_name(cert.get("issuer", ())),
        # Host names and addresses: what the host-name check compares.
        names=[
            value
            for kind, value in cert.get("subjectAltName", ())
            if kind in ("DNS", "IP Address") and isinstance(value, str)
        ],
        expires=time.strftime("%Y-%m-%d", time.gmtime(expires)),
        days_left=math.floor((expires - time.time()) / 86400),
    )


def _name(rdns: Any) -> str:
    """``CN=smtp.example.com, O=Example`` from the nested tuples of ``ssl``."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
    }
    parts = [
        f"{short.get(key, key)}={_escaped(value)}" for rdn in rdns for key, value in rdn
    ]
    return ", ".join(parts)


def _escaped(value: str) -> str:
    """A value as RFC 4514 writes it in a name, so that a comma or an equals sign
    in it cannot pass for another part of the name."""
    return re.sub(r'([,+"\\<>;=])', r"\\\1", value)


def _text(reply: tuple[int, bytes | str]) -> str:
    code, text = reply
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = text.replace("\n", " ")
    return f"{code} {line}" if code else line


# The idle probe.


def probe_idle(
    config: PoolConfig,
    context: ssl.SSLContext | None,
    probe: IdleProbe,
    *,
    first: float = 1.0,
    longest: float = 60.0,
    progress: Callable[[str], None] = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Find how long the server keeps a silent session open, filling in ``probe``
    as it goes (so that an interrupted probe still tells what it saw).

    One session is left silent for ``first`` seconds, then tried with NOOP; while
    it is still open the silence doubles, up to ``longest``. When a silence ends
    it, a fresh session is kept busy (a NOOP every half of the longest silence
    survived) for a quarter longer than the first one lived: if the busy one is
    dropped too, the server limits a session's age, not its silence. Raises what
    opening a session raises.
    """
    # Ages count from before connecting, as the server's own clock would.
    opened = clock()
    session = _session.open_session(config, opened, config.name, context)
    silence = first
    try:
        while True:
            progress(f"silent for {silence:g} s ...")
            heard = _wait_silently(session, silence, clock)
            if heard is not None or not _still_open(session):
                probe.dropped_after = silence
                probe.dropped_at_silence = heard
                lived = clock() - opened
                progress(f"silent for {silence:g} s: dropped{_when(heard)}")
                break
            probe.survived.append(silence)
            progress(f"silent for {silence:g} s: still open")
            if silence >= longest:
                break
            silence = min(silence * 2, longest)
    finally:
        session.close(polite=True)

    if probe.dropped_after is not None:
        _tell_age_from_silence(
            config, context, probe, lived=lived, progress=progress, clock=clock
        )
    _recommend(probe, config)


def _tell_age_from_silence(
    config: PoolConfig,
    context: ssl.SSLContext | None,
    probe: IdleProbe,
    *,
    lived: float,
    progress: Callable[[str], None],
    clock: Callable[[], float],
) -> None:
    """Keep a fresh session busy for longer than the dropped one lived."""
    # A margin, so that an age limit the first session just reached is reached
    # by this one too, however the two were scheduled.
    busy_for = lived * 1.25 + 1.0
    shortest = probe.dropped_at_silence or probe.dropped_after or 1.0
    every = (probe.survived[-1] if probe.survived else shortest) / 2
    progress(f"a fresh session, busy for {busy_for:.1f} s ...")

    opened = clock()
    session = _session.open_session(config, opened, config.name, context)
    try:
        while (left := busy_for - (clock() - opened)) > 0:
            heard = _wait_silently(session, min(every, left), clock)
            if heard is not None or not _still_open(session):
                age = probe.dropped_at_age = clock() - opened
                # Dropped at about the age the first one was: an age limit. Much
                # older: the first one fell to silence, and this to a longer age
                # limit, which is reported as well.
                same_age = age <= lived + max(0.5, lived / 10)
                probe.cause = "age" if same_age else "silence"
                progress(f"a fresh session: dropped at age {age:.1f} s")
                return
    finally:
        session.close(polite=True)

    probe.cause = "silence"
    progress("a fresh session: still open, so the limit is on silence")


def _wait_silently(
    session: _session.Session, seconds: float, clock: Callable[[], float]
) -> float | None:
    """Wait without a byte to the server; return how far into the wait the server
    closed the session or spoke (a 421), or None if it did neither."""
    sock = session.smtp.sock
    if sock is None:
        return 0.0

    start = clock()
    while (remaining := seconds - (clock() - start)) > 0:
        readable, _, _ = select.select([sock], [], [], remaining)
        if readable:
            return clock() - start
    return None


def _still_open(session: _session.Session) -> bool:
    # A dropped session is readable (end of file, or a 421 nobody asked for);
    # NOOP confirms the rest, as a checkout after a long silence would.
    return not session.is_readable() and session.noop()


def _when(heard: float | None) -> str:
    return "" if heard is None else f" after {heard:.1f} s"


def _recommend(probe: IdleProbe, config: PoolConfig) -> None:
    """Limits below what the server allows, never above the pool's settings,
    which are its defaults unless the caller chose others (a server that keeps
    sessions for an hour does not make holding one for an hour a good idea)."""
    pool_idle = math.inf if config.max_idle is None else config.max_idle
    pool_lifetime = math.inf if config.max_lifetime is None else config.max_lifetime
    # The longest silence seen survived is safe as it is.
    safe_silence = probe.survived[-1] if probe.survived else None

    if probe.cause == "silence" and probe.dropped_at_silence is not None:
        # Seen to the moment: a margin below it.
        safe_silence = probe.dropped_at_silence * MARGIN
    if safe_silence is not None:
        probe.max_idle = _round_down(min(pool_idle, safe_silence))

    lifetime = pool_lifetime
    if probe.dropped_at_age is not None:
        lifetime = min(lifetime, probe.dropped_at_age * MARGIN)
    probe.max_lifetime = _round_down(lifetime)


def _round_down(seconds: float) -> float:
    """Whole seconds from 10 s up, tenths below."""
    if seconds >= 10:
        return float(math.floor(seconds))
    return math.floor(seconds * 10) / 10
