"""The JSON codec, on both of its paths: the compiled one (orjson, the
``fast`` extra) and the standard library fallback every install has."""

import json
import math

import pytest

from stacktrail.agent import protocol
from stacktrail.common import points
from stacktrail.drivers import base
from stacktrail.drivers import codec
from tests.agent import harness
from tests.codec_paths import path  # noqa: F401


def test_round_trip_and_unencodable_values(path):
    value = {"a": [1, 2.5, None, True], "text": "caf\u00e9 \u2603",
             "obj": object(), (1, 2): "tuple key dropped"}
    text = codec.dumps(value)
    back = codec.loads(text)
    assert back["a"] == [1, 2.5, None, True]
    assert back["text"] == "caf\u00e9 \u2603"
    assert back["obj"].startswith("<object")
    assert codec.loads(codec.dumps_bytes(value)) == back
    assert json.loads(text) == back   # plain JSON either way


def test_values_only_the_stdlib_writes_are_read(path):
    # NaN and a lone surrogate: orjson refuses them, the fallback reads them.
    assert math.isnan(codec.loads('{"x": NaN}')["x"])
    assert codec.loads('["\\ud800"]') == ["\ud800"]
    with pytest.raises(ValueError):
        codec.loads(b"{not json")


def test_each_record_is_decoded_on_its_own(path):
    items = [b'{"a":1}', b"junk", '["x"]', b'{"a":2} trailing', b'"\xff"',
             b'{"b":3}']
    values, bad = codec.loads_each(items)
    assert values == [{"a": 1}, ["x"], {"b": 3}]
    assert bad == [1, 3, 4]


def test_agent_formats_the_same_messages_on_both_paths(path):
    # The agent's bulk formatting of a version 2 frame gives, field for
    # field, the messages of the general path.
    batch = harness.make_points(30) + [
        ("odd", 0, 1, 1, 2, 3, {(1, 2): "only a key JSON cannot hold"}),
        ("odd", 1, 1, 1, 2, 4, {"host": "elsewhere", "n": 1.5}),
        ("odd", 0, 1, 1, 5, 6, {"text": "caf\u00e9", "obj": object()})]
    frames, _ = protocol.encode_batch(batch, "zaqar", "api", "node1")
    decoded, _ = protocol.decode_payload(frames[0][0][protocol.HEADER.size:])
    fast = base.points_json(decoded.points(), "node1", "zaqar", "api")
    general = [base.to_json(points.to_message(p, "node1", "zaqar", "api"))
               for p in list(decoded.points())]
    assert [json.loads(t) for t in fast] == [json.loads(t) for t in general]


def test_name_says_which_path(path):
    assert codec.name() == ("orjson" if path == "fast" else "json (stdlib)")
