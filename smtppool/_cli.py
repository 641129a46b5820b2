"""The ``smtppool`` command: ``smtppool check HOST[:PORT]`` tells what a server
does and whether the pool's settings would work with it."""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import re
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

import attrs

from . import _check
from ._config import SECURITY_MODES, PoolConfig, default_security
from ._session import default_tls_context

# Exit statuses: the settings work; they do not (the report says why); the
# command line or the settings themselves are wrong.
OK, FAILED, USAGE = 0, 1, 2
# What a shell reports for a command ended by Ctrl-C (128 + SIGINT).
INTERRUPTED = 130

# An environment variable's name, as POSIX shells accept it.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The name of a variable, not a password.
PASSWORD_VARIABLE = "SMTPPOOL_PASSWORD"  # noqa: S105


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "check":
        parser.print_help()
        return USAGE

    try:
        config, context = _settings(args)
    except (ValueError, TypeError, OSError) as exc:
        if args.json:
            print(
                json.dumps(
                    {"ok": False, "failed_step": "settings", "problem": str(exc)}
                )
            )
        print(f"smtppool check: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:  # at the password prompt
        print(file=sys.stderr)
        return INTERRUPTED
    return _run_check(args, config, context)


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: "--password SECRET" must be an error, not taken for
    # "--password-env SECRET" and echoed back in the message about that variable.
    parser = _Parser(
        prog="smtppool", description="Tools for smtppool's users.", allow_abbrev=False
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser
    )
    check = commands.add_parser(
        "check",
        allow_abbrev=False,
        help="connect to a server the way the pool would, and report what it does",
        description=(
            "Connect to an SMTP server the way SMTPPool would, report each step, "
            "and exit with 0 if these settings would work. The password is read "
            f"from ${PASSWORD_VARIABLE} (or the variable --password-env names), "
            "or asked for; it is never an argument."
        ),
    )
    check.add_argument("target", metavar="HOST[:PORT]", help="port 587 if omitted")
    check.add_argument(
        "--security",
        choices=SECURITY_MODES,
        help="as SMTPPool's security=; 'ssl' on port 465, 'starttls' otherwise",
    )
    check.add_argument("--user", help="log in as this user")
    check.add_argument(
        "--password-env",
        metavar="NAME",
        default=PASSWORD_VARIABLE,
        help=f"the environment variable holding the password ({PASSWORD_VARIABLE})",
    )
    check.add_argument(
        "--password", nargs="?", action=_NoPassword, help=argparse.SUPPRESS
    )
    check.add_argument(
        "--oauth-token-env",
        metavar="NAME",
        help="log in with AUTH XOAUTH2, with the token in this variable",
    )
    check.add_argument(
        "--allow-unencrypted-auth",
        action="store_true",
        help="let --security none log in (a relay you trust on a network you trust)",
    )
    check.add_argument(
        "--cafile",
        help="trust the authorities in this PEM file instead of the system's",
    )
    check.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds per step (10)"
    )
    check.add_argument(
        "--local-hostname", help="the name to send in EHLO (looked up if omitted)"
    )
    check.add_argument(
        "--idle-probe",
        action="store_true",
        help="also measure how long the server keeps an idle session "
        "(takes up to about five times --probe-longest)",
    )
    check.add_argument(
        "--probe-first",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="the first silence the idle probe tries; it doubles from there (1)",
    )
    check.add_argument(
        "--probe-longest",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        # The pool's own max_idle: a longer silence could not change the advice.
        help="the longest silence the idle probe tries (60, the pool's max_idle)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, but an argument it does not know is not repeated: it may be a
    password typed after a misspelt option."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            message = "unrecognized arguments (not repeated here: one may be a secret)"
        super().error(message)


class _NoPassword(argparse.Action):
    """Refuse ``--password`` with a reason, and without echoing its value as
    argparse does for an argument it does not know."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "the password is never an argument (it would stay in the shell's "
            f"history and the process list): set ${PASSWORD_VARIABLE}, or leave "
            "it out to be asked for it"
        )


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0: {text}")
    return value


def _settings(args: argparse.Namespace) -> tuple[PoolConfig, ssl.SSLContext | None]:
    """The pool's settings from the command line, checked as the pool checks
    them, and only then the secret, from the environment or a prompt."""
    if args.probe_first > args.probe_longest:
        raise ValueError("--probe-first must be at most --probe-longest")
    host, port = _target(args.target)
    if port is None:
        port = 465 if args.security == "ssl" else 587
    security = args.security or default_security(port)
    _check_combinations(args, security)

    config = PoolConfig(
        host=host,
        port=port,
        security=security,
        username=args.user,
        # A stand-in, so that the settings are refused before anyone is asked
        # for a password they would not need.
        password=None if args.user is None else _not_yet,
        timeout=args.timeout,
        local_hostname=args.local_hostname,
        allow_unencrypted_auth=args.allow_unencrypted_auth,
        name=f"check {host}:{port}",
    )
    context = _context(security, args.cafile)

    if args.oauth_token_env is not None:
        config = attrs.evolve(
            config, password=None, oauth_token=_from_environment(args.oauth_token_env)
        )
    elif args.user is not None:
        config = attrs.evolve(config, password=_password(args.user, args.password_env))
    return config, context


def _context(security: str, cafile: str | None) -> ssl.SSLContext | None:
    """The pool's default TLS context, or one that trusts ``cafile`` instead."""
    if security == "none":
        return None
    if cafile is None:
        return default_tls_context()

    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"--cafile {cafile}: {reason}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _not_yet() -> str:
    raise AssertionError("a stand-in, replaced before any session opens")


def _check_combinations(args: argparse.Namespace, security: str) -> None:
    """Refuse options that would be ignored, or that need another one."""
    for option, variable in (
        ("--password-env", args.password_env),
        ("--oauth-token-env", args.oauth_token_env),
    ):
        # A secret typed where its variable's name belongs must not be echoed.
        if variable is not None and not _VARIABLE_NAME.fullmatch(variable):
            raise ValueError(f"{option} takes the name of an environment variable")
    if args.oauth_token_env is not None and args.user is None:
        raise ValueError("--oauth-token-env needs --user, the account to log in as")
    if args.cafile is not None and security == "none":
        raise ValueError("--cafile does nothing with --security none")
    if args.user is not None and security == "none" and not args.allow_unencrypted_auth:
        raise ValueError(
            "--user with --security none would send the password unencrypted: use "
            "--security starttls or ssl, or --allow-unencrypted-auth for a relay "
            "you trust on a network you trust"
        )


def _target(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"cannot read {text!r} as [ADDRESS]:PORT")
        return host, _port(rest[1:]) if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port)
    return text, None  # a name, or an IPv6 address without a port


def _port(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the port must be a number, got {text!r}")
    return int(text)


def _password(user: str, variable: str) -> str:
    password = os.environ.get(variable)
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise ValueError(
            f"no password for {user!r}: set ${variable}, or run in a terminal to "
            "be asked for it"
        )
    return getpass.getpass(f"Password for {user}: ")


def _from_environment(variable: str) -> Callable[[], str]:
    if variable not in os.environ:
        raise ValueError(
            f"the variable --oauth-token-env names, ${variable}, is not set"
        )
    return lambda: os.environ[variable]


def _run_check(
    args: argparse.Namespace, config: PoolConfig, context: ssl.SSLContext | None
) -> int:
    report = _check.Report(
        host=config.host,
        port=config.port,
        security=config.security,
        username=config.username,
    )
    status = OK
    try:
        _check.check(report, config, context)
        if report.ok and args.idle_probe:
            _probe(report, args, config, context)
    except KeyboardInterrupt:
        report.ok = False
        report.failed_step = report.failed_step or "interrupted"
        report.problem = "interrupted (Ctrl-C) before the check finished"
        if report.idle_probe is not None:
            report.idle_probe.interrupted = True
        status = INTERRUPTED

    if args.json:
        print(json.dumps(attrs.asdict(report), indent=2))
    else:
        print(render(report, _settings_call(args, config, report)))
    if status == INTERRUPTED:
        return status
    return OK if report.ok else FAILED


def _probe(
    report: _check.Report,
    args: argparse.Namespace,
    config: PoolConfig,
    context: ssl.SSLContext | None,
) -> None:
    probe = report.idle_probe = _check.IdleProbe()
    try:
        _check.probe_idle(
            config,
            context,
            probe,
            first=args.probe_first,
            longest=args.probe_longest,
            progress=_progress(sys.stderr),
        )
    except Exception as exc:  # the server or the network; say so, then stop
        report.ok = False
        report.failed_step = "idle probe"
        report.problem = _check.describe(exc)
        return

    if probe.max_idle is None:
        report.ok = False
        report.failed_step = "idle probe"
        report.problem = (
            f"the server dropped a session silent for {args.probe_first:g} s, the "
            "shortest silence tried: run again with a smaller --probe-first"
        )


def _settings_call(
    args: argparse.Namespace, config: PoolConfig, report: _check.Report
) -> str:
    """The SMTPPool(...) call with the settings that were checked."""
    settings = [repr(config.host), str(config.port), f"security={config.security!r}"]
    if args.cafile is not None:
        settings.append(
            f"ssl_context=ssl.create_default_context(cafile={args.cafile!r})"
        )
    if config.username is not None:
        secret = "oauth_token" if config.oauth_token is not None else "password"
        settings.append(f"username={config.username!r}, {secret}=...")
    if config.allow_unencrypted_auth:
        settings.append("allow_unencrypted_auth=True")
    if config.local_hostname is not None:
        settings.append(f"local_hostname={config.local_hostname!r}")
    probe = report.idle_probe
    if probe is not None and probe.max_idle is not None:
        settings.append(f"max_idle={probe.max_idle:g}")
    if probe is not None and probe.max_lifetime is not None:
        settings.append(f"max_lifetime={probe.max_lifetime:g}")
    return f"SMTPPool({', '.join(settings)})"


def _progress(stream: TextIO) -> Callable[[str], None]:
    def show(line: str) -> None:
        print(f"idle probe: {line}", file=stream, flush=True)

    return show


def render(report: _check.Report, settings: str) -> str:
    """The report as a table a person reads, ending with the verdict.

    What the server sent is shown with its control characters escaped: a reply
    holding terminal escapes must not be able to redraw the verdict.
    """
    rows: list[tuple[str, str]] = []
    add = rows.append

    address = f"[{report.host}]" if ":" in report.host else report.host
    add(("server", f"{address}:{report.port}, security={report.security!r}"))
    if report.addresses:
        add(("resolved", f"{', '.join(report.addresses)}{_ms(report.resolve_seconds)}"))
    if report.local_hostname is not None:
        add(
            (
                "EHLO name",
                f"{report.local_hostname}{_ms(report.local_hostname_seconds)}",
            )
        )
    if report.connect_seconds is not None:
        what = "connected (TCP and TLS)" if report.security == "ssl" else "connected"
        add((what, _ms(report.connect_seconds).strip(" ()")))
    if report.greeting is not None:
        add(("greeting", f"{report.greeting}{_ms(report.greeting_seconds)}"))
    if report.extensions_before_tls is not None:
        add(("before STARTTLS", _extensions(report.extensions_before_tls)))
    if report.esmtp is not None:
        add(("extensions", _extensions(report.extensions, esmtp=report.esmtp)))
    if report.tls is not None:
        rows.extend(_tls_rows(report.tls))
    if report.username is not None:
        login = f"{report.login} as {report.username}{_ms(report.login_seconds)}"
        add(("login", login))
    if report.round_trip_seconds is not None:
        add(("round trip", f"{_ms(report.round_trip_seconds).strip(' ()')} (NOOP)"))
    if report.idle_probe is not None:
        rows.extend(_probe_rows(report.idle_probe))

    width = max(len(label) for label, _ in rows)
    lines = [f"  {label:<{width}}  {_printable(value)}" for label, value in rows]
    lines += [f"  warning: {_printable(warning)}" for warning in report.warnings]
    lines.append("")
    lines.append(_verdict(report, settings))
    return "\n".join(lines)


def _verdict(report: _check.Report, settings: str) -> str:
    if report.ok:
        return f"OK: these settings work: {settings}"
    if report.failed_step == "interrupted":
        return "INTERRUPTED (Ctrl-C): the rows above are what was found until then"

    lines = [f"FAILED at {report.failed_step}: {_printable(report.problem or '')}"]
    if report.hint:
        lines.append(f"hint: {report.hint}")
    return "\n".join(lines)


def _printable(text: str) -> str:
    """Control characters (escape sequences among them) written as ``\\xNN``."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _tls_rows(tls: _check.TLS) -> list[tuple[str, str]]:
    rows = [("TLS", f"{tls.version} {tls.cipher}{_ms(tls.seconds)}")]
    if not tls.verified:
        rows.append(("certificate", "NOT verified (the context does not check it)"))
    certificate = tls.certificate
    if certificate is not None:
        rows.append(("certificate", certificate.subject))
        rows.append(("issued by", certificate.issuer))
        rows.append(
            ("expires", f"{certificate.expires} ({certificate.days_left} days)")
        )
        rows.append(("names", ", ".join(certificate.names)))
    if tls.verified:
        rows.append(("verified", "certificate and host name match"))
    return rows


def _probe_rows(probe: _check.IdleProbe) -> list[tuple[str, str]]:
    survived = ", ".join(f"{s:g} s" for s in probe.survived) or "none"
    rows = [("idle survived", survived)]
    if probe.dropped_after is None:
        never = "not before the interruption" if probe.interrupted else "never"
        rows.append(("idle dropped", f"{never}, within the silences tried"))
    else:
        when = probe.dropped_after
        if probe.dropped_at_silence is not None:
            when = round(probe.dropped_at_silence, 1)
        cause = {
            "silence": "the server limits silence",
            "age": "the server limits age: a session kept busy was dropped too",
        }.get(probe.cause or "", "interrupted before the cause was known")
        rows.append(("idle dropped", f"after {when:g} s of silence ({cause})"))
    if probe.dropped_at_age is not None:
        busy = f"{probe.dropped_at_age:.1f} s, a session kept busy"
        rows.append(("dropped at age", busy))
    if probe.interrupted:
        rows.append(("idle probe", "interrupted"))
    if probe.max_idle is not None:
        rows.append(("max_idle", f"{probe.max_idle:g} s (recommended)"))
    if probe.max_lifetime is not None:
        rows.append(("max_lifetime", f"{probe.max_lifetime:g} s (recommended)"))
    return rows


def _extensions(features: dict[str, str], *, esmtp: bool = True) -> str:
    words = [f"{name} {value}".strip() for name, value in features.items()]
    return ", ".join(words) or ("none" if esmtp else "none (HELO only)")


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f" ({seconds * 1000:.1f} ms)"
