"""Paths the agent writes to must be its own: no symbolic link followed, no
directory others can write to.

The agent often runs as root or as a dedicated user next to other local
users.  A directory anyone can write to lets them plant a symbolic link
where the agent writes (an offset file, a segment) and make it overwrite a
file of the agent's user, or plant segments and offsets that break
delivery.  So the spool directory and the listen socket's directory are
created private, and refused when they are a symbolic link, owned by
another user, or world-writable; every file in them is opened with
``O_NOFOLLOW``.
"""

import os
import stat


class UnsafePath(RuntimeError):
    """A path the agent refuses to use (the message is one clear line)."""


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def check_private_dir(path, what, allow_root_owner=False, mode_hint=0o700):
    """Refuse a directory that is not a real one of ours, or that everyone
    may write to.  Raises UnsafePath saying what to fix."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise UnsafePath("cannot use %s %s: %s"
                         % (what, path, exc.strerror)) from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath("%s %s is a symbolic link; the agent follows none "
                         "(use the real directory)" % (what, path))
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath("%s %s is not a directory" % (what, path))
    euid = os.geteuid()
    if st.st_uid != euid and not (allow_root_owner and st.st_uid == 0):
        raise UnsafePath("%s %s is owned by uid %d, not by the agent's user "
                         "(uid %d): chown it or choose another"
                         % (what, path, st.st_uid, euid))
    if st.st_mode & stat.S_IWOTH:
        raise UnsafePath("%s %s is world-writable (mode %04o): others could "
                         "plant files in it; make it private (chmod %04o)"
                         % (what, path, stat.S_IMODE(st.st_mode), mode_hint))


def make_private_dir(path, what, mode=0o700):
    """Create ``path`` (mode ``mode``) if missing, then check it."""
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
    check_private_dir(path, what, mode_hint=mode)


def open_file(path, flags, mode=0o600):
    """os.open that never follows a symbolic link at ``path``."""
    return os.open(path, flags | NOFOLLOW, mode)
