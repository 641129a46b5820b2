"""pytest fixtures for code that sends mail; registered by installing smtppool.

The fixtures import the test server only when a test asks for them, so this plugin
costs nothing where the ``testing`` extra is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._server import SMTPTestServer


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """Build started test servers with options; all are stopped after the test."""
    from ._server import SMTPTestServer

    servers: list[SMTPTestServer] = []

    def make(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> SMTPTestServer:
    """A started plain SMTP server on localhost that records what it receives."""
    return smtp_server_factory()
