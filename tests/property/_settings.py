"""Hypothesis profiles for tests/property.

The default profile keeps the whole directory under a minute and a half on two
cores; HYPOTHESIS_PROFILE=thorough is for hunting bugs locally:

    HYPOTHESIS_PROFILE=thorough python3 -m pytest tests/property -x

The profile is applied per test through @settings(PROFILE) rather than loaded
globally, so hypothesis tests elsewhere in the suite keep their own settings.
"""
import os

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,  # real files and fsyncs: timings vary with the machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

settings.register_profile("ct-default", max_examples=60, **_COMMON)
settings.register_profile("thorough", max_examples=3000, **_COMMON)

PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ct-default")
if PROFILE_NAME not in ("ct-default", "thorough"):
    PROFILE_NAME = "ct-default"
PROFILE = settings.get_profile(PROFILE_NAME)


def scaled(factor: float) -> settings:
    """PROFILE with `factor` times its examples (cheap properties run more)."""
    return settings(PROFILE, max_examples=max(1, int(PROFILE.max_examples * factor)))
