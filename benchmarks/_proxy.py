"""A TCP proxy on localhost that adds a round-trip time, run in its own process.

    python -m benchmarks._proxy --to 127.0.0.1:2525 --rtt 10

Prints ``PORT <n>`` once it listens and runs until its standard input closes.

Every chunk read from either side is written to the other side rtt/2 after it
arrived, in the order it arrived; chunks are neither merged nor split beyond what
the kernel does. A new connection also pays for the TCP handshake a real network
would have: the proxy connects to the sink 1.5 x rtt after accepting, so the
greeting reaches the client two round trips after it connected (SYN, SYN-ACK, then
ACK and greeting), as on a real link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

_CHUNK = 65536


async def _forward(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy one direction, holding each chunk back ``delay`` seconds."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(_CHUNK):
                queue.put_nowait((loop.time() + delay, chunk))
        # An empty chunk stands for the end of the stream, delayed like data.
        queue.put_nowait((loop.time() + delay, b""))

    async def write() -> None:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()

    reading = asyncio.create_task(read())
    try:
        await write()
    except ConnectionError:
        reading.cancel()
    finally:
        writer.close()


async def _serve(target: tuple[str, int], rtt: float) -> None:
    half = rtt / 2

    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        await asyncio.sleep(3 * half)
        try:
            sink_reader, sink_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _forward(client_reader, sink_writer, half),
            _forward(sink_reader, client_writer, half),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)

    # The parent closes our standard input to stop us, or dies and closes it.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True, help="host:port of the sink")
    parser.add_argument("--rtt", type=float, required=True, help="milliseconds")
    args = parser.parse_args()

    host, _, port = args.to.rpartition(":")
    asyncio.run(_serve((host, int(port)), args.rtt / 1000))


if __name__ == "__main__":
    main()
