"""The same tests with stacktrail imported after Cinder's monkey patch."""

from cinder.tests import functional  # noqa: F401  (patches first)

from cinder_tests import traced


class TracedVolumeTest(traced.TracedVolumeTest):
    pass
