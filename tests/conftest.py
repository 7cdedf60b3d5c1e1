"""Shared test settings.

Hypothesis profiles: ``ci`` (the default, fast enough for the 10-minute
budget on 2 cores) and ``thorough`` (many more examples), chosen with the
environment variable ``REFIMPL_HYPOTHESIS_PROFILE``. ``deadline=None``
because the first call of a Numba kernel compiles it.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("REFIMPL_HYPOTHESIS_PROFILE", "ci"))
