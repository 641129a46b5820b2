"""Settings are checked at construction, with one clear error each."""

from __future__ import annotations

import pickle
import re

import pytest

from smtppool import SMTPPool


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"max_size": 0}, "max_size must be at least 1, got 0"),
        ({"timeout": 0}, "timeout must be greater than 0, got 0"),
        ({"timeout": -1.5}, "timeout must be greater than 0"),
        ({"acquire_timeout": 0}, "acquire_timeout must be greater than 0"),
        ({"max_idle": -1}, "max_idle must be at least 0, got -1"),
        ({"max_lifetime": -0.1}, "max_lifetime must be at least 0"),
        ({"max_messages": 0}, "max_messages must be at least 1"),
        ({"validate_after": -1}, "validate_after must be at least 0"),
        ({"retries": -1}, "retries must be at least 0, got -1"),
        ({"rate_limit": 0}, "rate_limit must be at least 1, got 0"),
        ({"rate_period": 0}, "rate_period must be greater than 0, got 0"),
        ({"timeout": float("nan")}, "timeout must be greater than 0, got nan"),
        ({"security": "tls"}, "security must be one of 'starttls', 'ssl', 'none'"),
        ({"port": 0}, "port must be between 1 and 65535, got 0"),
        ({"username": "app"}, "username and password must be given together"),
        ({"password": "pw"}, "username and password must be given together"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"local_hostname": ""}, "local_hostname must be a non-empty string"),
        (
            {"username": "app", "password": "pässwörd"},
            "password must be ASCII; smtplib cannot send it",
        ),
    ],
)
def test_invalid_values_raise_value_error(
    options: dict[str, object], pattern: str
) -> None:
    """Each out-of-range setting fails at construction and names itself."""
    options = {"port": 2525, **options}
    with pytest.raises(ValueError, match=re.escape(pattern)):
        SMTPPool("mail.example.test", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"max_size": True},
        {"max_size": 2.5},
        {"timeout": "30"},
        {"port": "587"},
        {"retries": 1.0},
        {"rate_limit": 2.5},
    ],
)
def test_wrong_types_raise_type_error(options: dict[str, object]) -> None:
    """A setting of the wrong type fails at construction."""
    with pytest.raises(TypeError):
        SMTPPool("mail.example.test", **options)  # type: ignore[arg-type]


def test_empty_host_is_refused() -> None:
    """A pool needs a host to connect to."""
    with pytest.raises(ValueError, match="host must be a non-empty string"):
        SMTPPool("  ")


@pytest.mark.parametrize(
    ("port", "security"), [(465, "ssl"), (587, "starttls"), (25, "starttls")]
)
def test_security_defaults_from_the_port(port: int, security: str) -> None:
    """Port 465 means implicit TLS; every other port means STARTTLS."""
    assert SMTPPool("mail.example.test", port).config.security == security


def test_none_disables_limits() -> None:
    """None turns off the idle, lifetime and message limits."""
    pool = SMTPPool(
        "mail.example.test", max_idle=None, max_lifetime=None, max_messages=None
    )
    assert (pool.config.max_idle, pool.config.max_lifetime) == (None, None)
    assert pool.config.max_messages is None


def test_repr_is_a_status_line_without_the_password() -> None:
    """repr shows name, address and counts, never the password."""
    pool = SMTPPool(
        "mail.example.test", username="app", password="hunter2-secret", name="outbox"
    )
    assert repr(pool) == (
        "<SMTPPool 'outbox' mail.example.test:587 [0 idle, 0 in use, 0 waiting]>"
    )
    assert "hunter2-secret" not in repr(pool.config)
    assert "app" in repr(pool.config)


def test_pickling_a_pool_explains_why_not() -> None:
    """A pool holds this process's sockets, so pickling it is refused."""
    with pytest.raises(TypeError, match="must build its own pool"):
        pickle.dumps(SMTPPool("mail.example.test"))
