"""`smtppool check` against local servers: what it reports, and its exit status."""

from __future__ import annotations

import io
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from smtppool import _cli
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

    def check(server: SMTPTestServer, *args: str) -> tuple[int, str, str]:
        status = _cli.main(
            [
                "check",
                f"localhost:{server.port}",
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
    assert "warning: the session is not encrypted (security='none')\n" in out
    assert out.rstrip().endswith(
        f"OK: these settings work: SMTPPool('localhost', {smtp_server.port}, "
        "security='none')"
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
    assert "username='app', password=..." in out
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
    assert token not in out + err
    assert server.sessions[0].authenticated_as == "app"


def test_server_without_auth(smtp_server: SMTPTestServer, run: Run) -> None:
    """A server that offers no AUTH at all is told apart from refused credentials."""
    smtp_server.on("EHLO", "250 smtppool.test")

    status, out, _ = run(
        smtp_server, "--security", "none", "--user", "app", "--allow-unencrypted-auth"
    )

    assert status == _cli.FAILED
    assert "FAILED at login: SMTPNotSupportedError:" in out
    assert "does not offer AUTH: leave out the username" in out
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
    ],
    ids=["starttls not offered", "ssl on a plain port", "greeting 554", "no server"],
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


def test_certificate_for_another_host(
    smtp_server_factory: Callable[..., SMTPTestServer],
    ca: trustme.CA,
    ca_file: str,
    run: Run,
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.example.org").configure_cert(context)
    server = smtp_server_factory(tls_context=context)

    status, out, _ = run(server, "--cafile", ca_file)

    assert status == _cli.FAILED
    assert "FAILED at starttls: SSLCertVerificationError: Hostname mismatch" in out
    assert "hint: the certificate is not for 'localhost'" in out


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
    do not, a fresh session confirms it, and the advice stays below 2 s. Each
    silence is 0.4 s or more away from the timeout, so a slow machine cannot
    change the outcome."""
    server = smtp_server_factory(idle_timeout=2, idle_drop="421")

    status, out, err = run(
        server, "--security", "none", "--idle-probe", "--probe-first", "0.6", "--json"
    )

    assert status == _cli.OK
    probe = json.loads(out)["idle_probe"]
    assert probe["survived"] == [0.6, 1.2]
    assert probe["dropped_after"] == 2.4
    assert probe["confirmed"] is True
    assert probe["dropped_at_age"] is None
    assert probe["max_idle"] == 0.9  # 80 % of 1.2 s, in tenths, rounded down
    assert probe["max_lifetime"] == 600
    assert err.splitlines() == [
        "idle probe: silent for 0.6 s ...",
        "idle probe: silent for 0.6 s: still open",
        "idle probe: silent for 1.2 s ...",
        "idle probe: silent for 1.2 s: still open",
        "idle probe: silent for 2.4 s ...",
        "idle probe: silent for 2.4 s: dropped",
        "idle probe: a fresh session, silent for 2.4 s ...",
        "idle probe: a fresh session, silent for 2.4 s: dropped",
    ]
    # The check's session, the probed one and the fresh one.
    assert len(server.sessions) == 3


@pytest.mark.slow
def test_idle_probe_table(
    smtp_server_factory: Callable[..., SMTPTestServer], run: Run
) -> None:
    """A server that never drops a silent session within the silences tried."""
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
    assert row(out, "idle survived") == "0.2 s, 0.4 s"
    assert row(out, "idle dropped") == "never, within the silences tried"
    assert row(out, "max_idle") == "60 s (recommended)"
    assert "max_idle=60, max_lifetime=600)" in out


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
    assert "allow_unencrypted_auth=True" in err
    assert server.sessions == []

    status, out, _ = run(
        server, "--security", "none", "--user", "app", "--allow-unencrypted-auth"
    )
    assert status == _cli.OK, out
    assert server.sessions[0].authenticated_as == "app"


def test_bad_probe_settings(
    smtp_server: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _cli.main(
        ["check", f"localhost:{smtp_server.port}", "--probe-first", "0", "--idle-probe"]
    )

    assert status == _cli.USAGE
    assert "--probe-first must be greater than 0" in capsys.readouterr().err
    assert smtp_server.sessions == []


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
