"""One REST client for the services the tests call, with the caller's
headers sent as given.

tempest's own service clients leave headers to tempest, which adds its
``X-Trace-*`` headers only when ``[profiler] key`` is set and never a
``traceparent``; the tests need to send exactly the headers they sign.
``TracedClient`` is a tempest ``RestClient`` (catalog, token, error
checking, logging) whose ``call`` sends the headers it is given and
nothing of tempest's profiler.  Without keystone, ``EndpointAuth`` stands
in for tempest's auth provider: the endpoint from ``[stacktrail_tracing]
endpoints``, no token.
"""

import json

from tempest.lib.common import rest_client


class EndpointAuth:
    """A tempest auth provider for a service without keystone."""

    credentials = None

    def __init__(self, endpoint, headers=None):
        self.endpoint = endpoint.rstrip("/")
        self.headers = dict(headers or {})

    def auth_request(self, method, url, headers=None, body=None,
                     filters=None):
        merged = dict(self.headers)
        merged.update(headers or {})
        return "%s/%s" % (self.endpoint, url.lstrip("/")), merged, body

    def base_url(self, filters, auth_data=None):
        return self.endpoint

    def get_token(self):
        return None

    def set_auth(self):
        pass


class TracedClient(rest_client.RestClient):
    """``call(method, url, body, headers)``: (status, headers, parsed body).

    ``default_headers`` go with every call (Zaqar's ``Client-ID``...);
    ``headers`` are the call's own (the trace headers).  Only these are
    sent: tempest adds none of its own.
    """

    def __init__(self, auth_provider, service, region, endpoint_type,
                 default_headers=None, **kwargs):
        super().__init__(auth_provider, service, region,
                         endpoint_type=endpoint_type, **kwargs)
        self.default_headers = dict(default_headers or {})

    def call(self, method, url, body=None, headers=None):
        sent = {"Accept": "application/json"}
        if body is not None:
            sent["Content-Type"] = "application/json"
            body = json.dumps(body)
        sent.update(self.default_headers)
        sent.update(headers or {})
        resp, resp_body = self.request(method, url, headers=sent, body=body)
        parsed = None
        if resp_body:
            try:
                parsed = json.loads(resp_body)
            except ValueError:
                parsed = resp_body
        return resp.status, resp, parsed
