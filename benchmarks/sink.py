"""An SMTP server on loopback that counts what it receives and throws it away.

Run in its own process, so that it does not share a Python interpreter (and
its lock) with the sender being measured. It prints ``ready <port>`` once it
listens and ``first <time>`` when the first message arrives; on SIGTERM it
writes the count and each message's arrival time (seconds since the epoch)
as JSON to the file named on the command line.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller


class Counter:
    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.bytes = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrivals.append(time.time())
        if len(self.arrivals) == 1:
            print(f"first {self.arrivals[0]}", flush=True)
        self.bytes += len(envelope.original_content or b"")
        return "250 2.0.0 Ok: discarded"


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    handler = Counter()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(f"ready {port}", flush=True)
    stopped.wait()
    controller.stop()
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(
            {"count": len(handler.arrivals), "bytes": handler.bytes, "arrivals": handler.arrivals},
            handle,
        )


if __name__ == "__main__":
    main()
