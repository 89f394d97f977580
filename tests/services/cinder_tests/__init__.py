"""Test modules run *inside* the Cinder environment by ``in_service.runner``.

Nothing here is collected by pytest (no ``test_`` file names) and nothing
here may be imported by the test suite's own interpreter: these modules
import ``cinder``, which lives only in the Cinder environment.
``tests/services/cinder.py`` puts this directory's parent on the Cinder
process's ``PYTHONPATH``, so the modules are ``cinder_tests.<name>`` there,
e.g. ``cinder_tests.volumes.VolumeLifecycleTest``.
"""
