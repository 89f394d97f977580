"""Code shared by the test modules that run inside a service's own
environment (``cinder_tests``, ``nova_tests``): stdlib only, importable
there as the top-level package ``in_service`` (the harnesses link it onto
``PYTHONPATH`` beside their own package)."""
