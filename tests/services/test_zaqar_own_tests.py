"""Zaqar's own storage tests pass as well traced as untraced.

Zaqar's Redis and SQLAlchemy storage test classes run twice in Zaqar's
environment: as published, then each test inside a trace with tracing
switched on through the oslo.config environment alone (the shipped
fragment's options, every flag on).  Every test that passes untraced must
pass traced, the run must end by itself (it once hung at exit), and the
traces must hold the storage calls, Redis commands and SQL statements
those tests made.  Zaqar's Redis
configuration files are copied with the store moved to this test's Redis
database: Zaqar's tests flush the database they use.
"""

import configparser
import json
import shutil

import pytest

from tests.services import functional
from tests.services import tracing
from tests.services import zaqar

REDIS = "zaqar.tests.unit.storage.test_impl_redis"
SQLALCHEMY = "zaqar.tests.unit.storage.test_impl_sqlalchemy"
# The classes whose tests (nearly all) pass against this machine's Redis
# as published: the pooled and flavor classes fail in their set-up.
CLASSES = {
    REDIS: ("RedisUtilsTest", "RedisDriverTest", "RedisQueuesTest",
            "RedisMessagesTest", "RedisClaimsTest", "RedisSubscriptionTests"),
    SQLALCHEMY: ("SqlalchemyQueueTests", "SqlalchemyPoolsTest",
                 "SqlalchemyCatalogueTest", "SqlalchemyFlavorsTest1"),
}
TRACED = "zaqar_tests.own_storage"
TIMEOUT = 300


def configs_dir(zaqar_env, target, redis_url):
    """Zaqar's test config files, their Redis stores moved to
    ``redis_url``."""
    source = next(zaqar_env.path.glob(
        "lib/python3*/site-packages/zaqar/tests/etc"))
    shutil.copytree(source, target)
    for path in target.glob("*redis*.conf"):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path)
        for section in parser.sections():
            if parser.has_option(section, "uri"):
                parser.set(section, "uri", zaqar.store_uri(redis_url))
        with open(path, "w") as out:
            parser.write(out)
    return target


def tracing_environ(store):
    groups = zaqar.fragment_sections(connection_string=store,
                                     hmac_keys=tracing.KEY)
    return {"OS_%s__%s" % (group.upper(), name.upper()): str(value)
            for group, options in groups.items()
            for name, value in options.items()}


def outcomes(result):
    """{"Class.test": status}, whichever module the tests were run from."""
    return {".".join(o.id.split(".")[-2:]): o.status
            for o in result.outcomes}


@pytest.mark.timeout(3 * TIMEOUT)
def test_zaqar_storage_tests_pass_traced(zaqar_env, stacktrail_overlay,
                                         tmp_path, redis_url):
    env = {"ZAQAR_TEST_REDIS": "1", "ZAQAR_TEST_REDIS_URL": redis_url,
           "ZAQAR_TESTS_CONFIGS_DIR": str(configs_dir(
               zaqar_env, tmp_path / "etc", redis_url))}
    upstream = [f"{module}.{name}" for module, names in CLASSES.items()
                for name in names]
    plain = functional.run(zaqar_env, "zaqar_tests", upstream,
                           overlay=stacktrail_overlay, env_vars=env,
                           timeout=TIMEOUT)
    passed = {test for test, status in outcomes(plain).items()
              if status == "passed"}
    assert len(passed) >= 80, plain.report()

    store = tmp_path / "traces.jsonl"
    traced = functional.run(
        zaqar_env, "zaqar_tests",
        [f"{TRACED}.{name}" for names in CLASSES.values() for name in names],
        overlay=stacktrail_overlay, timeout=TIMEOUT,
        env_vars=dict(env, STACKTRAIL_TEST_KEY=tracing.KEY,
                      **tracing_environ("file://%s" % store)))
    assert not traced.timed_out, traced.report()
    now = outcomes(traced)
    broken = sorted(test for test in passed if now.get(test) != "passed")
    assert not broken, traced.report()

    found = [json.loads(line) for line in store.read_text().splitlines()]
    names = tracing.span_names(found)
    assert names.get("redis", 0) > 100 and names.get("db", 0) > 100, names
    # the adapter's storage spans too (redis_queue_controller, ...)
    assert sum(n for name, n in names.items()
               if name.endswith("_controller")) > 100, names
    assert not tracing.unclosed(found)
