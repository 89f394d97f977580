"""The wire between a service (``agent://``) and the node agent.

Stdlib only: the service side imports this module.

One *frame* carries one batch of raw trace points of one process::

    b"STA1" | payload length (4 bytes, big endian) | payload

and the payload is compact JSON::

    [project, service, host, [[name, phase, base_id, parent_id, trace_id,
                               time_ns, info], ...]]

Ids and times travel as integers: UUID text and timestamps are formatted by
the agent (``points.to_message``), never by the service.  On a stream
socket (Unix or TCP) frames follow each other; a datagram (UDP) holds
exactly one frame.

JSON, not pickle or marshal, because the agent must survive hostile input:
``json.loads`` cannot execute or crash on crafted bytes, and ``validate``
then checks every field's type and size.
"""

import ipaddress
import json
import socket
import struct
import urllib.parse

MAGIC = b"STA1"
HEADER = struct.Struct(">4sI")
# Largest frame either side accepts by default.  The service splits bigger
# batches; the agent drops (and counts) anything larger.
MAX_FRAME = 1 << 20
# One UDP datagram must fit in 64 KiB with IP/UDP headers.
MAX_DATAGRAM = 65000
MAX_NAME = 1024
MAX_TEXT_ID = 256
MAX_ID = 1 << 128

# No circular-reference markers: they cost about 20 % of the encoding (the
# flusher's share of the GIL), and a cyclic ``info`` fails anyway - with
# RecursionError instead of ValueError, which ``encode_batch`` catches the
# same way (that point is lost and counted, the rest of the batch is sent).
_dumps = json.JSONEncoder(separators=(",", ":"), skipkeys=True,
                          default=repr, check_circular=False).encode
_loads = json.loads


class ProtocolError(ValueError):
    """Input the agent drops; ``reason`` names the counter it goes to."""

    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


# --- addresses -------------------------------------------------------------

class Address:
    """Where the agent listens: ``kind`` is "unix", "tcp" or "udp"."""

    def __init__(self, kind, target):
        self.kind = kind
        self.target = target  # a path, or (host, port)

    @property
    def family(self):
        return socket.AF_UNIX if self.kind == "unix" else socket.AF_INET

    @property
    def socktype(self):
        return socket.SOCK_DGRAM if self.kind == "udp" else socket.SOCK_STREAM

    @property
    def is_stream(self):
        return self.kind != "udp"

    def __str__(self):
        if self.kind == "unix":
            return "unix://" + self.target
        return "%s://%s:%d" % (self.kind, self.target[0], self.target[1])

    def __eq__(self, other):
        return (isinstance(other, Address) and self.kind == other.kind
                and self.target == other.target)


def loopback_host(host):
    """The IPv4 loopback address for ``host``; ValueError for any other."""
    if host in ("localhost", "", None):
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("%r is not an IP address; the agent listens on "
                         "loopback only (127.0.0.1)" % host) from None
    if ip.version != 4 or not ip.is_loopback:
        raise ValueError("%s is not an IPv4 loopback address: the agent "
                         "never listens beyond this node (use 127.0.0.1 or "
                         "a unix:// socket)" % host)
    return str(ip)


def _host_port(url, text):
    try:
        port = url.port
    except ValueError:
        port = None
    if not port:
        raise ValueError("%r needs a port, e.g. 127.0.0.1:6832" % text)
    return loopback_host(url.hostname), port


def parse_listen(text):
    """The agent's ``listen`` option: unix:///abs.sock, tcp:// or udp://."""
    url = urllib.parse.urlsplit(text or "")
    scheme = url.scheme.lower()
    if scheme == "unix":
        path = url.path
        if url.netloc or not path.startswith("/"):
            raise ValueError("unix listen address must be absolute: "
                             "unix:///run/stacktrail/agent.sock, not %r"
                             % text)
        return Address("unix", path)
    if scheme in ("tcp", "udp"):
        return Address(scheme, _host_port(url, text))
    raise ValueError("bad listen address %r: use unix:///abs/path.sock, "
                     "tcp://127.0.0.1:PORT or udp://127.0.0.1:PORT" % text)


def parse_agent_url(text):
    """The service's ``agent://`` connection string.

    ``agent:///abs/path.sock`` is a Unix stream socket; ``agent://HOST:PORT``
    is TCP on loopback, ``agent://HOST:PORT?transport=udp`` UDP.  Returns
    (Address, options dict from the query).
    """
    url = urllib.parse.urlsplit(text)
    options = dict(urllib.parse.parse_qsl(url.query))
    if not url.netloc:
        if not url.path.startswith("/"):
            raise ValueError("agent:// needs an absolute socket path or "
                             "127.0.0.1:PORT, got %r" % text)
        return Address("unix", url.path), options
    transport = options.pop("transport", "tcp").lower()
    if transport not in ("tcp", "udp"):
        raise ValueError("agent:// transport must be tcp or udp, got %r"
                         % transport)
    return Address(transport, _host_port(url, text)), options


# --- encoding (service side) -------------------------------------------------

def frame(payload):
    return HEADER.pack(MAGIC, len(payload)) + payload


def _encode(project, service, host, batch):
    return _dumps([project, service, host, batch]).encode("utf-8")


def encode_batch(batch, project, service, host, max_frame=MAX_FRAME,
                 parts=False):
    """Frames for a batch of raw points: ([(frame_bytes, n_points)], lost).

    A batch too big for one frame is halved until each part fits; a single
    point that cannot be encoded or is too big on its own is lost (counted
    by the caller).  Frames keep the batch's order.  With ``parts`` each
    frame comes as (frame_bytes, n_points, its points).
    """
    out = []
    lost = 0
    todo = [list(batch)]
    while todo:
        part = todo.pop()
        try:
            payload = _encode(project, service, host, part)
        except (TypeError, ValueError, RecursionError):
            payload = None
        if payload is not None and len(payload) + HEADER.size <= max_frame:
            out.append((frame(payload), len(part), part) if parts
                       else (frame(payload), len(part)))
        elif len(part) > 1:
            half = len(part) // 2
            todo.append(part[half:])
            todo.append(part[:half])
        else:
            lost += len(part)
    return out, lost


# --- decoding (agent side) ---------------------------------------------------

def _good_id(value):
    kind = type(value)
    return (kind is int and 0 <= value < MAX_ID) or (
        kind is str and len(value) <= MAX_TEXT_ID)


def _check_label(value):
    if value is not None and (type(value) is not str or len(value) > 255):
        raise ProtocolError("malformed", "bad project/service/host")


def validate(obj):
    """Check a decoded payload; returns its number of points.

    The agent runs this on every point it receives, so the common case is
    one inlined expression per point.
    """
    if type(obj) is not list or len(obj) != 4:
        raise ProtocolError("malformed", "payload is not a 4-item list")
    for label in obj[:3]:
        _check_label(label)
    batch = obj[3]
    if type(batch) is not list:
        raise ProtocolError("malformed", "points is not a list")
    for p in batch:
        if type(p) is not list or len(p) != 7:
            raise ProtocolError("malformed", "point is not a 7-item list")
        name, phase, a, b, c, ns, info = p
        if not (type(name) is str and len(name) <= MAX_NAME
                and (phase == 0 or phase == 1) and type(phase) is int
                and type(ns) is int and 0 <= ns < 1 << 64
                and (info is None or type(info) is dict)
                and ((type(a) is int and type(b) is int and type(c) is int
                      and 0 <= a < MAX_ID and 0 <= b < MAX_ID
                      and 0 <= c < MAX_ID)
                     or (_good_id(a) and _good_id(b) and _good_id(c)))):
            raise ProtocolError("malformed", "bad point")
    return len(batch)


def decode_payload(payload):
    """(decoded payload, n_points) or ProtocolError."""
    try:
        obj = _loads(payload)
    except (ValueError, RecursionError):
        raise ProtocolError("malformed", "not JSON") from None
    return obj, validate(obj)


class FrameReader:
    """Splits a byte stream into frame payloads, one connection each.

    ``feed`` returns complete payloads; a bad magic or an announced length
    above ``max_frame`` raises ProtocolError: the stream cannot be trusted
    past that point and the caller closes the connection.
    """

    def __init__(self, max_frame=MAX_FRAME):
        self.max_frame = max_frame
        self.buffer = bytearray()

    def feed(self, data):
        buf = self.buffer
        buf += data
        out = []
        pos = 0
        size = HEADER.size
        while len(buf) - pos >= size:
            magic, length = HEADER.unpack_from(buf, pos)
            if magic != MAGIC:
                raise ProtocolError("malformed", "bad frame magic")
            if length + size > self.max_frame:
                raise ProtocolError("oversized", "frame of %d bytes" % length)
            end = pos + size + length
            if len(buf) < end:
                break
            out.append(bytes(buf[pos + size:end]))
            pos = end
        if pos:
            del buf[:pos]
        return out


def split_datagram(data, max_frame=MAX_FRAME):
    """The payload of one datagram (one whole frame) or ProtocolError."""
    if len(data) < HEADER.size:
        raise ProtocolError("malformed", "short datagram")
    magic, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("malformed", "bad frame magic")
    if length + HEADER.size > max_frame:
        raise ProtocolError("oversized", "frame of %d bytes" % length)
    if length != len(data) - HEADER.size:
        raise ProtocolError("malformed", "truncated datagram")
    return data[HEADER.size:]
