"""Generated OpenStack-shaped traces whose answer is known.

``volume_create`` makes the messages of one Cinder volume create as the
real services record it (``tests/services/test_cinder_tracing.py``): the
API's ``wsgi`` span answers 202 after casting to the scheduler, which
casts to the volume service, whose ``driver`` spans do the slow part long
after the API returned.  Every span names the service that ran it, about a
third of the ``db`` spans are ``BEGIN`` statements, and a trace has 50
spans (100 points) by default.

``Plant`` makes one span kind of one service slower by a known amount, so
a test (or ``benchmarks/analyze.py``) can check that ``stacktrail analyze``
names it.  Times are drawn from a seeded generator: the same arguments give
the same traces.
"""

import random
import time
import uuid

API, SCHEDULER, VOLUME = "osapi_volume", "cinder-scheduler", "cinder-volume"
HOSTS = {API: "ctl-1", SCHEDULER: "ctl-1", VOLUME: "stor-7"}
SELECTS = (
    "SELECT volume_types.id AS volume_types_id FROM volume_types WHERE "
    "volume_types.id = ?",
    "SELECT quotas.id AS quotas_id FROM quotas WHERE quotas.project_id = ?",
    "SELECT volumes.id AS volumes_id FROM volumes WHERE volumes.id = ?",
    "SELECT services.id AS services_id FROM services WHERE services.host = ?",
)
WRITES = (
    "INSERT INTO volumes (id, size, status) VALUES (?, ?, ?)",
    "UPDATE volumes SET status=?, updated_at=? WHERE volumes.id = ?",
    "INSERT INTO reservations (uuid, usage_id) VALUES (?, ?)",
)
_SECONDS = {}


def stamp(us):
    """osprofiler's timestamp text of microseconds since the epoch."""
    second, micros = divmod(us, 1_000_000)
    head = _SECONDS.get(second)
    if head is None:
        if len(_SECONDS) > 10_000:
            _SECONDS.clear()
        head = _SECONDS[second] = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return "%s.%06d" % (head, micros)


class Plant:
    """Spans named ``kind`` in ``service`` take ``extra_ms`` longer."""

    def __init__(self, service, kind, extra_ms):
        self.service, self.kind, self.extra_ms = service, kind, extra_ms

    def extra_us(self, service, kind):
        if service == self.service and kind == self.kind:
            return int(self.extra_ms * 1000)
        return 0


class _Trace:
    """Messages of one trace, appended span by span."""

    def __init__(self, base_id, rng, plant, error):
        self.base_id = base_id
        self.rng = rng
        self.plant = plant
        self.error = error
        self.messages = []

    def span_id(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add(self, name, parent, service, start, stop, start_info,
            stop_info=None):
        trace_id = self.span_id()
        host = HOSTS[service]
        common = {"base_id": self.base_id, "trace_id": trace_id,
                  "parent_id": parent, "project": service.split("-")[0]
                  .replace("osapi_volume", "cinder"), "service": service}
        self.messages.append(dict(common, name=name + "-start",
                                  timestamp=stamp(start),
                                  info=dict(start_info, host=host)))
        self.messages.append(dict(common, name=name + "-stop",
                                  timestamp=stamp(stop),
                                  info=dict(stop_info or {}, host=host)))
        return trace_id

    def ms(self, mean):
        """A duration around ``mean`` ms, in microseconds (lognormal)."""
        return max(1, int(self.rng.lognormvariate(0, 0.25) * mean * 1000))

    def statements(self, parent, service, at, count):
        """``count`` db spans from ``at``, a BEGIN opening each transaction
        of three; returns the time after the last."""
        for i in range(count):
            if i % 3 == 0:
                statement = "BEGIN"
                took = self.ms(0.03)
            else:
                statement = self.rng.choice(SELECTS if i % 3 == 1
                                            else WRITES)
                took = self.ms(0.4)
            took += self.extra(service, "db")
            at += self.ms(0.2)
            self.add("db", parent, service, at, at + took,
                     {"db": {"statement": statement, "system": "sqlite"}})
            at += took
        return at

    def extra(self, service, kind):
        return self.plant.extra_us(service, kind) if self.plant else 0


def volume_create(start_us, rng, plant=None, error=False, spans=50,
                  path="/v3/volumes", method="POST"):
    """Messages of one volume create starting at ``start_us`` (about
    ``spans`` spans, at least 12)."""
    base_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    t = _Trace(base_id, rng, plant, error)
    # Spans per service: API 1 + n_api + 1, scheduler 1 + n_sched + 1,
    # volume 1 + n_vol + 2 drivers.
    free = max(0, spans - 7)
    n_api, n_sched = free * 3 // 10, free * 2 // 10
    n_vol = free - n_api - n_sched

    # The API: statements, then the cast, then the 202.
    root_start = start_us
    wsgi = t.span_id()  # id known before its children are written
    at = t.statements(wsgi, API, root_start + t.ms(1.0)
                      + t.extra(API, "wsgi"), n_api)
    cast1 = at + t.ms(0.5)
    cast1_end = cast1 + t.ms(1.5) + t.extra(API, "rpc")
    root_end = cast1_end + t.ms(2.0)
    status = 500 if error else 202

    # The scheduler picks the cast up later, after the API answered.
    sched_start = cast1_end + t.ms(8.0) + t.extra(SCHEDULER, "queued")
    server1 = t.span_id()
    at = t.statements(server1, SCHEDULER, sched_start + t.ms(2.0)
                      + t.extra(SCHEDULER, "rpc"), n_sched)
    cast2 = at + t.ms(0.5)
    cast2_end = cast2 + t.ms(1.0)
    sched_end = cast2_end + t.ms(1.0)

    # The volume service: statements, the driver's create, more statements.
    vol_start = cast2_end + t.ms(6.0) + t.extra(VOLUME, "queued")
    server2 = t.span_id()
    at = t.statements(server2, VOLUME, vol_start + t.ms(1.0)
                      + t.extra(VOLUME, "rpc"), n_vol // 2)
    drv1 = at + t.ms(0.3)
    drv1_end = drv1 + t.ms(40.0) + t.extra(VOLUME, "driver")
    drv2 = drv1_end + t.ms(0.2)
    drv2_end = drv2 + t.ms(3.0) + t.extra(VOLUME, "driver")
    at = t.statements(server2, VOLUME, drv2_end, n_vol - n_vol // 2)
    vol_end = at + t.ms(1.5)

    def rpc(kind, method_, topic=None):
        info = {"method": method_, "type": kind}
        if topic:
            info["topic"] = topic
        return {"rpc": info}

    driver = "cinder.volume.drivers.lvm.LVMVolumeDriver."
    # Spans whose ids were taken before their children: write them now.
    t.messages[:0] = _span(t, wsgi, "wsgi", None, API, root_start, root_end,
                           {"request": {"method": method, "path": path}},
                           {"response": {"status": status}})
    c1 = t.add("rpc", wsgi, API, cast1, cast1_end,
               rpc("cast", "create_volume", SCHEDULER))
    t.messages += _span(t, server1, "rpc", c1, SCHEDULER, sched_start,
                        sched_end, rpc("server", "create_volume"))
    c2 = t.add("rpc", server1, SCHEDULER, cast2, cast2_end,
               rpc("cast", "create_volume", VOLUME + ".stor-7"))
    t.messages += _span(t, server2, "rpc", c2, VOLUME, vol_start, vol_end,
                        rpc("server", "create_volume"))
    t.add("driver", server2, VOLUME, drv1, drv1_end,
          {"function": {"name": driver + "create_volume"}},
          {"etype": "ProcessExecutionError", "message": "lvcreate failed"}
          if error else None)
    t.add("driver", server2, VOLUME, drv2, drv2_end,
          {"function": {"name": driver + "create_export"}})
    return base_id, t.messages


def _span(t, trace_id, name, parent, service, start, stop, start_info,
          stop_info=None):
    host = HOSTS[service]
    common = {"base_id": t.base_id, "trace_id": trace_id,
              "parent_id": parent or t.base_id,
              "project": "cinder", "service": service}
    return [dict(common, name=name + "-start", timestamp=stamp(start),
                 info=dict(start_info, host=host)),
            dict(common, name=name + "-stop", timestamp=stamp(stop),
                 info=dict(stop_info or {}, host=host))]


def window(start_us, count, every_us, seed, plant=None, error_every=0,
           spans=50, other_every=0):
    """``count`` traces starting ``every_us`` apart from ``start_us``:
    yields (base_id, messages).  Every ``error_every``-th trace fails (its
    driver raises, the API answers 500); every ``other_every``-th is a
    ``GET /v3/volumes/detail`` instead (another root, for filters)."""
    rng = random.Random(seed)
    for i in range(count):
        error = bool(error_every) and i % error_every == error_every - 1
        other = bool(other_every) and i % other_every == other_every - 1
        yield volume_create(start_us + i * every_us, rng, plant, error,
                            spans, *(("/v3/volumes/detail", "GET")
                                     if other else ()))
