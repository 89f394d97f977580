"""``mongodb://host:port/dbname``: traces in MongoDB (pymongo 4).

The layout is osprofiler's, so either tool reads the other's traces:
collection ``profiler`` holds one document per message, ``profiler_error``
one ``{base_id, timestamp}`` per trace that recorded an error.  The
database is the URL's path (default ``osprofiler``).

With a retention (``[profiler] retention`` seconds or the ``retention``
keyword) each document carries ``expire_at``, a real datetime, and a TTL
index with ``expireAfterSeconds=0`` removes it then.  Storing the deadline
rather than the write time means a changed retention never conflicts with
the existing index (MongoDB refuses to re-create an index with other
options) and each document keeps the retention it was written under.

Every call is bounded by ``store_timeout`` (server selection, connect,
socket reads and writes).  A document BSON cannot hold (a NUL byte in a
key, a lone surrogate) is refused by the client before anything is sent:
a content error, which ``base.deliver`` answers by cleaning the batch.
"""

import contextlib
import datetime

from stacktrail.common import clock
from stacktrail.common import ids
from stacktrail.common import logtext
from stacktrail.drivers import base

DEFAULT_DB = "osprofiler"
DEFAULT_FIELDS = ("base_id", "timestamp")
HIDDEN = {"_id": 0, "expire_at": 0}  # ours, not part of a message
# Documents per reply when reading a trace: the server's default (101,
# then 16 MiB) costs a slow server a third more time on a big trace.
READ_BATCH = 5000


def _pymongo():
    base.require("pymongo.errors", "mongodb")
    return base.require("pymongo", "mongodb")


def _one_line(exc):
    # Server selection errors append the whole topology after a comma.
    return logtext.one_line(exc, with_type=False).split(", Timeout:")[0]


class MongoDBDriver(base.Driver):
    """osprofiler's MongoDB layout, batched writes, one-query listing."""

    def __init__(self, connection_str, project=None, service=None, host=None,
                 conf=None, db_name=None, timeout=None, **kwargs):
        super().__init__(connection_str, project=project, service=service,
                         host=host, conf=conf, **kwargs)
        self._pymongo = _pymongo()
        self.db_name = db_name or self.url.path.strip("/") or DEFAULT_DB
        retention = self.option("retention")
        self.retention = float(retention) if retention else None
        self.timeout = float(timeout) if timeout else self.store_timeout
        self._client = None
        self._indexed = False

    # connection

    def _connect(self):
        """The database, connecting lazily: a service starts while its
        store is down, and the read side reports the failure when used."""
        if self._client is None:
            ms = int(self.timeout * 1000)
            try:
                self._client = self._pymongo.MongoClient(
                    self.connection_str, connect=False,
                    serverSelectionTimeoutMS=ms, connectTimeoutMS=ms,
                    socketTimeoutMS=ms, waitQueueTimeoutMS=ms)
            except self._pymongo.errors.PyMongoError as exc:
                raise base.DriverError("bad mongodb connection string %r: %s"
                                       % (self.connection_str,
                                          _one_line(exc))) from None
        return self._client[self.db_name]

    def _ready(self):
        db = self._connect()
        if not self._indexed:
            self._create_indexes(db)
            self._indexed = True
        return db

    def _create_indexes(self, db):
        db.profiler.create_index("base_id")
        db.profiler.create_index("timestamp")
        db.profiler_error.create_index("base_id", unique=True)
        if self.retention:
            for collection in (db.profiler, db.profiler_error):
                collection.create_index("expire_at", expireAfterSeconds=0)

    @contextlib.contextmanager
    def _errors(self, action):
        """pymongo failures as one-line DriverErrors."""
        try:
            yield
        except self._pymongo.errors.PyMongoError as exc:
            raise base.DriverError(
                "mongodb store at %s: cannot %s: %s"
                % (self.url.netloc.rpartition("@")[2] or self.connection_str,
                   action, _one_line(exc))) from None

    def content_error(self, exc):
        import bson.errors
        if isinstance(exc, bson.errors.BSONError):
            return True
        if isinstance(exc, self._pymongo.errors.PyMongoError):
            return False
        return super().content_error(exc)

    def after_fork(self):
        # pymongo clients are not fork-safe: the child opens its own.
        self._client = None

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    # write side

    def notify(self, info, **kwargs):
        self.write_messages([info])

    def write_messages(self, messages):
        documents = [self._document(m) for m in messages]
        if not documents:
            return
        with self._errors("write"):
            db = self._ready()
            db.profiler.insert_many(documents, ordered=False)
            errors = self._error_updates(documents)
            if errors:
                db.profiler_error.bulk_write(errors, ordered=False)

    def _document(self, message):
        document = dict(message)
        if self.project is not None:
            document.setdefault("project", self.project)
        if self.service is not None:
            document.setdefault("service", self.service)
        if self.retention:
            document["expire_at"] = self._expire_at()
        return document

    def _expire_at(self):
        return (datetime.datetime.now(datetime.timezone.utc)
                + datetime.timedelta(seconds=self.retention))

    def _error_updates(self, documents):
        """One upsert per failing trace, keeping its earliest timestamp."""
        first = {}
        for doc in documents:
            if (doc.get("info") or {}).get("etype") is not None:
                stamp = first.get(doc["base_id"])
                if stamp is None or doc["timestamp"] < stamp:
                    first[doc["base_id"]] = doc["timestamp"]
        updates = []
        for base_id, stamp in first.items():
            change = {"$min": {"timestamp": stamp}}
            if self.retention:
                change["$max"] = {"expire_at": self._expire_at()}
            updates.append(self._pymongo.UpdateOne(
                {"base_id": base_id}, change, upsert=True))
        return updates

    # read side

    def get_messages(self, base_id):
        with self._errors("read"):
            return list(self._ready().profiler.find(
                {"base_id": ids.to_uuid(base_id)}, HIDDEN,
                batch_size=READ_BATCH))

    def list_traces(self, fields=None):
        """Each trace once, with the fields of its earliest message.

        One aggregation: sort by timestamp (indexed), group by base_id
        taking the first value of every field asked for.
        """
        wanted = list(DEFAULT_FIELDS) + sorted(
            set(fields or ()) - set(DEFAULT_FIELDS))
        # Output names of $group cannot contain dots: number them.
        group = {"_id": "$base_id"}
        group.update({"f%d" % i: {"$first": "$" + field}
                      for i, field in enumerate(wanted)})
        pipeline = [{"$sort": {"timestamp": 1}}, {"$group": group},
                    {"$sort": {"f1": 1}}]
        with self._errors("list traces"):
            rows = list(self._ready().profiler.aggregate(pipeline))
        return [self._trace_row(row, wanted) for row in rows]

    @staticmethod
    def _trace_row(row, wanted):
        trace = {}
        for i, field in enumerate(wanted):
            value = row.get("f%d" % i)
            if value is None and field not in DEFAULT_FIELDS:
                continue
            target = trace
            *parents, leaf = field.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
        return trace

    def trace_summaries(self, since_us=None, until_us=None):
        """One aggregation (each trace's first point, last time, services
        and span ids) and the error markers."""
        pipeline = [{"$sort": {"timestamp": 1}}, {"$group": {
            "_id": "$base_id", "first": {"$first": "$timestamp"},
            "name": {"$first": "$name"}, "last": {"$max": "$timestamp"},
            "services": {"$addToSet": "$service"},
            "spans": {"$addToSet": "$trace_id"}}}]
        window = {}
        if since_us is not None:
            window["$gte"] = clock.format_timestamp(since_us * 1000)
        if until_us is not None:
            window["$lt"] = clock.format_timestamp(until_us * 1000)
        if window:
            pipeline.append({"$match": {"first": window}})
        with self._errors("list traces"):
            rows = list(self._ready().profiler.aggregate(pipeline))
        errors = {t["base_id"] for t in self.list_error_traces()}
        return [base.summary(
            row["_id"], row.get("name"), base.timestamp_us(row["first"]),
            base.timestamp_us(row["last"]), row.get("services") or (),
            len(row.get("spans") or ()), row["_id"] in errors)
            for row in rows]

    def list_error_traces(self):
        with self._errors("list error traces"):
            cursor = self._ready().profiler_error.find(
                {}, {"_id": 0, "base_id": 1, "timestamp": 1})
            return sorted(cursor, key=lambda t: t.get("timestamp") or "")
