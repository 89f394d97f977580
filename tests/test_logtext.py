"""Log and error text never carries a password or a second line."""

from stacktrail.common import logtext


def test_passwords_in_urls_are_masked():
    text = ("redis://:s3cret@127.0.0.1:6379/0 and "
            "mysql+pymysql://root:p%40ss@db/test, amqp://u:pw@h:5672/")
    masked = logtext.mask_passwords(text)
    assert "s3cret" not in masked and "p%40ss" not in masked
    assert "pw@" not in masked
    assert "redis://:***@127.0.0.1:6379/0" in masked
    assert "mysql+pymysql://root:***@db/test" in masked


def test_one_line_keeps_the_first_line_only():
    error = ValueError("cannot connect to postgresql://u:pw@h/db\n"
                       "[SQL: INSERT ...] [parameters: ('secret',)]")
    line = logtext.one_line(error)
    assert line == "ValueError: cannot connect to postgresql://u:***@h/db"
    assert logtext.one_line(error, with_type=False).startswith("cannot")
    assert logtext.one_line(KeyError()) == "KeyError"
