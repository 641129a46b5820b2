"""The servers people deploy on: gunicorn --preload and a Celery prefork worker,
each importing an app that warms a pool before forking its workers."""

from __future__ import annotations

import email.parser
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smtppool.testing import ReceivedMessage, SMTPTestServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def sender_pid(message: ReceivedMessage) -> int:
    headers = email.parser.BytesHeaderParser().parsebytes(message.data)
    return int(headers["X-Sender-Pid"])


def tag_of(message: ReceivedMessage) -> str:
    assert message.message_id is not None
    return message.message_id.strip("<>").split("@")[0]


def environment(server: SMTPTestServer, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SMTP_HOST": server.host,
        "SMTP_PORT": str(server.port),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


@pytest.fixture
def idle_dropping_server(
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> SMTPTestServer:
    """Drops idle sessions after a second with Postfix's 421, as in production."""
    return smtp_server_factory(idle_timeout=1.0, idle_drop="421")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gunicorn(
    idle_dropping_server: SMTPTestServer, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    """gunicorn --preload -w 3 serving the Flask app; yields its URL and pid.

    It is up once the master's warm-up and each worker's first message arrive.
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        "--workers=3",
        f"--bind=127.0.0.1:{port}",
        "--config=tests/deploy/gunicorn_conf.py",
        "tests.deploy.flask_app:app",
    ]
    with (tmp_path / "gunicorn.log").open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - a fixed command line
            command,
            cwd=ROOT,
            env=environment(idle_dropping_server),
            stdout=log,
            stderr=log,
        )
        try:
            idle_dropping_server.wait_for_messages(4, timeout=30)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


@pytest.mark.timeout(120)
def test_gunicorn_preload_workers_never_share_a_session(
    idle_dropping_server: SMTPTestServer, gunicorn: tuple[str, int]
) -> None:
    """Requests with pauses longer than the server's idle timeout: no errors,
    every message once, each session used by one worker only."""
    server, (url, master) = idle_dropping_server, gunicorn

    def post(tag: str) -> int:
        address = f"{url}/send/{tag}"  # always http://127.0.0.1
        request = urllib.request.Request(address, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 200
            return int(response.read())

    tags = []
    for round_ in range(3):
        # Every session, the master's included, is dropped before the next round.
        server.wait_until(lambda: server.open_sessions == 0, timeout=10)
        batch = [f"request-{round_}-{i}" for i in range(9)]
        with ThreadPoolExecutor(max_workers=6) as executor:
            answered = list(executor.map(post, batch))
        assert master not in answered
        tags += batch

    received = [tag_of(m) for m in server.messages]
    assert len(received) == len(set(received)), "a message was delivered twice"
    assert set(tags) <= set(received)

    warm_up = next(m for m in server.messages if tag_of(m).startswith("warm-up"))
    assert sender_pid(warm_up) == master
    workers = {
        sender_pid(m) for m in server.messages if tag_of(m).startswith("worker-start")
    }
    assert len(workers) == 3
    assert master not in workers

    pids_by_session: dict[int, set[int]] = {}
    for m in server.messages:
        pids_by_session.setdefault(m.session_id, set()).add(sender_pid(m))
    assert all(len(pids) == 1 for pids in pids_by_session.values())
    # The master's session saw its one message and nothing from any worker.
    master_session = server.sessions[warm_up.session_id - 1]
    assert master_session.id == warm_up.session_id
    assert master_session.commands == ("EHLO", "MAIL", "RCPT", "DATA")


@pytest.mark.timeout(180)
def test_celery_prefork_children_send_on_their_own_sessions(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    """Tasks run in prefork children of a worker that warmed the pool first."""
    from celery import Celery  # noqa: PLC0415 - only this test needs it

    queue, results = tmp_path / "queue", tmp_path / "results"
    queue.mkdir()
    results.mkdir()
    env = environment(
        smtp_server,
        CELERY_QUEUE_DIR=str(queue),
        CELERY_RESULTS_DIR=str(results),
        WARM_POOL="1",
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "--app=tests.deploy.celery_tasks",
            "worker",
            "--pool=prefork",
            "--concurrency=3",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
    )
    producer = Celery("producer", broker="filesystem://", backend=f"file://{results}")
    producer.conf.broker_transport_options = {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "control_folder": str(queue / "control"),
    }
    try:
        smtp_server.wait_for_messages(1, timeout=60)  # the worker's warm-up
        pending = [
            producer.send_task("tests.deploy.celery_tasks.send", args=[f"task-{i}"])
            for i in range(12)
        ]
        pids = [result.get(timeout=60) for result in pending]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    warm_up, *sent = smtp_server.messages
    parent = sender_pid(warm_up)
    assert parent == worker.pid
    assert parent not in pids
    assert sorted(tag_of(m) for m in sent) == sorted(f"task-{i}" for i in range(12))
    assert all(m.session_id != warm_up.session_id for m in sent)
    assert smtp_server.sessions[warm_up.session_id - 1].commands[:4] == (
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
    )
    assert smtp_server.count("MAIL") == 13
