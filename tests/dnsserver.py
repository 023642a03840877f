"""A real DNS server on loopback, answering from zone data a test gives it.

dnslib's ``DNSServer`` listens on UDP and TCP of one free port of
127.0.0.1; the resolver below answers as a recursive resolver would: it
follows CNAME records through the zone, putting each one in the answer,
and says NXDOMAIN for a name the zone does not hold. Every question asked
is kept, so that a test can tell what was (not) looked up.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

#: A zone: each name, with its records as (type, value); MX values are "preference host".
Zone = Mapping[str, Sequence[tuple[str, str]]]


def _rdata(kind: str, value: str) -> object:
    if kind == "A":
        return A(value)
    if kind == "AAAA":
        return AAAA(value)
    if kind == "CNAME":
        return CNAME(value)
    if kind == "MX":
        preference, _, host = value.partition(" ")
        return MX(host, int(preference))
    if kind == "TXT":
        data = value.encode()
        return TXT([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])
    raise ValueError(kind)


@dataclass
class ZoneResolver(BaseResolver):  # type: ignore[misc]
    zone: Zone
    asked: list[tuple[str, str]] = field(default_factory=list)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        self.asked.append((name, kind))
        for _ in range(10):
            records = self.zone.get(name)
            if records is None:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            cnames = [value for k, value in records if k == "CNAME"]
            if cnames and kind != "CNAME":
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=_rdata("CNAME", cnames[0]), ttl=60))
                name = cnames[0].rstrip(".").lower()
                continue
            for k, value in records:
                if k == kind:
                    reply.add_answer(RR(name, getattr(QTYPE, k), rdata=_rdata(k, value), ttl=60))
            return reply
        reply.header.rcode = RCODE.SERVFAIL
        return reply


@dataclass
class DnsServer:
    """A DNS server running on 127.0.0.1:port, and the questions it was asked."""

    port: int
    resolver: ZoneResolver

    @property
    def setting(self) -> str:
        """The DNS_SERVER setting that points at it."""
        return f"127.0.0.1:{self.port}"

    @property
    def asked(self) -> list[tuple[str, str]]:
        return self.resolver.asked


def _free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


@contextlib.contextmanager
def dns_server(zone: Zone) -> Iterator[DnsServer]:
    resolver = ZoneResolver(zone)
    quiet = DNSLogger(
        log="-recv,-send,-request,-reply,-truncated,-error,-data", logf=lambda _: None
    )
    for _attempt in range(5):
        port = _free_port()
        try:
            udp = DNSServer(resolver, address="127.0.0.1", port=port, logger=quiet)
        except OSError:
            continue
        try:
            tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=quiet)
        except OSError:
            udp.server.server_close()
            continue
        break
    else:
        raise RuntimeError("no free port for the DNS server")
    threads = [
        threading.Thread(target=s.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        for s in (udp, tcp)
    ]
    for thread in threads:
        thread.start()
    try:
        yield DnsServer(port, resolver)
    finally:
        for server in (udp, tcp):
            server.server.shutdown()
            server.server.server_close()
        for thread in threads:
            thread.join()


@contextlib.contextmanager
def silent_dns_server() -> Iterator[str]:
    """A DNS_SERVER that takes questions and never answers: a network that drops DNS."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{udp.getsockname()[1]}"
