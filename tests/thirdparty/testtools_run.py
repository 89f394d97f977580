"""``python -m tests.thirdparty.testtools_run --results FILE NAME...``:
testtools tests (their ``load_tests`` scenarios honoured) with every test
in a trace (``tests.thirdparty.traced``), one JSON line per outcome
(``tests/services/in_service/runner.py``).  Without
``STACKTRAIL_SUITE_INTEGRATION``, the suite as published."""

import os
import sys

from tests.services.in_service import runner
from tests.thirdparty import traced

if __name__ == "__main__":
    if os.environ.get("STACKTRAIL_SUITE_INTEGRATION"):
        traced.start()
        traced.trace_unittest()
    sys.exit(runner.main())
