"""A plain smtplib loop over prebuilt messages: the least any sender must do.

    python smtplib_loop.py FOLDER PORT CONNECTIONS

Reads every ``.eml`` that ``outreach preview`` wrote into FOLDER (outreach's
own bytes), then sends them to 127.0.0.1:PORT over CONNECTIONS reused
connections (one thread each), with smtplib's ``sendmail``: MAIL, RCPT,
DATA and the message, one reply awaited after each. Prints
``{"sent": n, "seconds": s}``, the seconds being those of the sending alone.
"""

from __future__ import annotations

import json
import smtplib
import sys
import threading
import time
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path


def main() -> None:
    folder, port, connections = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    parser = BytesHeaderParser()
    letters = []
    for path in sorted(folder.glob("*.eml")):
        data = path.read_bytes()
        headers = parser.parsebytes(data)
        to = [a for _, a in getaddresses(headers.get_all("To", []) + headers.get_all("Cc", []))]
        letters.append((str(headers["From"]), to, data))
    shares = [letters[n::connections] for n in range(connections)]

    def work(share: list[tuple[str, list[str], bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for sender, recipients, data in share:
                smtp.sendmail(sender, recipients, data)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"sent": len(letters), "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
