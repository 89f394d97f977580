"""Test modules that run *inside* Zaqar's environment, over Zaqar's own
test tree (``tests/services/functional.py`` runs them, importable there as
the top-level package ``zaqar_tests``).  They import ``zaqar``, which the
suite's own interpreter lacks: pytest never collects them."""
