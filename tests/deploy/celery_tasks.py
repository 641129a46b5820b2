"""A Celery app whose worker process builds and warms a pool when it imports the
tasks, then forks its prefork children. The broker is kombu's filesystem
transport and results go to files, so no server is needed."""

from __future__ import annotations

import os

from celery import Celery

from tests.deploy.common import message, pool_from_environment

queue = os.environ["CELERY_QUEUE_DIR"]
app = Celery(
    "celery_tasks",
    broker="filesystem://",
    backend=f"file://{os.environ['CELERY_RESULTS_DIR']}",
)
app.conf.broker_transport_options = {
    "data_folder_in": queue,
    "data_folder_out": queue,
    "control_folder": os.path.join(queue, "control"),
}
app.conf.broker_connection_retry_on_startup = True

pool = pool_from_environment()
if os.environ.get("WARM_POOL") == "1":
    pool.send_message(message(f"warm-up-{os.getpid()}"))


@app.task
def send(tag: str) -> int:
    pool.send_message(message(tag))
    return os.getpid()
