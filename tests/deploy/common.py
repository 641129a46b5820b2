"""What the deployment apps share: a pool built from the environment the test
sets, and messages that say which process sent them."""

from __future__ import annotations

import email.message
import os

from smtppool import SMTPPool


def pool_from_environment() -> SMTPPool:
    return SMTPPool(
        os.environ["SMTP_HOST"],
        int(os.environ["SMTP_PORT"]),
        security="none",
        local_hostname="app.example.test",
        timeout=5,
    )


def message(tag: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "app@example.test"
    msg["To"] = "user@example.test"
    msg["Subject"] = tag
    msg["Message-ID"] = f"<{tag}@deploy.example.test>"
    msg["X-Sender-Pid"] = str(os.getpid())
    msg.set_content("Sent by a deployment test app.\n")
    return msg
