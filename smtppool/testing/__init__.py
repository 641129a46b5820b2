"""A local SMTP server for testing code that sends mail (needs the ``testing`` extra).

    from smtppool.testing import SMTPTestServer

    with SMTPTestServer(idle_timeout=1, idle_drop="421") as server:
        pool = SMTPPool(server.host, server.port, security="none")
        ...
        assert server.deliveries("<id@example.com>") == 1

With pytest, the ``smtp_server`` fixture gives a started server per test, and
``smtp_server_factory`` builds servers with options.
"""

try:
    import aiosmtpd  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "smtppool.testing needs aiosmtpd: pip install 'smtppool[testing]'"
    ) from exc

from ._server import (
    IDLE_REPLY,
    SERVER_NAME,
    IdleDrop,
    ReceivedMessage,
    SessionRecord,
    SMTPTestServer,
)

__all__ = [
    "IDLE_REPLY",
    "SERVER_NAME",
    "IdleDrop",
    "ReceivedMessage",
    "SMTPTestServer",
    "SessionRecord",
]
