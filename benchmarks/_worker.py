"""One measurement in a fresh process, so that its CPU time and memory are the
contender's own. The parent passes a JSON job as the only argument and reads one
JSON line back.

    python -m benchmarks._worker '{"job": "send", "client": "pooled", ...}'

Jobs: ``send`` (throughput and latency), ``memory`` (RSS per idle session) and
``checkout`` (the cost of lending and taking back a warm session).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import smtplib
import statistics
import sys
import threading
import time
from typing import Any

import smtppool

from ._clients import CLIENT_NAME, CLIENTS, client_context
from ._sinks import Target


def send(job: dict[str, Any]) -> dict[str, Any]:
    """Time ``messages`` sends spread over ``threads`` threads, after a warm-up."""
    target = Target.from_dict(job["target"])
    threads, messages = job["threads"], job["messages"]
    client = CLIENTS[job["client"]](
        target, threads, job.get("options", {}), job["warm_up"]
    )
    client.warm()

    # Everyone sets up, then waits at the start line; the clock runs from the
    # start line until the last thread has sent its last message.
    start_line = threading.Barrier(threads + 1)
    finish_line = threading.Barrier(threads + 1)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def run(index: int) -> None:
        client.start_thread()
        start_line.wait()
        mine = latencies[index]
        for n in range(index, messages, threads):
            started = time.perf_counter()
            try:
                client.send(n)
            except Exception as error:  # counted, and the first one reported
                errors.append(f"{type(error).__name__}: {error}")
            mine.append(time.perf_counter() - started)
        finish_line.wait()
        client.stop_thread()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start_line.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    finish_line.wait()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    for worker in workers:
        worker.join()
    client.close()

    return {
        "elapsed": elapsed,
        "cpu": cpu,
        "messages": messages,
        "latencies": [x for mine in latencies for x in mine],
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def memory(job: dict[str, Any]) -> dict[str, Any]:
    """Resident memory per idle session: RSS with ``sessions`` idle, minus RSS
    before the first one, over ``sessions``."""
    target = Target.from_dict(job["target"])
    count = job["sessions"]
    context = client_context(target)
    held: list[object] = []

    if job["client"] == "pooled":
        pool = smtppool.SMTPPool(
            target.host,
            target.port,
            security="starttls" if target.tls else "none",
            username=target.username,
            password=target.password,
            ssl_context=context,
            local_hostname=CLIENT_NAME,
            max_size=count,
        )
        held.append(pool)
        before = _rss()
        # Borrow them all at once, then give them back: count idle sessions.
        with contextlib.ExitStack() as stack:
            for _ in range(count):
                stack.enter_context(pool.connection())
        assert pool.stats().idle == count
    else:
        before = _rss()
        for _ in range(count):
            smtp = smtplib.SMTP(target.host, target.port, CLIENT_NAME)
            if target.tls:
                smtp.starttls(context=context)
                smtp.login(target.username or "", target.password or "")
            held.append(smtp)

    gc.collect()
    after = _rss()
    return {"per_session": (after - before) / count, "sessions": count}


def checkout(job: dict[str, Any]) -> dict[str, Any]:
    """Microseconds for ``with pool.connection(): pass`` on one warm idle session
    (validate_after far away, so no NOOP), against a LifoQueue get and put."""
    target = Target.from_dict(job["target"])
    loops, batches = job["loops"], job["batches"]
    pool = smtppool.SMTPPool(
        target.host,
        target.port,
        security="none",
        local_hostname=CLIENT_NAME,
        max_size=1,
        validate_after=3600.0,
    )
    with pool.connection():
        pass  # opens the one session, so every timed loop finds it idle

    def pooled() -> None:
        for _ in range(loops):
            with pool.connection():
                pass

    lifo: queue.LifoQueue[object] = queue.LifoQueue()
    lifo.put(object())

    def bare() -> None:
        for _ in range(loops):
            lifo.put(lifo.get())

    result = {}
    for name, body in (("pool", pooled), ("lifo", bare)):
        samples = []
        for _ in range(batches):
            started = time.perf_counter()
            body()
            samples.append((time.perf_counter() - started) / loops * 1e6)
        result[name] = statistics.median(samples)
    pool.close()
    return result


def _rss() -> int:
    """This process's resident set size in bytes, from /proc."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


JOBS = {"send": send, "memory": memory, "checkout": checkout}


def main() -> None:
    job = json.loads(sys.argv[1])
    print(json.dumps(JOBS[job["job"]](job)))


if __name__ == "__main__":
    main()
