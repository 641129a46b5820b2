"""A Flask app that builds and warms its pool at import, as an app that sends
mail at startup does; under gunicorn --preload that import runs in the master,
before the workers are forked."""

from __future__ import annotations

import os

from flask import Flask

from tests.deploy.common import message, pool_from_environment

pool = pool_from_environment()
pool.send_message(message(f"warm-up-{os.getpid()}"))

app = Flask(__name__)


@app.post("/send/<tag>")
def send(tag: str) -> str:
    pool.send_message(message(tag))
    return str(os.getpid())
