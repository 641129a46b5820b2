"""gunicorn settings for the deployment test: each worker sends one message as it
starts, so that every worker is known to have used the pool it inherited."""

from __future__ import annotations

import os
from typing import Any

from tests.deploy.common import message


def post_worker_init(worker: Any) -> None:
    from tests.deploy.flask_app import pool  # noqa: PLC0415 - imported by --preload

    pool.send_message(message(f"worker-start-{os.getpid()}"))
