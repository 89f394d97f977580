# These modules run inside the Nova environment (tests/services/nova.py),
# never under pytest: they import nova, which the suite's venv lacks.
collect_ignore_glob = ["*.py"]
