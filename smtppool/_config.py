"""The pool's settings, validated once at construction."""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable
from typing import Any, Literal, get_args

import attrs

Security = Literal["starttls", "ssl", "none"]

SECURITY_MODES: tuple[str, ...] = get_args(Security)

# RFC 8314 section 3.3 assigns port 465 to SMTP over implicit TLS; every other port
# (587 submission, 25 relay) starts in clear text and must upgrade with STARTTLS.
IMPLICIT_TLS_PORT = 465


def default_security(port: int) -> Security:
    """Return the security mode a port implies when the caller names none."""
    return "ssl" if port == IMPLICIT_TLS_PORT else "starttls"


def _number(
    *, minimum: float, inclusive: bool, integer: bool = False, optional: bool = False
) -> Any:
    """Build a validator for a numeric setting with a lower bound."""
    bound = f"at least {minimum:g}" if inclusive else f"greater than {minimum:g}"

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return

        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            expected = "an integer" if integer else "a number"
            none = " or None" if optional else ""
            raise TypeError(f"{attribute.name} must be {expected}{none}, got {value!r}")

        too_small = value < minimum if inclusive else value <= minimum
        if too_small or math.isnan(value):
            raise ValueError(f"{attribute.name} must be {bound}, got {value!r}")

    return check


def _optional_text(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string or None")


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r}")


def _port(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"port must be an integer, got {value!r}")
    if not 0 < value < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {value}")


def _security(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in SECURITY_MODES:
        choices = ", ".join(repr(mode) for mode in SECURITY_MODES)
        raise ValueError(f"security must be one of {choices}, got {value!r}")


def _ssl_context(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError("ssl_context must be an ssl.SSLContext or None")


def _secret(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str) and not callable(value):
        raise TypeError(f"{attribute.name} must be a string, a callable or None")


def _provider(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be a callable that returns a token")


def _flag(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, got {value!r}")


def _source_address(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], int)
    ):
        raise TypeError(f"source_address must be a (host, port) tuple, got {value!r}")


@attrs.frozen(kw_only=True)
class PoolConfig:
    """Everything a pool needs to open and recycle sessions.

    ``None`` for ``max_idle``, ``max_lifetime``, ``max_messages`` or ``rate_limit``
    means no limit.
    """

    host: str = attrs.field(validator=_non_empty)
    port: int = attrs.field(validator=_port)
    security: Security = attrs.field(validator=_security)
    username: str | None = attrs.field(default=None, validator=_optional_text)
    password: str | Callable[[], str] | None = attrs.field(
        default=None, repr=False, validator=_secret
    )
    ssl_context: ssl.SSLContext | None = attrs.field(
        default=None, validator=_ssl_context
    )
    local_hostname: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_empty)
    )
    source_address: tuple[str, int] | None = attrs.field(
        default=None, validator=_source_address
    )
    timeout: float = attrs.field(
        default=30.0, validator=_number(minimum=0, inclusive=False)
    )
    max_size: int = attrs.field(
        default=5, validator=_number(minimum=1, inclusive=True, integer=True)
    )
    acquire_timeout: float = attrs.field(
        default=30.0, validator=_number(minimum=0, inclusive=False)
    )
    max_idle: float | None = attrs.field(
        default=60.0, validator=_number(minimum=0, inclusive=True, optional=True)
    )
    max_lifetime: float | None = attrs.field(
        default=600.0, validator=_number(minimum=0, inclusive=True, optional=True)
    )
    max_messages: int | None = attrs.field(
        default=100,
        validator=_number(minimum=1, inclusive=True, integer=True, optional=True),
    )
    validate_after: float = attrs.field(
        default=1.0, validator=_number(minimum=0, inclusive=True)
    )
    retries: int = attrs.field(
        default=1, validator=_number(minimum=0, inclusive=True, integer=True)
    )
    rate_limit: int | None = attrs.field(
        default=None,
        validator=_number(minimum=1, inclusive=True, integer=True, optional=True),
    )
    rate_period: float = attrs.field(
        default=1.0, validator=_number(minimum=0, inclusive=False)
    )
    leak_threshold: float | None = attrs.field(
        default=None, validator=_number(minimum=0, inclusive=False, optional=True)
    )
    oauth_token: Callable[[], str] | None = attrs.field(
        default=None, repr=False, validator=_provider
    )
    allow_unencrypted_auth: bool = attrs.field(default=False, validator=_flag)
    pipelining: bool = attrs.field(default=True, validator=_flag)
    chunking: bool = attrs.field(default=False, validator=_flag)
    name: str = attrs.field(validator=_non_empty)

    def __attrs_post_init__(self) -> None:
        if self.password is not None and self.oauth_token is not None:
            raise ValueError("give password or oauth_token, not both")
        secret = self.password if self.oauth_token is None else self.oauth_token
        if (self.username is None) != (secret is None):
            raise ValueError(
                "username and password must be given together (or username and "
                "oauth_token)"
            )
        if (
            self.username is not None
            and self.security == "none"
            and not self.allow_unencrypted_auth
        ):
            raise ValueError(
                "username and password would cross the network unencrypted with "
                "security='none': use security='starttls' or 'ssl', or set "
                "allow_unencrypted_auth=True for a relay you trust on a network you "
                "trust (on localhost, say)"
            )
        if self.chunking and not self.pipelining:
            raise ValueError("chunking sends the body pipelined; it needs pipelining")

        # smtplib encodes AUTH as ASCII; failing later would raise an error whose
        # repr holds the password. The value is deliberately not echoed here.
        for label, value in (("username", self.username), ("password", self.password)):
            # A callable is checked each time it is called (see _session._login).
            if isinstance(value, str) and not value.isascii():
                raise ValueError(f"{label} must be ASCII; smtplib cannot send it")

    @property
    def address(self) -> str:
        """``host:port``, as logs and errors show it; ``[host]:port`` for an IPv6
        address, whose colons would otherwise run into the port's."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"
