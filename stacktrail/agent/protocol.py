"""The wire between a service (``agent://``) and the node agent.

Stdlib only: the service side imports this module (``orjson`` is used
when installed, see ``stacktrail.drivers.codec``).

A stream (Unix or TCP) carries *frames* one after another; a datagram
(UDP) holds exactly one frame::

    magic (4 bytes) | payload length (4 bytes, big endian) | payload

Version 2 (``b"STA2"``, what services send to an agent that offers it): a
binary, columnar batch of one process's raw points.  All integers are
little endian::

    header   u8 version (2), u8 flags, u16 reserved (0), u32 n (points),
             u32 meta_len, u32 ids_len, u32 info_len           (20 bytes)
    meta     JSON [project, service, host, [name, ...]]: the batch's
             distinct point names, each once
    names    n x u16 (u32 with flag 2): index of each point's name
    phases   n bytes: 0 start, 1 stop
    times    n x u64: nanoseconds since the epoch
    ids      u32 count, the distinct ids of the batch, then 3n x u32
             indexes into them (every base id, every parent id, every
             span id, in point order).  The distinct ids are count x 16
             bytes (128-bit integers, big endian, i.e. UUID byte order),
             or with flag 1 (some id is text a peer sent) u32 length and a
             JSON list of ints and strings
    infos    JSON [info or null, ...], one per point: each info encoded
             once, by one call of the JSON encoder for the whole batch

Ids and clocks stay integers and names are sent once per batch: the
service formats nothing (no UUID text, no timestamp, no message); the
agent does all of it.  A version 2 payload begins with the byte 0x02.

Version 1 (``b"STA1"``, what services before version 2 send, and what a
service sends to an agent that does not offer version 2): a JSON payload::

    [project, service, host, [[name, phase, base_id, parent_id, trace_id,
                               time_ns, info], ...]]

An agent reads both versions, on any connection, at any time, and its
spool keeps each payload as it came (a version 1 payload begins with
``[``), so records spooled by an older agent are replayed by a newer one.

Which version a service sends is agreed when it connects: it sends the
*hello*, a version 1 frame holding no points (``HELLO_PAYLOAD``); an agent
that reads version 2 answers with ``HELLO_REPLY`` (``b"STAH"``, JSON
``{"versions": [1, 2]}``), an older one answers nothing and stores the
empty batch (harmless).  No answer within the send timeout means version
1.  So the services and the agent of a node can be upgraded in either
order.

The agent survives hostile input: nothing is unpickled or unmarshalled,
JSON is parsed by ``json``/orjson (which cannot execute anything), every
length is checked against the bytes actually received before anything is
allocated for it, and ``decode_payload`` checks every field's type and
range.
"""

import array
import ipaddress
import itertools
import json
from json import encoder as _json_encoder
import operator
import socket
import struct
import sys
import urllib.parse

from stacktrail.common import ids as ids_mod
from stacktrail.drivers import codec

MAGIC = b"STA1"      # version 1 frames (and the hello)
MAGIC2 = b"STA2"     # version 2 frames
MAGIC_HELLO = b"STAH"   # the agent's answer to a hello
MAGICS = (MAGIC, MAGIC2)
VERSIONS = (1, 2)    # what this agent reads
HEADER = struct.Struct(">4sI")
HEADER2 = struct.Struct("<BBHIIII")
F_TEXT_IDS = 1
F_WIDE_NAMES = 2
_FLAGS = F_TEXT_IDS | F_WIDE_NAMES
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
# The hello: a version 1 frame with no points (an older agent stores it
# as an empty batch), and the answer of an agent that reads version 2.
HELLO_PAYLOAD = b"[null,null,null,[]]"
HELLO_REPLY_BODY = b'{"versions":[1,2]}'
MAX_HELLO_REPLY = 4096
_LITTLE = sys.byteorder == "little"
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
_quote = _json_encoder.encode_basestring_ascii   # str -> '"..."' (C)


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

def frame(payload, magic=MAGIC):
    return HEADER.pack(magic, len(payload)) + payload


HELLO = frame(HELLO_PAYLOAD)
HELLO_REPLY = frame(HELLO_REPLY_BODY, MAGIC_HELLO)


def parse_hello_reply(data):
    """The versions an agent offered in its answer to the hello (a tuple,
    empty when ``data`` is not such an answer)."""
    if len(data) < HEADER.size:
        return ()
    magic, length = HEADER.unpack_from(data)
    if magic != MAGIC_HELLO or length > MAX_HELLO_REPLY or \
            len(data) < HEADER.size + length:
        return ()
    try:
        body = json.loads(data[HEADER.size:HEADER.size + length])
        versions = body["versions"]
        return tuple(v for v in versions if type(v) is int)
    except (ValueError, TypeError, KeyError):
        return ()


def _encode(project, service, host, batch):
    """Version 1 payload."""
    return _dumps([project, service, host, batch]).encode("utf-8")


def _array(typecode, values):
    out = array.array(typecode, values)
    if not _LITTLE:
        out.byteswap()
    return out.tobytes()


def _indexes(table, keys):
    """``table[key]`` of each key, as a tuple made by one C-level call."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)(table)
    return tuple(map(table.__getitem__, keys))


def _encode_v2(project, service, host, batch):
    """Version 2 payload of a batch of raw points.

    Raises (TypeError, ValueError, OverflowError, RecursionError) when a
    point cannot be sent as it is (``encode_batch`` then isolates it).
    The common case is a handful of C-level passes over the batch.
    """
    n = len(batch)
    columns = list(zip(*batch))
    if len(columns) < 7:
        if n:
            raise TypeError("a point has fewer than 7 fields")
        columns = [()] * 7
    names, phases, bases, parents, traces, times, infos = columns[:7]
    # names, each once
    name_list = list(dict.fromkeys(names))
    for name in name_list:
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise TypeError("bad point name")
    name_index = dict(zip(name_list, itertools.count()))
    wide = len(name_list) > 0xFFFF
    name_bytes = _array("I" if wide else "H", _indexes(name_index, names))
    phase_bytes = bytes(phases)
    if phase_bytes.strip(b"\x00\x01"):
        raise ValueError("bad phase")
    time_bytes = _array("Q", times)
    # ids, each once
    all_ids = list(itertools.chain(bases, parents, traces))
    distinct = dict.fromkeys(all_ids)
    flags = F_WIDE_NAMES if wide else 0
    try:
        table = b"".join(map(int.to_bytes, distinct,
                             itertools.repeat(16)))
        head = _U32.pack(len(distinct))
    except TypeError:   # text ids from a peer (or junk, refused below)
        flags |= F_TEXT_IDS
        table = _text_ids(distinct)
        head = _U32X2.pack(len(distinct), len(table))
    index = dict(zip(distinct, itertools.count()))
    ids_bytes = head + table + _array("I", _indexes(index, all_ids))
    # infos, each encoded once, all in one call
    if not _TYPES_OK.issuperset(map(type, infos)):
        for info in infos:
            if info is not None and not isinstance(info, dict):
                raise TypeError("info is not a dict")
    info_bytes = codec.dumps_bytes(infos if infos.__class__ is list
                                   else list(infos))
    meta = codec.dumps_bytes([project, service, host, name_list])
    return b"".join((HEADER2.pack(2, flags, 0, n, len(meta),
                                  len(ids_bytes), len(info_bytes)),
                     meta, name_bytes, phase_bytes, time_bytes, ids_bytes,
                     info_bytes))


_TYPES_OK = frozenset((dict, type(None)))


def _text_ids(distinct):
    """The JSON table of distinct ids when some are text."""
    table = []
    for value in distinct:
        if isinstance(value, str):
            if len(value) > MAX_TEXT_ID:
                raise ValueError("text id too long")
            table.append(str(value))
        elif isinstance(value, int):
            if not 0 <= value < MAX_ID:
                raise OverflowError("id out of range")
            table.append(int(value))
        else:
            raise TypeError("id of type %s" % type(value).__name__)
    return json.dumps(table, separators=(",", ":")).encode(
        "utf-8", "surrogatepass")


_ENCODERS = {1: _encode, 2: _encode_v2}
_MAGIC_OF = {1: MAGIC, 2: MAGIC2}
_UNENCODABLE = (TypeError, ValueError, OverflowError, RecursionError,
                UnicodeError)


def encode_batch(batch, project, service, host, max_frame=MAX_FRAME,
                 parts=False, version=2):
    """Frames for a batch of raw points: ([(frame_bytes, n_points)], lost).

    A batch too big for one frame is halved until each part fits; a single
    point that cannot be encoded or is too big on its own is lost (counted
    by the caller).  Frames keep the batch's order.  With ``parts`` each
    frame comes as (frame_bytes, n_points, its points).  ``version`` is the
    wire version the agent agreed to (1 or 2).
    """
    encode = _ENCODERS[version]
    magic = _MAGIC_OF[version]
    out = []
    lost = 0
    todo = [batch if batch.__class__ is list else list(batch)]
    while todo:
        part = todo.pop()
        try:
            payload = encode(project, service, host, part)
        except _UNENCODABLE:
            payload = None
        if payload is not None and len(payload) + HEADER.size <= max_frame:
            data = frame(payload, magic)
            out.append((data, len(part), part) if parts
                       else (data, len(part)))
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
    """Check a decoded version 1 payload; returns its number of points.

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


class Frame:
    """A decoded payload: who sent it (``origin``: project, service,
    host), ``n`` points, the wire ``version``; ``points()`` gives them as
    a batch of raw points (version 2: a ``points.Batch`` with its columns).

    Indexing gives the version 1 shape, ``[project, service, host,
    points]``.
    """

    __slots__ = ("origin", "n", "version", "_source", "_points")

    def __init__(self, origin, n, version, source):
        self.origin = origin
        self.n = n
        self.version = version
        self._source = source
        self._points = None

    def points(self):
        # Each backend's writer thread may ask first: _points is set before
        # _source is dropped, so a thread that finds no source finds points.
        points = self._points
        if points is None:
            source = self._source
            if source is None:
                return self._points
            points = source[3] if self.version == 1 else _expand_v2(*source)
            self._points = points
            self._source = None
        return points

    def __getitem__(self, key):
        return (list(self.origin) + [self.points()])[key]

    def __len__(self):
        return 4


EMPTY = Frame((None, None, None), 0, 1, [None, None, None, []])


def _decode_v1(payload):
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        raise ProtocolError("malformed", "not JSON") from None
    n = validate(obj)
    return Frame(tuple(obj[:3]), n, 1, obj), n


def _typed_array(typecode, data):
    out = array.array(typecode)
    out.frombytes(data)
    if not _LITTLE:
        out.byteswap()
    return out


def _json_section(data, what):
    try:
        return codec.loads(bytes(data))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("malformed", "%s is not JSON" % what) from None


def _decode_v2(payload):
    size = HEADER2.size
    if len(payload) < size:
        raise ProtocolError("malformed", "short version 2 header")
    version, flags, reserved, n, meta_len, ids_len, info_len = \
        HEADER2.unpack_from(payload)
    if version != 2 or flags & ~_FLAGS or reserved:
        raise ProtocolError("malformed", "bad version 2 header")
    name_width = 4 if flags & F_WIDE_NAMES else 2
    if size + meta_len + n * (name_width + 9) + ids_len + info_len \
            != len(payload):
        raise ProtocolError("malformed", "section lengths do not add up")
    view = memoryview(payload)
    pos = size
    meta = _json_section(view[pos:pos + meta_len], "meta")
    pos += meta_len
    if type(meta) is not list or len(meta) != 4 or type(meta[3]) is not list:
        raise ProtocolError("malformed", "bad meta")
    for label in meta[:3]:
        _check_label(label)
    name_list = meta[3]
    for name in name_list:
        if type(name) is not str or len(name) > MAX_NAME:
            raise ProtocolError("malformed", "bad point name")
    names = _lookup(name_list, _typed_array(
        "I" if name_width == 4 else "H", view[pos:pos + n * name_width]),
        "name")
    pos += n * name_width
    phases = bytes(view[pos:pos + n])
    pos += n
    if phases.strip(b"\x00\x01"):
        raise ProtocolError("malformed", "bad phase")
    times = _typed_array("Q", view[pos:pos + 8 * n])
    pos += 8 * n
    ids = _decode_ids(view[pos:pos + ids_len], n, flags & F_TEXT_IDS)
    pos += ids_len
    infos = _json_section(view[pos:pos + info_len], "infos")
    if type(infos) is not list or len(infos) != n or \
            not _TYPES_OK.issuperset(map(type, infos)):
        raise ProtocolError("malformed", "bad infos")
    origin = tuple(meta[:3])
    return Frame(origin, n, 2, (names, phases, times, ids, infos)), n


def _lookup(table, index, what):
    """``table``'s item at each of ``index``: the check that every index
    is in range and the expansion in one C-level pass."""
    try:
        return list(map(table.__getitem__, index))
    except IndexError:
        raise ProtocolError("malformed", "%s index out of range"
                            % what) from None


def _decode_ids(view, n, text):
    """(the text of every id of the ids section, in order, whether every
    text may go into JSON as it is)."""
    if text:
        if len(view) < _U32X2.size:
            raise ProtocolError("malformed", "short ids section")
        count, table_len = _U32X2.unpack_from(view)
        start = _U32X2.size
        end = start + table_len
        table = _json_section(view[start:end], "ids") \
            if end <= len(view) else None
        if type(table) is not list or len(table) != count or \
                not all(_good_id(v) for v in table):
            raise ProtocolError("malformed", "bad id table")
        texts = [ids_mod.to_uuid(v) for v in table]
        plain = all(_quote(t) == '"%s"' % t for t in texts)
    else:
        if len(view) < _U32.size:
            raise ProtocolError("malformed", "short ids section")
        count, = _U32.unpack_from(view)
        start = _U32.size
        end = start + 16 * count
        if end > len(view):
            raise ProtocolError("malformed", "short id table")
        texts = uuid_texts(view[start:end])
        plain = True
    if len(view) - end != 12 * n:
        raise ProtocolError("malformed", "bad ids section length")
    return _lookup(texts, _typed_array("I", view[end:]), "id"), plain


# Where each of the 32 hex digits of an id goes in its UUID text line
# (36 characters, dashes at 8, 13, 18 and 23, then a newline).
_UUID_LINE = b"-" * 36 + b"\n"
_UUID_DIGITS = [place for place in range(36) if place not in (8, 13, 18, 23)]


def uuid_texts(table):
    """Dashed UUID text of each 16-byte id of ``table``.

    Digit by digit rather than id by id: 32 slice assignments of a column
    each (C loops), instead of a Python-level format per id.
    """
    digits = bytes(table).hex().encode()
    lines = bytearray(_UUID_LINE) * (len(digits) // 32)
    for digit, place in enumerate(_UUID_DIGITS):
        lines[place::37] = digits[digit::32]
    return lines.decode().split()


def _expand_v2(names, phases, times, ids, infos):
    """The raw points of a version 2 frame, as a ``points.Batch``: ids are
    their UUID text (equivalent to the integers for every consumer), and
    the columns are kept for the stores' bulk formatting, which writes ids
    unescaped; a plain list when a peer's text id needs JSON escaping."""
    from stacktrail.common import points
    texts, plain = ids
    n = len(phases)
    columns = (names, phases, texts[:n], texts[n:2 * n], texts[2 * n:],
               times.tolist(), infos)
    if not plain:   # a peer's text id JSON must escape: the general path
        return list(zip(*columns))
    return points.Batch.from_columns(*columns)


def decode_payload(payload):
    """(Frame, n_points) of a payload of either version, or
    ProtocolError."""
    if payload[:1] == b"\x02":
        return _decode_v2(payload)
    return _decode_v1(payload)


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
            if magic not in MAGICS:
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
    if magic not in MAGICS:
        raise ProtocolError("malformed", "bad frame magic")
    if length + HEADER.size > max_frame:
        raise ProtocolError("oversized", "frame of %d bytes" % length)
    if length != len(data) - HEADER.size:
        raise ProtocolError("malformed", "truncated datagram")
    return data[HEADER.size:]
