"""osprofiler's signed trace info: URL-safe base64 JSON plus HMAC-SHA1.

The byte layout is osprofiler 4.x's, so headers signed by either library
validate in the other.  Nothing here raises on what a peer sent: every
malformed, oversized, non-text or deeply nested input reads as "not
signed" (None).
"""

import binascii
import math

from stacktrail.common import logtext

# hashlib, hmac, json and base64 are imported where they are used: a
# process that never validates a trace does not pay for them at import.
LOG = logtext.Logger(__name__)

MAX_PACKED = 4096
MAX_KEY = 1024

# The weak-key check: a key shorter than MIN_KEY_LENGTH characters, whose
# estimated entropy is under MIN_KEY_BITS, or that is mostly a run of
# consecutive characters is refused for validating trace triggers.  Random
# keys of 128 bits pass, whatever their encoding (``openssl rand -hex 16``,
# ``openssl rand -base64 18``, ``python3 -c 'import secrets;
# print(secrets.token_urlsafe())'``, a UUID); default values, dictionary
# words, short passwords, repeated or sequential text do not.  The
# estimate is conservative for short keys: a 64-bit key (16 hex digits) is
# refused, a 96-bit one (24 hex digits) very rarely.
MIN_KEY_LENGTH = 16
MIN_KEY_BITS = 64


def split_keys(keys):
    """A list of keys from osprofiler's comma-separated text (or a list)."""
    if not keys:
        return []
    if isinstance(keys, str):
        keys = keys.split(",")
    return [k.strip() for k in keys
            if isinstance(k, str) and k and k.strip()]


def estimated_bits(key):
    """A conservative estimate of the entropy of ``key`` in bits.

    The character distribution's Shannon entropy times the length, scaled
    down by how well the key compresses (repeated text compresses): an
    upper bound for text a person chose, close to the truth for a random
    key of 20 characters or more.
    """
    import zlib  # only when keys are loaded, never on the request path

    length = len(key)
    if not length:
        return 0.0
    counts = {}
    for char in key:
        counts[char] = counts.get(char, 0) + 1
    shannon = -sum(n / length * math.log2(n / length)
                   for n in counts.values()) * length
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = len(packer.compress(key.encode("utf-8", "surrogatepass")) +
                 packer.flush())
    return shannon * min(1.0, packed / length)


def _sequential(key):
    """True when most neighbours are consecutive characters (abcd, 4321).

    Repeated characters do not count (``estimated_bits`` judges those): with
    them, one random hex key in 67,000 (``openssl rand -hex 16``) was
    refused."""
    steps = sum(1 for a, b in zip(key, key[1:]) if abs(ord(a) - ord(b)) == 1)
    return steps * 2 > len(key) - 1


def weakness(key):
    """Why ``key`` is too weak to trust a trace trigger, or None if strong.

    Judged by length and estimated entropy, not by a list of names.
    """
    if not isinstance(key, str) or not key:
        return "empty"
    if len(key) < MIN_KEY_LENGTH:
        return "shorter than %d characters" % MIN_KEY_LENGTH
    if len(key) > MAX_KEY:
        return "longer than %d characters" % MAX_KEY
    if _sequential(key):
        return "a run of consecutive characters"
    bits = estimated_bits(key)
    if bits < MIN_KEY_BITS:
        return "about %d bits of entropy, under %d" % (bits, MIN_KEY_BITS)
    return None


def _shown(key):
    """A weak key as a log line may show it: its first characters only."""
    return key[:3] + "..." if len(key) > 6 else key


# Weak keys already refused in this process: a service reads its keys in
# several places (the settings, the WSGI switch, each filter), and says so
# once, not once per place or per reload.
_refused = logtext.Problems()


def usable_keys(keys, allow_insecure=False):
    """Keys allowed to validate incoming headers and RPC trace info.

    A weak key (see ``weakness``) is refused unless ``allow_insecure``:
    anyone who read the documentation knows ``SECRET_KEY``, and a short or
    guessable key lets any caller switch tracing on.
    """
    keys = split_keys(keys)
    if allow_insecure:
        return keys
    usable = []
    for key in keys:
        why = weakness(key)
        if why is None:
            usable.append(key)
        elif _refused.new(key, why):
            LOG.warning("stacktrail: refusing the weak HMAC key %r (%s) for "
                        "triggered tracing; set [profiler] hmac_keys to a "
                        "random secret, e.g. the output of 'openssl rand "
                        "-hex 16' (or allow_insecure_hmac_keys = true for a "
                        "test cloud)", _shown(key), why)
    return usable


def matching_key(candidate, keys):
    """The key of ``keys`` equal to ``candidate`` (constant-time), or None.

    Every key is compared, whichever matches, so the time taken does not
    tell which key (or how much of it) a guess got right.
    """
    if not isinstance(candidate, str) or not candidate or \
            len(candidate) > MAX_KEY:
        return None
    import hmac
    given = candidate.encode("utf-8", "surrogatepass")
    found = None
    for key in keys or ():
        if not isinstance(key, str):
            continue
        if hmac.compare_digest(given, key.encode("utf-8", "surrogatepass")):
            found = key
    return found


# key -> an HMAC-SHA1 object that has seen only the key.  Copying it is
# cheaper than a new HMAC, whose key set-up (OpenSSL 3 fetches the
# algorithm each time) costs tens of microseconds on a request thread.
_MACS = {}
_MACS_MAX = 64


def digest(data, key):
    if isinstance(data, str):
        data = data.encode()
    base = _MACS.get(key)
    if base is None:
        import hashlib
        import hmac
        base = hmac.new(key.encode("utf-8", "surrogatepass"),
                        digestmod=hashlib.sha1)
        if len(_MACS) < _MACS_MAX:
            _MACS[key] = base
    mac = base.copy()
    mac.update(data)
    return mac.hexdigest()


def pack(data, key):
    """(base64 text, hex HMAC) of a dict, as osprofiler's signed_pack."""
    import base64
    import json
    packed = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    return packed, digest(packed, key)


# Signatures already verified: (packed, mac) -> (data, key).  Every call
# a client makes from one span carries the same signed header (and each
# RPC of a request the same token), so most are seen more than once.  A
# hit still requires the key to be configured, so removing a key (on
# SIGHUP) refuses its headers at once; it reveals nothing an attacker
# could use, as only a pair that validated before can hit.
_VERIFIED = {}
_VERIFIED_MAX = 256


def unpack(packed, mac, keys):
    """(data, key that validated) for a valid signature, else None.

    Every key is tried with a constant-time compare, so the key in use
    downstream is the one the caller signed with (key rotation).  Never
    raises: non-text, non-ASCII, oversized or undecodable input is None.
    """
    if not isinstance(packed, str) or not isinstance(mac, str) or \
            not packed or not mac or not keys or len(packed) > MAX_PACKED \
            or len(mac) > 128 or not packed.isascii():
        return None
    seen = _VERIFIED.get((packed, mac))
    if seen is not None and seen[1] in keys:
        return dict(seen[0]), seen[1]
    mac = mac.strip().lower()
    if not mac.isascii():
        return None
    import hmac
    found = None
    for key in keys:
        if isinstance(key, str) and \
                hmac.compare_digest(digest(packed, key), mac):
            found = found or key
    if found is None:
        return None
    data = _decode(packed)
    if data is None:
        return None
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(packed, mac)] = (data, found)
    return dict(data), found


# What ``base64.urlsafe_b64decode`` maps before decoding.
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_JSON_SPACE = " \t\n\r"
_json = []   # (the JSON decoder's raw_decode, json.loads), made on first use


def _decode(packed):
    """The dict ``pack`` packed, or None: ``json.loads(base64.
    urlsafe_b64decode(packed))``, the common case (UTF-8 JSON) by their C
    parts in a third of the time: it runs on the request thread for every
    new trace header."""
    if not _json:
        import json
        _json.extend((json.JSONDecoder().raw_decode, json.loads))
    try:
        raw = binascii.a2b_base64(packed.encode("ascii").translate(
            _URLSAFE))
    except (ValueError, TypeError):
        return None
    try:
        text = raw.decode("utf-8").strip(_JSON_SPACE)
        data, end = _json[0](text)
        if end != len(text):
            raise ValueError("extra data")
    except (ValueError, RecursionError):
        try:   # what json.loads makes of other bytes (UTF-16, a BOM...)
            data = _json[1](raw)
        except (ValueError, TypeError, RecursionError, MemoryError):
            return None
    except MemoryError:
        return None
    return data if isinstance(data, dict) else None
