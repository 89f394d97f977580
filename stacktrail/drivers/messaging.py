"""``messaging://``: trace points as oslo.messaging notifications.

Write side (osprofiler's): a notifier on topic ``profiler`` publishes one
``info`` notification per message, event type ``profiler.<service>``,
publisher ``<project>.<service>.<host>``, payload the message itself.  The
transport is the service's own: the ``transport`` or ``transport_url``
keyword, else ``[oslo_messaging_notifications] transport_url`` /
``transport_url`` of the conf handed in.  The connection string may carry
``?topic=NAME`` and ``?transport_url=URL`` (%-encoded), which is how the CLI,
having no service configuration, finds the bus.

Read side.  Notifications wait in the RabbitMQ queue ``<topic>.info``,
which oslo.messaging declares on first publish.  osprofiler's reader
consumes that queue with a listener and so destroys every other trace's
events.  Ours scans it and leaves it as it found it:

* take each message with ``basic_get`` (manual ack), re-publish a copy of
  it to the same queue (default exchange, routing key = queue name) under
  publisher confirms, and only then ack the original.  A crash between the
  two leaves a duplicate, never a loss; readers drop duplicates by
  (base_id, trace_id, name), so a scan is at-least-once and idempotent.
* the copies carry a header with this scan's random id: meeting one again
  means the whole queue went round once, so the scan stops there (that
  message is requeued untouched).
* copying instead of holding messages unacked and requeueing them avoids
  the delivery counter of quorum queues, which drops a message after a few
  requeues (RabbitMQ 4 defaults to 20).
* events older than ``retention`` (``[profiler] retention`` or keyword) are
  not copied: the readers are what keeps the queue bounded.  Set it, or a
  RabbitMQ ``message-ttl`` policy on the queue, in production.

Every read method is one scan, so any number of reports can be built and
listing works too.  A scan that runs at the same time as another sees the
messages the other holds only after it is done: read the trace again.
"""

import contextlib
import json
import logging
import threading
import time
import urllib.parse
import uuid

from stacktrail.common import clock
from stacktrail.common import ids
from stacktrail.common import logtext
from stacktrail.drivers import base

DEFAULT_TOPIC = "profiler"
PRIORITY = "info"
SCAN_HEADER = "x-stacktrail-scan"
_SEND_LOGGER = "oslo_messaging.notify.messaging"


class _SendFailures(logging.Filter):
    """oslo.messaging's notifier logs a failed send and swallows it.

    While one of our batches is being sent on a thread, that log record
    (which repeats the whole payload) is taken here instead and turned into
    an error for the buffer, which logs once per burst.  Other threads'
    records pass untouched.
    """

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record):
        failures = getattr(self.local, "failures", None)
        if failures is None:
            return True
        failures.append(record.exc_info[1] if record.exc_info
                        else record.getMessage())
        return False

    @contextlib.contextmanager
    def catching(self):
        self.local.failures = failures = []
        try:
            yield failures
        finally:
            self.local.failures = None


_FAILURES = _SendFailures()


def _oslo_messaging():
    return base.require("oslo_messaging", "messaging")


def payload_of(body):
    """The notification payload in an AMQP body (1.0 or 2.0 envelope)."""
    try:
        message = json.loads(body)
        if isinstance(message, dict) and "oslo.message" in message:
            message = json.loads(message["oslo.message"])
        payload = message.get("payload")
    except (ValueError, TypeError, AttributeError):
        return None
    return payload if isinstance(payload, dict) else None


def _url_error(url, exc):
    """A DriverError for a transport URL that cannot be used, the URL
    masked.  A parse error's own text is left out: it quotes a piece of
    the URL (``invalid literal for int(): 'S3'`` is the start of a
    password holding a ``/``), which no mask can recognise."""
    detail = type(exc).__name__
    if not isinstance(exc, (ValueError, TypeError)):
        detail = logtext.one_line(exc)
    return base.DriverError("messaging: cannot use transport URL %s: %s"
                            % (logtext.mask_passwords(url), detail))


class MessagingDriver(base.Driver):
    """Publish through oslo.messaging, read by a non-destructive scan."""

    def __init__(self, connection_str, project=None, service=None, host=None,
                 conf=None, context=None, transport=None, transport_url=None,
                 topic=None, timeout=None, **kwargs):
        super().__init__(connection_str, project=project, service=service,
                         host=host, conf=conf, **kwargs)
        self._om = _oslo_messaging()
        from oslo_config import cfg
        # A private ConfigOpts, never the global CONF, when none is given
        # (or osprofiler's dict form, which oslo.messaging cannot use).
        self.conf = conf if isinstance(conf, cfg.ConfigOpts) else \
            cfg.ConfigOpts()
        query = dict(urllib.parse.parse_qsl(self.url.query))
        self.topic = topic or query.get("topic") or DEFAULT_TOPIC
        self.queue = "%s.%s" % (self.topic, PRIORITY)
        self.transport_url = transport_url or query.get("transport_url")
        self.context = context if context is not None else {}
        retention = self.option("retention")
        self.retention = float(retention) if retention else None
        # Each AMQP connect, read and write of a scan: the ``timeout``
        # keyword, else ``store_timeout`` (the CLI's --timeout).
        self.timeout = float(timeout) if timeout else self.store_timeout
        self._given_transport = transport
        self._transport = transport
        self._notifiers = {}
        self._lock = threading.Lock()
        logger = logging.getLogger(_SEND_LOGGER)
        if _FAILURES not in logger.filters:
            logger.addFilter(_FAILURES)

    # write side

    def _notifier(self, project, service, host):
        """One prepared notifier per publisher (the agent relays many)."""
        key = (project, service, host)
        with self._lock:
            if self._transport is None:
                try:
                    self._transport = self._om.get_notification_transport(
                        self.conf, url=self.transport_url)
                except Exception as exc:
                    raise _url_error(self.transport_url or "the conf's",
                                     exc) from None
            if not self._notifiers:
                self._notifiers[None] = self._om.Notifier(
                    self._transport, driver="messaging", topics=[self.topic],
                    retry=0)
            if key not in self._notifiers:
                publisher = ".".join(str(p) for p in key if p)
                self._notifiers[key] = self._notifiers[None].prepare(
                    publisher_id=publisher)
            return self._notifiers[key]

    def notify(self, info, context=None, **kwargs):
        self.write_messages([info], context=context)

    def write_messages(self, messages, context=None):
        """One notification per message; stop at the first failed send."""
        with _FAILURES.catching() as failures:
            for message in messages:
                project = message.setdefault("project", self.project)
                service = message.setdefault("service", self.service)
                host = (message.get("info") or {}).get("host") or self.host
                notifier = self._notifier(project, service, host)
                notifier.info(context or self.context,
                              "profiler.%s" % service, message)
                if failures:
                    raise base.DriverError(
                        "messaging: cannot publish to topic %s: %s"
                        % (self.topic, logtext.one_line(failures[0])))

    def after_fork(self):
        # The transport's connection pool belongs to the parent.
        if self._given_transport is None:
            self._transport = None
        self._notifiers = {}
        self._lock = threading.Lock()

    def close(self):
        if self._transport is not None and self._given_transport is None:
            self._transport.cleanup()
        self._transport = self._given_transport
        self._notifiers = {}

    # read side

    def get_messages(self, base_id):
        base_id = ids.to_uuid(base_id)
        return [m for m in self._scan() if m.get("base_id") == base_id]

    def list_traces(self, fields=None):
        firsts = {}
        for message in self._scan():
            known = firsts.get(message.get("base_id"))
            if known is None or message["timestamp"] < known["timestamp"]:
                firsts[message.get("base_id")] = message
        wanted = {"base_id", "timestamp"} | set(fields or ())
        return sorted(({k: m[k] for k in wanted if k in m}
                       for m in firsts.values()),
                      key=lambda t: t["timestamp"])

    def list_error_traces(self):
        errors = {}
        for message in self._scan():
            if (message.get("info") or {}).get("etype") is None:
                continue
            known = errors.get(message["base_id"])
            if known is None or message["timestamp"] < known:
                errors[message["base_id"]] = message["timestamp"]
        return [{"base_id": b, "timestamp": t}
                for b, t in sorted(errors.items(), key=lambda i: i[1])]

    def trace_summaries(self, since_us=None, until_us=None):
        # One scan of the queue, not one per trace.
        return base.summarize_all(self._scan(), since_us, until_us)

    def _scan(self):
        """Every profiler event in the queue, unique, the queue kept."""
        seen = set()
        events = []
        with self._channel() as channel:
            for payload in _Scan(channel, self.queue, self._expired).run():
                key = (payload.get("base_id"), payload.get("trace_id"),
                       payload.get("name"))
                if "timestamp" in payload and key not in seen:
                    seen.add(key)
                    events.append(payload)
        return events

    def _expired(self, payload):
        if not self.retention or "timestamp" not in payload:
            return False
        try:
            ns = clock.parse_timestamp(payload["timestamp"])
        except (TypeError, ValueError):
            return False
        return time.time() - ns / 1e9 > self.retention

    @contextlib.contextmanager
    def _channel(self):
        """An AMQP channel (publisher confirms on) to the bus's RabbitMQ."""
        import amqp
        connection = None
        address = "?"
        try:
            for address, options in self._brokers():
                try:
                    connection = amqp.Connection(**options)
                    connection.connect()
                    break
                except (OSError, amqp.exceptions.AMQPError) as exc:
                    error, connection = exc, None
            if connection is None:
                raise base.DriverError(
                    "messaging: cannot reach RabbitMQ at %s: %s"
                    % (address, logtext.one_line(error)))
            channel = connection.channel()
            channel.confirm_select()
            yield channel
        except (OSError, amqp.exceptions.AMQPError) as exc:
            raise base.DriverError(
                "messaging: reading queue %s at %s failed: %s"
                % (self.queue, address, logtext.one_line(exc))) from None
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()

    def _brokers(self):
        """(address, amqp.Connection keywords) of each broker of the URL."""
        text = self._read_url()
        try:
            url = self._om.TransportURL.parse(self.conf, text)
        except Exception as exc:
            raise _url_error(text, exc) from None
        if url.transport not in ("rabbit", "kombu", "amqp"):
            raise base.DriverError(
                "messaging: reading traces needs a rabbit:// transport, "
                "not %s://" % url.transport)
        for host in url.hosts or [None]:
            hostname = getattr(host, "hostname", None) or "localhost"
            address = "%s:%s" % (hostname, getattr(host, "port", None) or 5672)
            yield address, {
                "host": address,
                "userid": getattr(host, "username", None) or "guest",
                "password": getattr(host, "password", None) or "guest",
                "virtual_host": url.virtual_host or "/",
                "connect_timeout": self.timeout,
                "read_timeout": self.timeout,
                "write_timeout": self.timeout,
            }

    def _read_url(self):
        if self.transport_url:
            return self.transport_url
        group = getattr(self.conf, "oslo_messaging_notifications", None)
        from_conf = getattr(group, "transport_url", None) if group else None
        try:
            return from_conf or self.conf.transport_url
        except Exception:  # options not registered: oslo's own default
            return "rabbit://"


class _Scan:
    """One pass over a queue that copies every message back (see top)."""

    def __init__(self, channel, queue, expired):
        self.channel = channel
        self.queue = queue
        self.expired = expired
        self.mark = uuid.uuid4().hex

    def run(self):
        import amqp
        try:
            self.channel.queue_declare(self.queue, passive=True)
        except amqp.exceptions.NotFound:
            return  # nothing was ever published on this topic
        while True:
            message = self.channel.basic_get(self.queue, no_ack=False)
            if message is None:
                return
            if (message.headers or {}).get(SCAN_HEADER) == self.mark:
                self.channel.basic_reject(message.delivery_tag, requeue=True)
                return
            payload = payload_of(message.body)
            # Unknown messages are kept too: this queue is not only ours.
            keep = payload is None or not self.expired(payload)
            if keep:
                self._copy(message)
            self.channel.basic_ack(message.delivery_tag)
            if keep and payload is not None:
                yield payload

    def _copy(self, message):
        import amqp
        properties = dict(message.properties)
        headers = dict(properties.pop("application_headers", None) or {})
        headers[SCAN_HEADER] = self.mark
        copy = amqp.Message(message.body, application_headers=headers,
                            **properties)
        # Confirmed: the copy is in the queue before the original is acked.
        self.channel.basic_publish(copy, exchange="", routing_key=self.queue)
