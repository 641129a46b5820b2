"""Every ```python sample in README.md and docs/*.md, run against local servers.

Each page is one test: its samples run in order in one namespace, so a sample may
use what an earlier one on the same page defined.

The samples keep the host names a reader would write. ``socket.create_connection``,
which smtplib opens every session with, is routed so that smtp.example.com:587 and
smtp.gmail.com:587 reach a local STARTTLS server that requires AUTH,
smtp.example.com:465 an implicit-TLS server, and localhost:25 a plain one; any other
name is refused, so no sample can reach the network. smtplib itself runs unchanged.
The servers' certificate comes from a trustme authority for those names, and
``SSL_CERT_FILE`` names that authority, so the pool's default context verifies
the certificate and the host name as it would a provider's.

HTML comments next to a block, which neither the site nor GitHub shows, say how
to test it:

- ``<!-- sample-setup ... -->`` right before a block: code run first, for the
  names the sample leaves to the reader (``batch``, ``app``, ...).
- ``<!-- sample-check ... -->`` right after it: code that asserts what the sample
  did, usually which messages the servers received. Every sample that runs has one.
- ``<!-- sample-skip: reason -->`` right before it: not run, for the reason given.

Besides the servers, every page's namespace has ``secret`` (the password the servers
accept for the user ``app``, also in the environment as ``SMTP_PASSWORD``), and the
helpers below, for setup and check code: ``servers``, ``new_messages``,
``make_message``, ``parsed``, ``django_settings``, ``otel_reader`` and ``TOKEN``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import socket
import ssl
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trustme

import smtppool
from smtppool import _fork
from smtppool.testing import ReceivedMessage, SMTPTestServer

from .conftest import SECRETS, make_message, parsed

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# The names the samples use, and which local server each reaches.
STARTTLS_HOSTS = ("smtp.example.com", "smtp.gmail.com")
USERNAME = "app"
SECRET = SECRETS[0]
# The OAuth2 access token the STARTTLS server accepts with AUTH XOAUTH2.
TOKEN = "ya29.docs-sample-token"

_DIRECTIVE = re.compile(r"^<!-- sample-(setup|check|skip)\b:?(.*)$")
# Any fence: ``` or ~~~, indented or not, with its language however written.
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*\{?\.?([\w+-]*)")
# Languages that are Python by another name: refused, so that no sample is
# skipped for being written ```py.
_PYTHON_NAMES = {"py", "python3", "pycon", "ipython", "python"}


@attrs.frozen
class Snippet:
    """Code from a page, with the line of the page it starts on."""

    line: int
    code: str


@attrs.frozen
class Sample:
    """A ```python block of a page, with its setup, check or reason to skip."""

    line: int
    code: str
    setup: tuple[Snippet, ...] = ()
    check: Snippet | None = None
    skip: str | None = None


def samples_of(page: Path) -> list[Sample]:
    """The python blocks of a page, with the directives around them.

    Raises:
        ValueError: A directive is not next to a python block, or a block that
            runs has no check.
    """
    samples = _Parser(page).parse()
    for sample in samples:
        if sample.skip is None and sample.check is None:
            raise ValueError(
                f"{page.name}:{sample.line}: add a <!-- sample-check --> that "
                "asserts what the sample did"
            )
    return samples


class _Parser:
    """Reads a page line by line: fences, directives, and the text between."""

    def __init__(self, page: Path) -> None:
        self.name = page.name
        self.lines = page.read_text(encoding="utf-8").splitlines()
        self.index = 0
        self.samples: list[Sample] = []
        # Setup and skip directives waiting for the next block.
        self.pending: list[tuple[str, Snippet]] = []
        # The block a check may still follow: only blank lines since it ended.
        self.last: int | None = None

    @property
    def where(self) -> str:
        return f"{self.name}:{self.index + 1}"

    def parse(self) -> list[Sample]:
        while self.index < len(self.lines):
            line = self.lines[self.index]
            if _DIRECTIVE.match(line):
                self.directive()
            elif _FENCE.match(line):
                self.fence()
            else:
                if line.strip():
                    if self.pending:
                        raise ValueError(
                            f"{self.where}: put the directive right before its block"
                        )
                    self.last = None
                self.index += 1
        return self.samples

    def directive(self) -> None:
        match = _DIRECTIVE.match(self.lines[self.index])
        assert match is not None
        kind, first = match.groups()
        end = self.index
        while "-->" not in self.lines[end]:
            end += 1
        if first.strip() and end > self.index:
            raise ValueError(
                f"{self.where}: start a directive of several lines on a line of its own"
            )
        if first.strip():
            snippet = Snippet(self.index + 1, first.split("-->")[0].strip())
        else:
            body = "\n".join(self.lines[self.index + 1 : end + 1])
            snippet = Snippet(
                self.index + 2, textwrap.dedent(body[: body.rindex("-->")])
            )

        if not snippet.code.strip():
            raise ValueError(f"{self.where}: the sample-{kind} is empty")
        if kind == "check":
            if self.last is None or self.samples[self.last].check is not None:
                raise ValueError(f"{self.where}: a check must follow its block")
            self.samples[self.last] = attrs.evolve(
                self.samples[self.last], check=snippet
            )
        else:
            self.pending.append((kind, snippet))
        self.index = end + 1

    def fence(self) -> None:
        match = _FENCE.match(self.lines[self.index])
        assert match is not None
        indent, marks, language = match.groups()
        end = self.index + 1
        while not self.lines[end].lstrip().startswith(marks):
            end += 1

        self.last = None
        is_python = language.lower() in _PYTHON_NAMES
        if is_python and (indent, marks, language) != ("", "```", "python"):
            raise ValueError(
                f"{self.where}: write a Python sample as ```python at the start of "
                "a line, so that it is run"
            )
        if is_python:
            pending = self.pending
            skips = [snippet.code for kind, snippet in pending if kind == "skip"]
            self.samples.append(
                Sample(
                    line=self.index + 2,
                    code="\n".join(self.lines[self.index + 1 : end]),
                    setup=tuple(
                        snippet for kind, snippet in pending if kind == "setup"
                    ),
                    skip=skips[0] if skips else None,
                )
            )
            self.last = len(self.samples) - 1
        elif self.pending:
            raise ValueError(f"{self.where}: only python blocks take directives")
        self.pending = []
        self.index = end + 1


def run(snippet: Snippet, page: Path, namespace: dict[str, Any]) -> None:
    """Run code so that a traceback names the page and its line."""
    source = "\n" * (snippet.line - 1) + snippet.code
    exec(compile(source, str(page.relative_to(ROOT)), "exec"), namespace)  # noqa: S102


@attrs.define
class Servers:
    """The local servers the samples' host names reach."""

    starttls: SMTPTestServer
    ssl: SMTPTestServer
    plain: SMTPTestServer
    seen: dict[int, int] = attrs.field(factory=dict)

    @property
    def routes(self) -> dict[tuple[str, int], tuple[str, int]]:
        routes = {(host, 587): self.address(self.starttls) for host in STARTTLS_HOSTS}
        routes[("smtp.example.com", 465)] = self.address(self.ssl)
        for host in ("localhost", "127.0.0.1"):
            routes[(host, 25)] = self.address(self.plain)
        return routes

    @staticmethod
    def address(server: SMTPTestServer) -> tuple[str, int]:
        return server.host, server.port

    def new_messages(self) -> list[ReceivedMessage]:
        """The messages the servers accepted since the last call."""
        fresh: list[ReceivedMessage] = []
        for server in (self.starttls, self.ssl, self.plain):
            messages = server.messages
            fresh += messages[self.seen.get(id(server), 0) :]
            self.seen[id(server)] = len(messages)
        return fresh


@pytest.fixture(scope="module")
def docs_tls(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server context for the samples' host names, and the file of its CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*STARTTLS_HOSTS).configure_cert(context)
    ca_file = tmp_path_factory.mktemp("docs") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


@pytest.fixture
def servers(
    smtp_server_factory: Callable[..., SMTPTestServer],
    docs_tls: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Servers:
    """Servers for the samples' host names, routed to and trusted as the real
    ones would be."""
    context, ca_file = docs_tls
    login = (USERNAME, SECRET)
    found = Servers(
        starttls=smtp_server_factory(
            tls_context=context,
            auth=login,
            require_auth=True,
            xoauth2=lambda user, token: token == TOKEN,
        ),
        ssl=smtp_server_factory(
            tls_context=context, implicit_tls=True, auth=login, require_auth=True
        ),
        plain=smtp_server_factory(),
    )

    routes = found.routes
    connect = socket.create_connection

    def routed(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        target = routes.get(address[:2])
        if target is None and address[0] not in ("127.0.0.1", "localhost"):
            raise ConnectionRefusedError(
                f"tests/test_docs.py has no local server for {address[0]}:{address[1]}"
            )
        return connect(target or address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", routed)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.setenv("SMTP_PASSWORD", SECRET)
    return found


@pytest.fixture
def namespace(servers: Servers) -> Iterator[dict[str, Any]]:
    """A page's namespace, kept until every pool its samples built is closed:
    a pool collected with its sessions open would leave their sockets open."""
    before = set(_fork._live)
    names = namespace_for(servers)
    try:
        yield names
    finally:
        if "smtppool.django" in sys.modules:
            sys.modules["smtppool.django"].close_pools()
        for pool in set(_fork._live) - before:
            pool.close()  # type: ignore[attr-defined]
        names.clear()


@contextlib.contextmanager
def django_settings(**settings: Any) -> Iterator[None]:
    """Django set up with the test suite's settings module and these on top.

    The backend is Django's own unless the sample sets ``EMAIL_BACKEND``, so that
    a sample that forgot the line cannot pass on the suite's settings.
    """
    settings.setdefault("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.deploy.django_settings")
    import django  # noqa: PLC0415 - only the Django samples need it
    from django.test.utils import override_settings  # noqa: PLC0415

    import smtppool.django  # noqa: PLC0415

    django.setup()
    try:
        with override_settings(**settings):
            yield
    finally:
        smtppool.django.close_pools()


_otel: dict[str, Any] = {}


def otel_reader() -> Any:
    """An in-memory reader on the global OpenTelemetry meter provider, which can
    be set once per process."""
    if "reader" not in _otel:
        from opentelemetry import metrics  # noqa: PLC0415
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
            InMemoryMetricReader,
        )

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _otel["reader"] = reader
    return _otel["reader"]


def namespace_for(servers: Servers) -> dict[str, Any]:
    return {
        "__name__": "docs_sample",
        "secret": SECRET,
        "servers": servers,
        "new_messages": servers.new_messages,
        "make_message": make_message,
        "parsed": parsed,
        "django_settings": django_settings,
        "otel_reader": otel_reader,
        "TOKEN": TOKEN,
    }


PAGES_WITH_SAMPLES = [page for page in PAGES if samples_of(page)]


@pytest.mark.parametrize(
    "page", PAGES_WITH_SAMPLES, ids=[page.name for page in PAGES_WITH_SAMPLES]
)
def test_samples_run(page: Path, namespace: dict[str, Any]) -> None:
    """Each sample of the page runs, and its check passes."""
    for sample in samples_of(page):
        if sample.skip is not None:
            continue
        assert sample.check is not None
        for setup in sample.setup:
            run(setup, page, namespace)
        run(Snippet(sample.line, sample.code), page, namespace)
        run(sample.check, page, namespace)


def test_every_page_is_read() -> None:
    """The pages with samples include the README and the main pages."""
    names = {page.name for page in PAGES_WITH_SAMPLES}
    assert {"README.md", "quickstart.md", "configuration.md"} <= names


def test_skips_are_rare() -> None:
    """Nearly every sample runs; each skipped one says why in its page."""
    samples = [sample for page in PAGES for sample in samples_of(page)]
    skipped = [sample for sample in samples if sample.skip is not None]
    assert all(sample.skip for sample in skipped)
    assert len(skipped) * 10 <= len(samples)


def test_configuration_page_names_every_setting() -> None:
    """Each parameter of SMTPPool has a row in docs/configuration.md."""
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    first_cells = re.findall(r"^\| (.+?) \|", page, re.MULTILINE)
    named = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    parameters = inspect.signature(smtppool.SMTPPool).parameters
    assert set(parameters) - named == set()


def test_default_context_trusts_the_docs_authority(servers: Servers) -> None:
    """With SSL_CERT_FILE naming the test authority, a pool with no ssl_context
    verifies the local server as smtp.example.com, and refuses it under a name
    its certificate does not hold."""
    with smtppool.SMTPPool(
        "smtp.example.com", 465, username=USERNAME, password=SECRET
    ) as pool:
        pool.send_message(make_message())
    assert servers.ssl.sessions[0].authenticated_as == USERNAME

    wrong = Servers.address(servers.ssl)
    with (
        smtppool.SMTPPool("localhost", wrong[1], security="ssl") as pool,
        pytest.raises(ssl.SSLCertVerificationError, match="localhost"),
    ):
        pool.send_message(make_message())


def test_parser_refuses_a_sample_without_a_check(tmp_path: Path) -> None:
    """A python block with no check, or a stray directive, is an error."""
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n```python\nx = 1\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="add a <!-- sample-check"):
        samples_of(page)

    page.write_text("<!-- sample-setup: x = 1 -->\n\ntext\n", encoding="utf-8")
    with pytest.raises(ValueError, match="right before its block"):
        samples_of(page)


@pytest.mark.parametrize(
    "fence",
    [
        "```py",
        "```python3",
        "```Python",
        "~~~python",
        "````python",
        "  ```python",
        "```pycon",
    ],
)
def test_parser_refuses_python_it_would_not_run(tmp_path: Path, fence: str) -> None:
    """Python fenced any other way would be left out: it is an error instead."""
    page = tmp_path / "page.md"
    close = fence.strip().split("p")[0].split("P")[0].split("{")[0].strip()
    page.write_text(f"{fence}\nassert False\n{close}\n", encoding="utf-8")

    with pytest.raises(ValueError, match="write a Python sample as ```python"):
        samples_of(page)


@pytest.mark.parametrize("fence", ["``` python", "```{.python}"])
def test_python_with_a_space_or_braces_is_still_run(tmp_path: Path, fence: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"{fence}\nx = 1\n```\n", encoding="utf-8")

    with pytest.raises(ValueError, match="add a <!-- sample-check"):
        samples_of(page)


@pytest.mark.parametrize(
    "directive",
    [
        "<!-- sample-check -->",
        "<!-- sample-check: assert x == 1\nassert x == 2\n-->",
        "<!-- sample-skip: -->",
    ],
)
def test_parser_refuses_a_directive_it_would_misread(
    tmp_path: Path, directive: str
) -> None:
    page = tmp_path / "page.md"
    block = "```python\nx = 1\n```\n"
    page.write_text(
        block + directive + "\n" if "check" in directive else directive + "\n" + block,
        encoding="utf-8",
    )

    with pytest.raises(ValueError, match=r"is empty|on a line of its own"):
        samples_of(page)


def test_parser_reads_directives(tmp_path: Path) -> None:
    """Setup, check and skip attach to their blocks, with the page's lines."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- sample-setup\n"
        "x = 1\n"
        "-->\n"
        "```python\n"
        "y = x + 1\n"
        "```\n"
        "<!-- sample-check: assert y == 2 -->\n"
        "\n"
        "<!-- sample-skip: needs a real provider -->\n"
        "```python\n"
        "z = 3\n"
        "```\n",
        encoding="utf-8",
    )
    first, second = samples_of(page)
    assert first == Sample(
        line=5,
        code="y = x + 1",
        setup=(Snippet(2, "x = 1\n"),),
        check=Snippet(7, "assert y == 2"),
    )
    assert second.skip == "needs a real provider"
    assert second.line == 11
