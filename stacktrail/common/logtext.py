"""Text fit for a log line or a one-line error: no password, no newline."""

import re

# scheme://user:password@host -> scheme://user:***@host (also ":pw@").
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^\s/]*@")


def mask_passwords(text):
    """``text`` with the password of every URL in it replaced by ***."""
    return _PASSWORD.sub(r"\1***@", str(text))


def one_line(error, limit=300, with_type=True):
    """An error as one short line: its first line, passwords masked.

    Only the first line: drivers put statements and parameters after it.
    """
    lines = str(error).strip().splitlines()
    text = mask_passwords(lines[0][:limit]) if lines else ""
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    if not with_type or not name:
        return text or name
    return "%s: %s" % (name, text) if text else name
