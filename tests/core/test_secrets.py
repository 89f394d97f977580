"""Secrets stay out of trace data and logs: query and path redaction by one
documented, extensible list (common.redact), connection strings masked in
every form before they are logged or printed, database errors recorded
without the values they carry."""

import logging

import pytest
import webob
from oslo_config import cfg

from stacktrail import initializer
from stacktrail import notifier
from stacktrail import profiler
from stacktrail import web
from stacktrail.common import logtext
from stacktrail.common import redact
from stacktrail.common import signing

KEY = "Qm9vW2xL9mZ4tW7yK3nB6cF1"
SECRET = "S3cr3tV4lue"


# --- query strings -----------------------------------------------------------

# Names whose value is a secret: the ones a scan of OpenStack, Swift, S3,
# OAuth and SAML URLs found, and the usual token/password/key family.
SECRET_NAMES = [
    "temp_url_sig", "sig", "pwd", "pass", "jwt", "session", "otp", "code",
    "token", "X-Auth-Token", "access_token", "refresh_token", "id_token",
    "password", "passwd", "passphrase", "new_password", "secret",
    "client_secret", "key", "api_key", "apikey", "AWSAccessKeyId", "auth",
    "Authorization", "signature", "Signature", "X-Amz-Signature",
    "X-Amz-Credential", "X-Amz-Security-Token", "credential", "jsessionid",
    "session_id", "SAMLResponse", "totp", "mfa_code", "pin", "sid",
    "csrf_token", "nonce", "private_key", "tempUrlSig", "oauth_verifier",
]
PLAIN_NAMES = ["limit", "marker", "sort_dir", "name", "status",
               "temp_url_expires", "detailed", "all_tenants", "project_id",
               "bypass_cache", "format", "q"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_query_parameter_hidden(name):
    query = "limit=5&%s=%s&marker=m" % (name, SECRET)
    redacted = web.redact_query(query)
    assert SECRET not in redacted
    assert redacted == "limit=5&%s=***&marker=m" % name


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_query_parameter_kept(name):
    assert web.redact_query("%s=v%%20x" % name) == "%s=v%%20x" % name


@pytest.mark.parametrize("query", [
    "next=https%3A%2F%2Fh%2Fcb%3Ftoken%3D" + SECRET,   # a URL carrying one
    "x=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0." + SECRET,  # a JWT, any name
    "t=gAAAAABm" + SECRET * 8,                           # a Fernet token
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0." + SECRET,    # a bare one
    "a=1;password=" + SECRET,                            # ; separator
    "Password=%s&password=%s" % (SECRET, SECRET),
])
def test_secret_values_hidden_whatever_the_name(query):
    assert SECRET not in web.redact_query(query)


def test_the_rest_of_a_query_kept_as_written():
    query = "a=b%20c&d=e+f&flag&empty=&token=x&z=%2F"
    assert web.redact_query(query) == "a=b%20c&d=e+f&flag&empty=&token=***" \
        "&z=%2F"
    assert web.redact_query("") == ""


# --- paths -------------------------------------------------------------------

@pytest.mark.parametrize("path, expected", [
    ("/v3/OS-OAUTH1/authorize/" + SECRET, "/v3/OS-OAUTH1/authorize/***"),
    ("/reset/tokens/%s/confirm" % SECRET, "/reset/tokens/***/confirm"),
    ("/app;jsessionid=%s/page" % SECRET, "/app;jsessionid=***/page"),
    ("/v1/x;sig=%s;size=3/y" % SECRET, "/v1/x;sig=***;size=3/y"),
    ("/files/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.%s/raw" % SECRET,
     "/files/***/raw"),
    ("/v3/auth/tokens", "/v3/auth/tokens"),
    ("/v2/queues/q1/messages", "/v2/queues/q1/messages"),
    ("/v1/AUTH_acct/container/object", "/v1/AUTH_acct/container/object"),
])
def test_path_redaction(path, expected):
    assert redact.path(path) == expected


def _environ(path="/", query=""):
    environ = webob.Request.blank(path).environ
    environ["QUERY_STRING"] = query
    return environ


def test_request_info_redacts_path_and_query():
    info = web.request_info(_environ(
        "/v1/AUTH_a/c/o;temp_url_sig=" + SECRET,
        "temp_url_sig=%s&temp_url_expires=1" % SECRET))
    request = info["request"]
    assert SECRET not in repr(info)
    assert request["path"] == "/v1/AUTH_a/c/o;temp_url_sig=***"
    assert request["query"] == "temp_url_sig=***&temp_url_expires=1"


# --- the list is extensible --------------------------------------------------

def test_add_names_extends_the_list():
    assert web.redact_query("presigned_blob=x") == "presigned_blob=x"
    redact.add_names("presigned blob")
    try:
        assert web.redact_query("presigned_blob=x&a=b") == \
            "presigned_blob=***&a=b"
        assert web.redact_query("presigned=x") == "presigned=x"
        assert redact.path("/presigned-blob/abc/x") == "/presigned-blob/***/x"
    finally:
        redact._added.clear()
        redact._state[0] = None


def _activate(tmp_path, **values):
    ini = tmp_path / "service.conf"
    lines = ["[profiler]", "enabled = true", "connection_string = noop://",
             "hmac_keys = " + KEY]
    lines += ["%s = %s" % kv for kv in values.items()]
    ini.write_text("\n".join(lines) + "\n")
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[str(ini)])
    initializer.init_from_conf(conf, None, "p", "s", "h")
    return conf, ini


def test_redact_names_option_and_reload(tmp_path):
    conf, ini = _activate(tmp_path, redact_names="order_ref,x-my-secretish")
    query = "order_ref=1&x_my_secretish=2&order=3&my=4"
    assert web.redact_query(query) == \
        "order_ref=***&x_my_secretish=***&order=3&my=4"
    assert redact.path("/order-ref/abc") == "/order-ref/***"
    ini.write_text(ini.read_text().replace("order_ref,", ""))
    conf.mutate_config_files()      # SIGHUP
    assert web.redact_query(query) == \
        "order_ref=1&x_my_secretish=***&order=3&my=4"


def test_traced_request_records_no_secret(tmp_path, messages):
    seen = []

    def app(environ, start_response):
        seen.append(profiler.get() is not None)
        start_response("200 OK", [])
        return [b"ok"]

    packed, mac = signing.pack({"base_id": "7253ca8c-33b3-4f84-b4f1-"
                                           "f5a4311ddfa4"}, KEY)
    request = webob.Request.blank(
        "/v1/a/c/o?temp_url_sig=%s&temp_url_expires=9&otp=%s" % (
            SECRET, SECRET),
        headers={web.X_TRACE_INFO: packed, web.X_TRACE_HMAC: mac})
    request.get_response(web.WsgiMiddleware(app, hmac_keys=KEY,
                                            enabled=True)).body
    assert seen == [True]
    assert messages and SECRET not in repr(messages)


# --- connection strings in logs and CLI output -------------------------------

@pytest.mark.parametrize("text, kept", [
    ("redis://:%s@127.0.0.1:6379/0" % SECRET, "redis://:***@127.0.0.1:6379/0"),
    ("redis://:ab/%s@h:6379/0" % SECRET, "redis://:***@h:6379/0"),
    ("mysql+pymysql://nova:p@%s@db/nova" % SECRET,
     "mysql+pymysql://nova:***@db/nova"),
    ("mysql+pymysql://nova:a%%2F%s%%40@db/nova" % SECRET,
     "mysql+pymysql://nova:***@db/nova"),
    ("mysql://nova:%s@db/nova?email=a@b" % SECRET,
     "mysql://nova:***@db/nova?email=a@b"),
    ("redis://h:6379/0?password=%s&db=1" % SECRET,
     "redis://h:6379/0?password=***&db=1"),
    ("redissentinel://:%s@s1:26379,s2:26379/0" % SECRET,
     "redissentinel://:***@s1:26379,s2:26379/0"),
    ("rabbit://u:%s@h1:5672,u:%s@h2:5672/" % (SECRET, SECRET),
     "rabbit://u:***@h2:5672/"),
    ("messaging://?transport_url=rabbit%%3A%%2F%%2Fuser%%3A%s%%40h%%3A5672"
     "%%2F&topic=x" % SECRET,
     "messaging://?transport_url=rabbit://user:***@h:5672/&topic=x"),
    ("messaging://?transport_url=rabbit%%3A%%2F%%2Fuser%%3Aa%%252F%s"
     "%%40h%%3A5672%%2F" % SECRET,
     "messaging://?transport_url=rabbit://user:***@h:5672/"),
    ("messaging://?transport_url=rabbit://user:%s@h:5672/" % SECRET,
     "messaging://?transport_url=rabbit://user:***@h:5672/"),
    ("host=db user=nova password=%s dbname=nova" % SECRET,
     "host=db user=nova password=*** dbname=nova"),
    ("{'password': '%s', 'user': 'nova'}" % SECRET,
     "{'password': '***', 'user': 'nova'}"),
    ("file:///var/log/a:b@c", "file:///var/log/a:b@c"),
    ("http://api:8774/v2.1/user@example.com",
     "http://api:8774/v2.1/user@example.com"),
    ("amqp://guest@h:5672//", "amqp://guest@h:5672//"),
])
def test_connection_strings_masked_in_every_form(text, kept):
    assert logtext.mask_passwords(text) == kept
    assert SECRET not in logtext.one_line(ValueError("cannot use " + text))


def test_one_line_masks_before_it_cuts():
    text = "x" * 280 + " redis://:%s@h:6379/0" % (SECRET * 3)
    assert SECRET[:4] not in logtext.one_line(ValueError(text), limit=300)


def test_messaging_transport_url_not_logged_at_start(caplog):
    pytest.importorskip("oslo_messaging")
    url = ("messaging://?transport_url=rabbit%%3A%%2F%%2Fuser%%3Aa%%2F%s"
           "%%40127.0.0.1%%3A5672%%2F" % SECRET)
    with caplog.at_level(logging.DEBUG):
        sink = notifier.create(url, project="p", service="s", host="h")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "trace points go to messaging://?transport_url=rabbit://user:" \
        "***@127.0.0.1:5672/" in logged
    assert SECRET not in logged
    sink.close(0.1)


def test_cli_never_echoes_a_transport_url_password(capsys):
    pytest.importorskip("oslo_messaging")
    from stacktrail.cmd import cli

    for password in (SECRET, "ab%2F" + SECRET, "ab%40" + SECRET):
        url = ("messaging://?transport_url=rabbit%%3A%%2F%%2Fuser%%3A%s"
               "%%40127.0.0.1%%3A1%%2F" % password.replace("%", "%25"))
        for argv in (["trace", "list", "--connection-string", url],
                     ["trace", "show", "7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4",
                      "--connection-string", url]):
            assert cli.main(argv) == 1
            out = capsys.readouterr()
            assert "user:***@127.0.0.1:1" in out.err
            assert SECRET not in out.err + out.out


def test_unparsable_transport_url_error_quotes_nothing_of_it(capsys):
    """oslo.messaging's parse error for a password with a / in it quotes
    the password's first half ("invalid literal for int(): 'S3'")."""
    pytest.importorskip("oslo_messaging")
    from stacktrail.cmd import cli

    url = ("messaging://?transport_url=rabbit%%3A%%2F%%2Fuser%%3A%s%%2Fx"
           "%%40127.0.0.1%%3A1%%2F" % SECRET)
    assert cli.main(["trace", "list", "--connection-string", url]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "ValueError" in err


# --- database errors recorded by every enclosing span ------------------------

def _integrity_error():
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE u (email TEXT UNIQUE, pw TEXT)")
        conn.exec_driver_sql("INSERT INTO u VALUES ('a@b.c', 'x')")
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO u VALUES (:e, :pw)"),
                         {"e": "a@b.c", "pw": SECRET})
    except sqlalchemy.exc.IntegrityError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_sqlalchemy_parameters_never_in_an_enclosing_span(messages, live):
    error = _integrity_error()
    assert SECRET in str(error)     # SQLAlchemy's own text has them

    @profiler.trace("api")
    def create():
        raise error

    profiler.init(KEY)
    with pytest.raises(type(error)):
        with profiler.Trace("request"):
            create()
    assert SECRET not in repr(messages)
    for message in messages:
        if message["name"].endswith("-stop"):
            assert message["info"]["etype"] == "sqlalchemy.exc.IntegrityError"
            assert message["info"]["message"].startswith(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: u.email")
            assert "[parameters: ***]" in message["info"]["message"]
    live.show_sql_parameters = True
    assert SECRET in profiler.error_info(error)["message"]


def test_oslo_db_error_wrapping_it_masked_too():
    exception = pytest.importorskip("oslo_db.exception")
    error = exception.DBDuplicateEntry(["email"], _integrity_error())
    assert SECRET in str(error)
    assert SECRET not in profiler.error_info(error)["message"]


class _FakePgError(Exception):
    """What psycopg raises: its text echoes the row."""
    __module__ = "psycopg.errors"
    sqlstate = "23505"


@pytest.mark.parametrize("text, expected", [
    ('duplicate key value violates unique constraint "u_email_key"\n'
     "DETAIL:  Key (email)=(%s) already exists." % SECRET,
     'duplicate key value violates unique constraint "u_email_key"\n'
     "DETAIL:  Key (email)=(***) already exists."),
    ('null value in column "a" of relation "u" violates not-null '
     "constraint\nDETAIL:  Failing row contains (1, %s, null)." % SECRET,
     'null value in column "a" of relation "u" violates not-null '
     "constraint\nDETAIL:  Failing row contains (***)."),
    ('invalid input syntax for type integer: "%s"' % SECRET,
     'invalid input syntax for type integer: "***"'),
    ('syntax error at or near "%s"' % SECRET, 'syntax error at or near "***"'),
    ("(1062, \"Duplicate entry '%s' for key 'u.email'\")" % SECRET,
     "(1062, \"Duplicate entry '***' for key 'u.email'\")"),
    ("(1366, \"Incorrect integer value: '%s' for column 'n' at row 1\")"
     % SECRET,
     "(1366, \"Incorrect integer value: '***' for column 'n' at row 1\")"),
    ("(1064, \"You have an error in your SQL syntax; check the manual for "
     "the right syntax to use near '%s')' at line 1\")" % SECRET,
     "(1064, \"You have an error in your SQL syntax; check the manual for "
     "the right syntax to use near '***' at line 1\")"),
    ('near "%s": syntax error' % SECRET, 'near "***": syntax error'),
    ("Table 'nova.instances' doesn't exist",
     "Table 'nova.instances' doesn't exist"),
])
def test_database_error_values_masked(text, expected):
    assert redact.database_error(text) == expected
    assert profiler.error_info(_FakePgError(text))["message"] == expected


def test_ordinary_errors_recorded_whole():
    error = KeyError("'name' is missing")
    assert profiler.error_info(error)["message"] == str(error)
    assert profiler.error_info(ValueError("a 'quoted' word"))["message"] == \
        "a 'quoted' word"
