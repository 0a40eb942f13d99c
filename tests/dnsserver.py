"""A small authoritative DNS server on 127.0.0.1 for tests (UDP and TCP).

Zones are given as master-file text and parsed with dnspython, so tests state
records exactly as an operator would publish them. The server answers like an
authoritative server: records, CNAME chains inside its zones, NODATA, NXDOMAIN,
and truncation over UDP (the client then retries over TCP). Names listed in
``servfail`` get SERVFAIL, to exercise DNS-error verdicts.

Usage::

    with DnsServer({"example.com": ZONE}) as dns_server:
        resolver = make_resolver(dns_server.address)   # "127.0.0.1:PORT"
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for aiosmtpd's Controller)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def txt(text: str) -> str:
    """A TXT rdata for zone text: ``text`` split into quoted strings of ≤255 octets."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class DnsServer:
    """Authoritative answers for the given zones, on a free port of 127.0.0.1."""

    def __init__(
        self, zones: Mapping[str, str] | None = None, servfail: Iterable[str] = ()
    ) -> None:
        self.zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self.servfail = {dns.name.from_text(n) for n in servfail}
        self.queries: list[tuple[str, str]] = []
        for origin, text in (zones or {}).items():
            self.add_zone(origin, text)
        self._servers: list[socketserver.BaseServer] = []
        self.port = 0

    # -- zone data ---------------------------------------------------------

    def add_zone(self, origin: str, text: str) -> None:
        """Add (or replace) a zone; ``@`` and relative names are under ``origin``."""
        name = dns.name.from_text(origin)
        body = f"$ORIGIN {name}\n$TTL 60\n@ SOA ns.{name} hostmaster.{name} 1 60 60 60 60\n"
        self.zones[name] = dns.zone.from_text(
            body + text, origin=name, relativize=False, check_origin=False
        )

    def _zone_for(self, qname: dns.name.Name) -> dns.zone.Zone | None:
        best = None
        for origin, zone in self.zones.items():
            if qname.is_subdomain(origin) and (best is None or origin.is_subdomain(best.origin)):
                best = zone
        return best

    def answer(self, request: dns.message.Message) -> dns.message.Message:
        """Build the response to one query."""
        response = dns.message.make_response(request)
        response.flags |= dns.flags.AA
        question = request.question[0]
        qname, rdtype = question.name, question.rdtype
        self.queries.append((qname.to_text(), dns.rdatatype.to_text(rdtype)))
        if qname in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        zone = self._zone_for(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        for _ in range(8):  # follow CNAMEs inside our zones
            node = zone.get_node(qname)
            if node is None:
                if not any(n.is_subdomain(qname) for n in zone.nodes):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                return response  # an empty non-terminal: NOERROR, no data
            rdataset = node.get_rdataset(dns.rdataclass.IN, rdtype)
            if rdataset is not None:
                response.answer.append(_rrset(qname, rdataset))
                return response
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None or rdtype == dns.rdatatype.CNAME:
                return response
            response.answer.append(_rrset(qname, cname))
            qname = cname[0].target
            zone = self._zone_for(qname)
            if zone is None:
                return response
        return response

    # -- serving -------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` for ``--nameserver``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        for _ in range(20):
            udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _UdpHandler)
            port = udp.server_address[1]
            try:
                tcp = socketserver.ThreadingTCPServer(
                    ("127.0.0.1", port), _TcpHandler, bind_and_activate=False
                )
                tcp.allow_reuse_address = True
                tcp.server_bind()
                tcp.server_activate()
            except OSError:
                udp.server_close()
                continue
            break
        else:  # pragma: no cover - the machine is out of ports
            raise RuntimeError("no free port for the test DNS server")
        for server in (udp, tcp):
            server.daemon_threads = True
            server.dns = self  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._servers = [udp, tcp]
        self.port = port
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def lookup_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """A ``dnsfunc`` for dkimpy: the TXT record at ``name``, strings joined."""
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = timeout
        if isinstance(name, bytes):
            name = name.decode("ascii")
        try:
            answer = resolver.resolve(name, "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)


def _rrset(name: dns.name.Name, rdataset: object) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdataset.rdtype)  # type: ignore[attr-defined]
    rrset.update(rdataset)  # type: ignore[arg-type]
    return rrset


def _respond(server: DnsServer, wire: bytes, *, udp: bool) -> bytes | None:
    try:
        request = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = server.answer(request)
    if not udp:
        return response.to_wire()
    limit = max(512, request.payload) if request.edns >= 0 else 512
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(request)
        truncated.flags |= dns.flags.TC | dns.flags.AA
        return truncated.to_wire()


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = _respond(self.server.dns, data, udp=True)  # type: ignore[attr-defined]
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(5)
        try:
            while True:
                header = _read_exact(conn, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                data = _read_exact(conn, length)
                if data is None:
                    return
                reply = _respond(self.server.dns, data, udp=False)  # type: ignore[attr-defined]
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return


def _read_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
