"""A TCP relay that puts a network's distance between a client and a server.

    python delay_proxy.py PORT UPSTREAM_PORT ONE_WAY_MS REPORT_FILE

Listens on 127.0.0.1:PORT and prints ``ready <port>`` once it does. Every
connection made to it is relayed to ``127.0.0.1:UPSTREAM_PORT``, and every
chunk of bytes, in either direction, is delivered ONE_WAY_MS after it
arrived: in order, and never later than that for want of bandwidth (a chunk
does not wait for the one before it to be "transmitted", only for its own
time).

The TCP handshake is modelled too. Over a real network a client's connect
returns after one round trip (SYN, SYN-ACK), and the server accepts the
connection, and sends its greeting, when the client's ACK reaches it half a
round trip later. So the relay opens the upstream connection three one-way
trips after it accepted the client, and the server's greeting, carried back
one trip later, reaches the client two round trips after it began to
connect, as over the real distance.

On SIGTERM it writes to REPORT_FILE, as JSON, how many connections and
chunks it relayed and how late, past their due time, it delivered them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

HOST = "127.0.0.1"


class Relay:
    def __init__(self, upstream_port: int, one_way: float) -> None:
        self.upstream_port = upstream_port
        self.one_way = one_way
        self.connections = 0
        self.lateness: list[float] = []  # seconds past each chunk's due time

    async def serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            # SYN, SYN-ACK, and the ACK reaching the server: three one-way trips.
            await asyncio.sleep(3 * self.one_way)
            server_reader, server = await asyncio.open_connection(HOST, self.upstream_port)
            await asyncio.gather(
                self.carry(client_reader, server),
                self.carry(server_reader, client),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            return  # the relay is stopping while this connection was still open
        for writer in (client, server):
            writer.close()

    async def carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Everything ``reader`` receives, each chunk delivered to ``writer`` one way later."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                # The loop's timer wakes up to a millisecond late (it rounds up);
                # aiming half a millisecond early makes it right on average.
                await asyncio.sleep(due - loop.time() - 0.0005)
                if not chunk:
                    writer.close()
                    return
                self.lateness.append(loop.time() - due)
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(1 << 20):
                queue.put_nowait((loop.time() + self.one_way, chunk))
        except ConnectionError:
            pass
        queue.put_nowait((loop.time() + self.one_way, b""))
        await delivering

    def report(self) -> dict[str, float | int]:
        late = sorted(self.lateness) or [0.0]
        return {
            "connections": self.connections,
            "chunks": len(self.lateness),
            "mean_late_ms": 1000 * sum(late) / len(late),
            "median_late_ms": 1000 * late[len(late) // 2],
            "p99_late_ms": 1000 * late[len(late) * 99 // 100],
            "max_late_ms": 1000 * late[-1],
        }


async def main() -> None:
    port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    relay = Relay(upstream_port, one_way=float(sys.argv[3]) / 1000)
    server = await asyncio.start_server(relay.serve, HOST, port)
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    print(f"ready {port}", flush=True)
    await stopped.wait()
    server.close()
    with open(sys.argv[4], "w", encoding="utf-8") as handle:
        json.dump(relay.report(), handle)


if __name__ == "__main__":
    asyncio.run(main())
