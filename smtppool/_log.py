"""The package logger.

Levels are fixed per event: DEBUG for connect, validation and close; WARNING when a
broken connection is discarded. Nothing logged here ever holds a password, an AUTH
exchange, a message body or a recipient list.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("smtppool")
logger.addHandler(logging.NullHandler())
