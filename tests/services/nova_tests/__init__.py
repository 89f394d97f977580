"""Test modules that run *inside* Nova's own functional test harness.

Nothing here is collected by pytest (no ``test_`` file names, and
``conftest.py`` ignores the folder): ``tests/services/nova.py`` runs these
modules with the Nova environment's interpreter, where this folder is
importable as the top-level package ``nova_tests``::

    python -m in_service.runner --results out.jsonl nova_tests.boot

They need the real ``nova`` package (and its test tree), so they must never
be imported by the test suite's own interpreter.
"""
