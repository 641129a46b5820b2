"""`smtppool check` against local servers: what it reports, and its exit status."""

from __future__ import annotations

import datetime
import io
import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from smtppool import _check, _cli
from smtppool.testing import SMTPTestServer

from .conftest import SECRETS

PASSWORD = SECRETS[0]

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run ``smtppool check`` in this process; return its status, stdout, stderr.

    The password goes through the environment, as a user's would.
    """
    monkeypatch.setenv(_cli.PASSWORD_VARIABLE, PASSWORD)

    def check(
        server: SMTPTestServer, *args: str, host: str = "localhost"
    ) -> tuple[int, str, str]:
        status = _cli.main(
            [
                "check",
                f"{host}:{server.port}",
                "--local-hostname",
                "client.test",
                *args,
            ]
        )
        out, err = capsys.readouterr()
        assert PASSWORD not in out + err
        return status, out, err

    return check


def row(out: str, label: str) -> str:
    """The value of one row of the table."""
    for line in out.splitlines():
        name, _, value = line.strip().partition("  ")
        if name == label:
            return value.strip()
    raise AssertionError(f"no {label!r} row in:\n{out}")


def test_plain_server(smtp_server: SMTPTestServer, run: Run) -> None:
    """Without TLS: the greeting, the extensions and the round trip, then QUIT."""
    status, out, _ = run(smtp_server, "--security", "none")

    assert status == _cli.OK
    assert row(out, "resolved").startswith("127.0.0.1")
    assert row(out, "greeting").startswith("220 smtppool.test")
    assert "PIPELINING" in row(out, "extensions")
    assert row(out, "round trip").endswith("ms (NOOP)")
    assert row(out, "EHLO name").startswith("client.test (")
    assert "warning: the session is not encrypted (security='none')\n" in out
    assert out.rstrip().endswith(
        f"OK: these settings work: SMTPPool('localhost', {smtp_server.port}, "
        "security='none', local_hostname='client.test')"
    )
    (session,) = smtp_server.sessions
    assert session.commands == ("EHLO",) + ("NOOP",) * 5 + ("QUIT",)


def test_starttls_and_login(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
) -> None:
    """The extensions before and after STARTTLS, the TLS version, the certificate
    verified against the given authority, and a login that works."""
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))

    status, out, _ = run(server, "--user", "app", "--cafile", ca_file)

    assert status == _cli.OK, out
    assert "AUTH" not in row(out, "before STARTTLS")
    assert "AUTH LOGIN PLAIN" in row(out, "extensions")
    assert row(out, "TLS").startswith("TLSv1.")
    assert row(out, "names") == "127.0.0.1, localhost"
    assert row(out, "verified") == "certificate and host name match"
    assert row(out, "login").startswith("ok as app")
    assert (
        f"SMTPPool('localhost', {server.port}, security='starttls', "
        f"ssl_context=ssl.create_default_context(cafile={ca_file!r}), "
        "username='app', password=..., local_hostname='client.test')"
    ) in out
    (session,) = server.sessions
    assert session.tls
    assert session.authenticated_as == "app"
    assert session.commands[:4] == ("EHLO", "STARTTLS", "EHLO", "AUTH")


def test_implicit_tls(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
) -> None:
    server = smtp_server_factory(tls_context=server_context, implicit_tls=True)

    status, out, _ = run(server, "--security", "ssl", "--cafile", ca_file)

    assert status == _cli.OK, out
    assert row(out, "connected (TCP and TLS)").endswith("ms")
    assert row(out, "TLS").startswith("TLSv1.")
    (session,) = server.sessions
    assert session.tls


def test_refused_login(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """535: the credentials, not the server, and the exit status says so."""
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))
    monkeypatch.setenv("OTHER_PASSWORD", SECRETS[1])

    status, out, err = run(
        server, "--user", "app", "--cafile", ca_file, "--password-env", "OTHER_PASSWORD"
    )

    assert status == _cli.FAILED
    assert "FAILED at login: SMTPAuthenticationError: 535" in out
    assert "hint: the server refused these credentials" in out
    assert SECRETS[1] not in out + err
    assert server.sessions[0].authenticated_as is None


def test_oauth2_token_from_the_environment(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = SECRETS[1]
    server = smtp_server_factory(
        tls_context=server_context,
        auth=("app", PASSWORD),
        xoauth2=lambda user, given: (user, given) == ("app", token),
    )
    monkeypatch.setenv("TOKEN", token)

    status, out, err = run(
        server, "--user", "app", "--oauth-token-env", "TOKEN", "--cafile", ca_file
    )

    assert status == _cli.OK, out
    assert "XOAUTH2" in row(out, "extensions")
    assert row(out, "login").startswith("ok as app")
    assert "username='app', oauth_token=..." in out
    assert token not in out + err
    assert server.sessions[0].authenticated_as == "app"


def test_a_refused_token(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = smtp_server_factory(
        tls_context=server_context, xoauth2=lambda user, given: False
    )
    monkeypatch.setenv("TOKEN", SECRETS[1])

    status, out, _ = run(
        server, "--user", "app", "--oauth-token-env", "TOKEN", "--cafile", ca_file
    )

    assert status == _cli.FAILED
    assert row(out, "login").startswith("refused as app")
    assert "hint: the server refused the token" in out


def test_server_without_auth(smtp_server: SMTPTestServer, run: Run) -> None:
    """A server that offers no AUTH at all is told apart from refused credentials."""
    smtp_server.on("EHLO", "250 smtppool.test")

    status, out, _ = run(
        smtp_server, "--security", "none", "--user", "app", "--allow-unencrypted-auth"
    )

    assert status == _cli.FAILED
    assert "FAILED at login: SMTPNotSupportedError:" in out
    assert "does not offer AUTH: leave out the username" in out
    assert row(out, "login") == "failed as app"
    assert row(out, "extensions") == "none"
    assert "AUTH" not in smtp_server.sessions[0].commands


def test_clear_text_where_starttls_is_offered(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    run: Run,
) -> None:
    server = smtp_server_factory(tls_context=server_context)

    status, out, _ = run(server, "--security", "none")

    assert status == _cli.OK
    assert "the server offers STARTTLS: use 'starttls'" in out


def refuse_at_greeting(server: SMTPTestServer) -> None:
    server.on("CONNECT", "554 5.7.1 no service for you")


def turn_away(server: SMTPTestServer) -> None:
    server.on("CONNECT", "421 4.7.0 too many connections", close=True)


@pytest.mark.parametrize(
    ("prepare", "security", "expected"),
    [
        (
            None,
            "starttls",
            [
                "FAILED at starttls: SMTPNotSupportedError:",
                "does not offer STARTTLS",
            ],
        ),
        (
            None,
            "ssl",
            ["FAILED at connect: SSLError:", "use security='starttls'"],
        ),
        (
            refuse_at_greeting,
            "none",
            ["FAILED at connect: SMTPConnectError: 554 5.7.1 no service for you"],
        ),
        (
            SMTPTestServer.stop,
            "none",
            [
                "FAILED at connect: ConnectionRefusedError",
                "hint: nothing listens on that port",
            ],
        ),
        (
            turn_away,
            "none",
            [
                "FAILED at connect: SMTPConnectError: 421",
                "hint: the server turned this connection away for now (421)",
            ],
        ),
    ],
    ids=[
        "starttls not offered",
        "ssl on a plain port",
        "greeting 554",
        "no server",
        "greeting 421",
    ],
)
def test_failures_of_a_plain_server(
    smtp_server: SMTPTestServer,
    run: Run,
    prepare: Callable[[SMTPTestServer], None] | None,
    security: str,
    expected: list[str],
) -> None:
    if prepare is not None:
        prepare(smtp_server)

    status, out, _ = run(smtp_server, "--security", security)

    assert status == _cli.FAILED
    for line in expected:
        assert line in out


def test_starttls_against_an_implicit_tls_port(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    run: Run,
) -> None:
    """The greeting never comes: the hint arrives once the timeout has passed."""
    server = smtp_server_factory(tls_context=server_context, implicit_tls=True)

    started = time.monotonic()
    status, out, _ = run(server, "--security", "starttls", "--timeout", "1")
    elapsed = time.monotonic() - started

    assert status == _cli.FAILED
    assert "FAILED at connect: TimeoutError: no greeting within 1 s" in out
    assert "use security='ssl'" in out
    assert 1 <= elapsed < 3


def test_untrusted_certificate(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    run: Run,
) -> None:
    """The system's authorities do not know the test one: stop before any AUTH."""
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))

    status, out, _ = run(server, "--user", "app")

    assert status == _cli.FAILED
    assert "FAILED at starttls: SSLCertVerificationError:" in out
    assert "pass --cafile" in out
    server.wait_for_sessions_closed()
    assert "AUTH" not in server.sessions[0].commands


EXPIRED = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    "case",
    [
        (
            "mail.example.org",
            {},
            "localhost",
            [
                "FAILED at starttls: SSLCertVerificationError: Hostname mismatch",
                "hint: the certificate is not for 'localhost'",
            ],
        ),
        (
            "localhost",
            {},
            "127.0.0.1",
            [
                "SSLCertVerificationError: IP address mismatch",
                "hint: the certificate is not for '127.0.0.1'",
            ],
        ),
        (
            "localhost",
            {"not_after": EXPIRED},
            "localhost",
            [
                "SSLCertVerificationError: certificate has expired",
                "hint: the server's certificate is outside its dates",
            ],
        ),
    ],
    ids=["another host", "not the address", "expired"],
)
def test_certificates_that_fail(
    smtp_server_factory: Callable[..., SMTPTestServer],
    ca: trustme.CA,
    ca_file: str,
    run: Run,
    case: tuple[str, dict[str, Any], str, list[str]],
) -> None:
    """Each with a hint that fits it, though the authority is trusted."""
    name, issued, host, expected = case
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name, **issued).configure_cert(context)
    server = smtp_server_factory(tls_context=context)

    status, out, _ = run(server, "--cafile", ca_file, host=host)

    assert status == _cli.FAILED
    for line in expected:
        assert line in out


def test_json_shape(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
) -> None:
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))

    status, out, _ = run(server, "--user", "app", "--cafile", ca_file, "--json")

    assert status == _cli.OK
    report = json.loads(out)
    assert report["ok"] is True
    assert report["failed_step"] is None
    assert (report["host"], report["port"]) == ("localhost", server.port)
    assert report["security"] == "starttls"
    assert report["addresses"] == ["127.0.0.1"]
    assert report["greeting"].startswith("220 ")
    assert "STARTTLS" in report["extensions_before_tls"]
    assert report["extensions"]["SIZE"].isdigit()
    assert report["auth_mechanisms"] == ["LOGIN", "PLAIN"]
    assert report["login"] == "ok"
    assert report["tls"]["version"].startswith("TLSv1.")
    assert report["tls"]["verified"] is True
    assert report["tls"]["certificate"]["names"] == ["127.0.0.1", "localhost"]
    assert report["tls"]["certificate"]["days_left"] > 0
    for key in ("resolve_seconds", "connect_seconds", "round_trip_seconds"):
        assert 0 < report[key] < 5
    assert report["idle_probe"] is None


def test_json_of_a_failure(smtp_server: SMTPTestServer, run: Run) -> None:
    status, out, _ = run(smtp_server, "--json")

    assert status == _cli.FAILED
    report = json.loads(out)
    assert report["ok"] is False
    assert report["failed_step"] == "starttls"
    assert "does not offer STARTTLS" in report["problem"]
    assert report["tls"] is None


@pytest.mark.slow
def test_idle_probe(
    smtp_server_factory: Callable[..., SMTPTestServer], run: Run
) -> None:
    """A server that drops sessions silent for 2 s: 0.6 and 1.2 s survive, 2.4 s
    do not, the server is heard closing at 2 s, a fresh session kept busy for
    longer lives, and the advice stays below 2 s. Each silence is 0.4 s or more
    away from the timeout, so a slow machine cannot change the outcome."""
    server = smtp_server_factory(idle_timeout=2, idle_drop="421")

    status, out, err = run(
        server, "--security", "none", "--idle-probe", "--probe-first", "0.6", "--json"
    )

    assert status == _cli.OK
    probe = json.loads(out)["idle_probe"]
    assert probe["survived"] == [0.6, 1.2]
    assert probe["dropped_after"] == 2.4
    assert 2.0 <= probe["dropped_at_silence"] < 2.4
    assert probe["cause"] == "silence"
    assert probe["dropped_at_age"] is None
    assert probe["max_idle"] == 1.6  # 80 % of 2 s, in tenths, rounded down
    assert probe["max_lifetime"] == 600
    lines = err.splitlines()
    assert lines[:5] == [
        "idle probe: silent for 0.6 s ...",
        "idle probe: silent for 0.6 s: still open",
        "idle probe: silent for 1.2 s ...",
        "idle probe: silent for 1.2 s: still open",
        "idle probe: silent for 2.4 s ...",
    ]
    assert lines[5].startswith("idle probe: silent for 2.4 s: dropped after 2.")
    assert lines[6].startswith("idle probe: a fresh session, busy for ")
    assert (
        lines[7]
        == "idle probe: a fresh session: still open, so the limit is on silence"
    )
    # The check's session, the probed one and the busy one.
    assert len(server.sessions) == 3


@pytest.mark.slow
def test_idle_probe_tells_an_age_limit_from_an_idle_one(
    smtp_server_factory: Callable[..., SMTPTestServer], run: Run
) -> None:
    """A server that drops every session 3 s after it opens, however busy: the
    first session dies 1.5 s into a silence of 2 s, and a fresh one kept busy
    dies at 3 s too. Advice: a lifetime below 3 s; silences of 1 s are safe."""
    server = smtp_server_factory(max_session_age=3, idle_drop="421")

    status, out, _ = run(
        server, "--security", "none", "--idle-probe", "--probe-first", "0.5"
    )

    assert status == _cli.OK, out
    assert row(out, "idle survived") == "0.5 s, 1 s"
    assert "the server limits age" in row(out, "idle dropped")
    assert 3.0 <= float(row(out, "dropped at age").split()[0]) < 3.5
    assert row(out, "max_idle") == "1 s (recommended)"
    assert row(out, "max_lifetime") == "2.4 s (recommended)"
    assert "max_idle=1, max_lifetime=2.4)" in out


@pytest.mark.slow
def test_idle_probe_table(
    smtp_server_factory: Callable[..., SMTPTestServer], run: Run
) -> None:
    """A server that never drops a silent session within the silences tried:
    the longest one tried, --probe-longest itself, is what is known safe."""
    server = smtp_server_factory()

    status, out, _ = run(
        server,
        "--security",
        "none",
        "--idle-probe",
        "--probe-first",
        "0.2",
        "--probe-longest",
        "0.5",
    )

    assert status == _cli.OK
    assert row(out, "idle survived") == "0.2 s, 0.4 s, 0.5 s"
    assert row(out, "idle dropped") == "never, within the silences tried"
    assert row(out, "max_idle") == "0.5 s (recommended)"
    assert "max_idle=0.5, max_lifetime=600)" in out


def test_idle_probe_that_learns_nothing_fails(
    smtp_server: SMTPTestServer, run: Run
) -> None:
    """Every session dropped at its first NOOP after the check's own five: no
    silence is known safe, so there is no max_idle to recommend."""
    smtp_server.on("NOOP", drop=True, after=5)

    status, out, _ = run(
        smtp_server, "--security", "none", "--idle-probe", "--probe-first", "0.1"
    )

    assert status == _cli.FAILED
    assert "FAILED at idle probe: the server dropped a session silent for 0.1 s" in out
    assert "run again with a smaller --probe-first" in out


@pytest.mark.slow
def test_ctrl_c_during_the_idle_probe(smtp_server: SMTPTestServer) -> None:
    """The report so far, as JSON, the probe marked interrupted, no traceback,
    status 130, and the probed session closed."""
    command = [sys.executable, "-m", "smtppool", "check"]
    target = f"127.0.0.1:{smtp_server.port}"
    with subprocess.Popen(  # noqa: S603 - our own command line
        [*command, target, "--security", "none", "--json", "--idle-probe"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as checking:
        assert checking.stderr is not None
        assert checking.stderr.readline() == "idle probe: silent for 1 s ...\n"
        checking.send_signal(signal.SIGINT)
        out, err = checking.communicate(timeout=30)

    assert checking.returncode == _cli.INTERRUPTED
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["ok"] is False
    assert report["failed_step"] == "interrupted"
    assert report["idle_probe"]["interrupted"] is True
    assert report["greeting"].startswith("220 ")
    smtp_server.wait_for_sessions_closed()
    assert [s.commands[-1] for s in smtp_server.sessions] == ["QUIT", "QUIT"]


def test_password_is_never_an_argument(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not even as an abbreviation of --password-env, which would echo it."""
    with pytest.raises(SystemExit) as exited:
        _cli.main(["check", "localhost", "--user", "app", "--password", PASSWORD])

    assert exited.value.code == _cli.USAGE
    err = capsys.readouterr().err
    assert "the password is never an argument" in err
    assert PASSWORD not in err
    assert smtp_server.sessions == []


def test_no_password_and_no_terminal(
    smtp_server: SMTPTestServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(_cli.PASSWORD_VARIABLE, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal

    status = _cli.main(["check", f"localhost:{smtp_server.port}", "--user", "app"])

    assert status == _cli.USAGE
    assert "set $SMTPPOOL_PASSWORD" in capsys.readouterr().err
    assert smtp_server.sessions == []


def test_clear_text_login_needs_the_opt_in(
    smtp_server_factory: Callable[..., SMTPTestServer],
    run: Run,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = smtp_server_factory(auth=("app", PASSWORD))

    status, _, err = run(server, "--security", "none", "--user", "app")
    assert status == _cli.USAGE
    assert "or --allow-unencrypted-auth for a relay you trust" in err
    assert server.sessions == []

    status, out, _ = run(
        server, "--security", "none", "--user", "app", "--allow-unencrypted-auth"
    )
    assert status == _cli.OK, out
    assert server.sessions[0].authenticated_as == "app"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--probe-first", "5", "--probe-longest", "1"], "--probe-first must be at"),
        (["--oauth-token-env", "TOKEN"], "--oauth-token-env needs --user"),
        (["--cafile", "ca.pem", "--security", "none"], "--cafile does nothing"),
        # A secret typed where the variable's name belongs is not repeated.
        (["--user", "u", "--oauth-token-env", SECRETS[1]], "the name of an environ"),
        (["--user", "u", "--password-env", SECRETS[1]], "the name of an environment"),
    ],
)
def test_bad_option_combinations(
    smtp_server: SMTPTestServer,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    status = _cli.main(["check", f"localhost:{smtp_server.port}", "--json", *args])

    assert status == _cli.USAGE
    out, err = capsys.readouterr()
    assert message in err
    assert json.loads(out)["failed_step"] == "settings"
    assert SECRETS[1] not in out + err
    assert smtp_server.sessions == []


def test_a_missing_ca_file_is_named_before_any_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_cli.PASSWORD_VARIABLE, raising=False)

    status = _cli.main(
        ["check", "localhost", "--user", "app", "--cafile", "/nonexistent/ca.pem"]
    )

    assert status == _cli.USAGE
    assert "--cafile /nonexistent/ca.pem: No such file" in capsys.readouterr().err


def test_an_unknown_argument_is_not_repeated(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It may be a password after a misspelt option."""
    with pytest.raises(SystemExit) as exited:
        _cli.main(["check", "localhost", "--passw", SECRETS[1]])

    assert exited.value.code == _cli.USAGE
    err = capsys.readouterr().err
    assert "unrecognized arguments (not repeated here" in err
    assert SECRETS[1] not in err


@pytest.mark.parametrize("seconds", ["0", "-1", "inf", "nan"])
def test_times_must_be_finite_and_positive(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli.main(["check", "localhost", "--timeout", seconds])

    assert exited.value.code == _cli.USAGE
    assert "must be a number of seconds above 0" in capsys.readouterr().err


def test_server_text_cannot_rewrite_the_verdict(
    smtp_server: SMTPTestServer, run: Run
) -> None:
    """A reply holding terminal escapes is shown escaped."""
    smtp_server.on("EHLO", "550 denied\r\x1b[2KOK: these settings work")
    smtp_server.on("HELO", "550 denied\x1b[2J")

    status, out, _ = run(smtp_server, "--security", "none")

    assert status == _cli.FAILED
    assert "\x1b" not in out
    assert "FAILED at ehlo: SMTPHeloError: 550 denied\\x1b[2J" in out


def test_helo_only(smtp_server: SMTPTestServer, run: Run) -> None:
    smtp_server.on("EHLO", "502 5.5.2 not here")

    status, out, _ = run(smtp_server, "--security", "none")

    assert status == _cli.OK
    assert row(out, "extensions") == "none (HELO only)"


def test_a_refusal_that_is_not_about_credentials(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
) -> None:
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))
    server.on("AUTH", "454 4.7.0 Temporary authentication failure")

    status, out, _ = run(server, "--user", "app", "--cafile", ca_file)

    assert status == _cli.FAILED
    assert row(out, "login") == "failed as app"
    assert "FAILED at login: SMTPAuthenticationError: 454" in out
    assert "hint:" not in out


def test_idle_probe_sees_an_idle_limit_and_a_longer_age_limit(
    smtp_server_factory: Callable[..., SMTPTestServer], run: Run
) -> None:
    """Silence ends the first session 1.5 s into a silence, when it is 3 s old;
    the busy one lives past that and is dropped at 4.5 s, its age limit."""
    server = smtp_server_factory(idle_timeout=1.5, max_session_age=4.5, idle_drop="421")

    status, out, _ = run(
        server, "--security", "none", "--idle-probe", "--probe-first", "0.5"
    )

    assert status == _cli.OK, out
    assert row(out, "idle dropped") == (
        "after 1.5 s of silence (the server limits silence)"
    )
    assert row(out, "dropped at age").startswith("4.5 s, a session kept busy")
    assert row(out, "max_idle") == "1.2 s (recommended)"
    assert row(out, "max_lifetime") == "3.6 s (recommended)"


def test_only_host_names_and_addresses_are_listed_as_names() -> None:
    """A certificate's other alternative names (a directory name, an email
    address) are not what the host name is checked against."""
    certificate = _check._certificate(
        {
            "subject": ((("commonName", "mail.example.test"),),),
            "issuer": ((("organizationName", "Example, Inc."),),),
            "notAfter": "Jan  1 00:00:00 3000 GMT",
            "subjectAltName": (
                ("DNS", "mail.example.test"),
                ("DirName", ((("commonName", "x"),),)),
                ("email", "admin@example.test"),
                ("IP Address", "192.0.2.1"),
            ),
        }
    )

    assert certificate is not None
    assert certificate.names == ["mail.example.test", "192.0.2.1"]
    assert certificate.subject == "CN=mail.example.test"
    assert certificate.issuer == "O=Example\\, Inc."


def test_an_ipv6_server(
    smtp_server_factory: Callable[..., SMTPTestServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = smtp_server_factory(host="::1")

    status = _cli.main(["check", f"[::1]:{server.port}", "--security", "none"])

    out = capsys.readouterr().out
    assert status == _cli.OK, out
    assert row(out, "server") == f"[::1]:{server.port}, security='none'"
    assert f"SMTPPool('::1', {server.port}, security='none')" in out


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("smtp.example.com", ("smtp.example.com", None)),
        ("smtp.example.com:2525", ("smtp.example.com", 2525)),
        ("[::1]:465", ("::1", 465)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_target(target: str, expected: tuple[str, int | None]) -> None:
    assert _cli._target(target) == expected


@pytest.mark.parametrize("target", ["[::1", "[::1]x", "host:port"])
def test_bad_target(target: str) -> None:
    with pytest.raises(ValueError, match=r"cannot read|must be a number"):
        _cli._target(target)


def test_console_script(smtp_server: SMTPTestServer) -> None:
    """The installed ``smtppool`` command, and ``python -m smtppool``."""
    script = Path(sys.executable).parent / "smtppool"
    target = f"127.0.0.1:{smtp_server.port}"
    for command in ([str(script)], [sys.executable, "-m", "smtppool"]):
        done = subprocess.run(  # noqa: S603 - our own command line
            [*command, "check", target, "--security", "none", "--json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["ok"] is True
    assert len(smtp_server.sessions) == 2


def test_the_documented_json_has_the_real_keys(
    smtp_server_factory: Callable[..., SMTPTestServer],
    server_context: ssl.SSLContext,
    ca_file: str,
    run: Run,
) -> None:
    """docs/check.md shows a report with every key a real one has, nested too."""
    page = (Path(__file__).parent.parent / "docs" / "check.md").read_text()
    documented = json.loads(page.split("```json\n")[1].split("```")[0])
    server = smtp_server_factory(tls_context=server_context, auth=("app", PASSWORD))

    status, out, _ = run(
        server,
        "--user",
        "app",
        "--cafile",
        ca_file,
        "--json",
        "--idle-probe",
        "--probe-first",
        "0.1",
        "--probe-longest",
        "0.2",
    )

    assert status == _cli.OK
    real = json.loads(out)
    assert documented.keys() == real.keys()
    for part in ("tls", "idle_probe"):
        assert documented[part].keys() == real[part].keys()
    assert documented["tls"]["certificate"].keys() == real["tls"]["certificate"].keys()
