"""What ``pip install stacktrail`` puts on an operator's machine: the
services' config fragments and the sample configurations README tells
them to use, under ``<prefix>/share/stacktrail/etc``."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("zaqar/stacktrail.conf", "cinder/stacktrail.conf",
           "nova/stacktrail.conf", "stacktrail/stacktrail.conf.sample",
           "stacktrail/stacktrail-agent.conf.sample")


def _tracked_copy(dest):
    """The files git tracks, as they are in the working tree (no build
    directories or virtualenvs written into or read from the checkout)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            target = os.path.join(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if shutil.which("git") is None or not os.path.isdir(
            os.path.join(ROOT, ".git")):
        pytest.skip("needs the git checkout")
    work = tmp_path_factory.mktemp("packaging")
    source, wheels = work / "src", work / "wheels"
    _tracked_copy(source)
    # Built, never installed here: installing stacktrail anywhere with
    # this interpreter's pip would first uninstall the test environment's.
    subprocess.run([sys.executable, "-m", "pip", "-q",
                    "--disable-pip-version-check", "wheel", "--no-deps",
                    "-w", str(wheels), str(source)], check=True, timeout=600)
    path, = wheels.glob("stacktrail-*.whl")
    with zipfile.ZipFile(path) as archive:
        # A wheel's <name>.data/data/ tree is what pip installs under the
        # environment's prefix (the wheel format's install scheme).
        return {name.split(".data/data/", 1)[1]: archive.read(name)
                for name in archive.namelist() if ".data/data/" in name}


@pytest.mark.parametrize("name", SHIPPED)
def test_fragments_and_samples_are_installed_under_the_prefix(wheel, name):
    installed = "share/stacktrail/etc/" + name
    assert installed in wheel, "pip would not install <prefix>/" + installed
    with open(os.path.join(ROOT, "etc", name), "rb") as f:
        assert wheel[installed] == f.read()
