"""Regenerate the sample files made from the code's options.

    .venv/bin/python tools/genconfig.py

* ``etc/stacktrail/*.conf.sample``: oslo-config-generator run on each
  ``etc/oslo-config-generator/*.conf`` (the ``oslo.config.opts`` entry
  points ``stacktrail`` and ``stacktrail.agent`` in setup.cfg);
* ``stacktrail/agent/stacktrail-agent.service``: the unit ``stacktrail
  agent install-unit`` writes for the default options.

tests/test_sample_configs.py fails when a committed file differs from what
this writes: run it after changing an option.
"""

import configparser
import glob
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def outputs():
    """{path relative to ROOT: the text it should hold}."""
    from oslo_config import generator

    from stacktrail.agent import unit

    texts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in sorted(glob.glob(os.path.join(
                ROOT, "etc", "oslo-config-generator", "*.conf"))):
            parser = configparser.ConfigParser()
            parser.read(config)
            target = parser["DEFAULT"]["output_file"]
            out = os.path.join(tmp, os.path.basename(target))
            generator.main(["--config-file", config, "--output-file", out])
            with open(out) as f:
                texts[target] = f.read()
    texts[os.path.join("stacktrail", "agent",
                       "stacktrail-agent.service")] = unit.example()
    return texts


def main():
    for path, text in outputs().items():
        with open(os.path.join(ROOT, path), "w") as f:
            f.write(text)
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
