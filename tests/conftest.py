"""Settings for every test."""

from hypothesis import settings

# No per-example deadline: on a loaded CI machine a quick example can take over the 200 ms
# default and fail a property that holds; pytest-timeout still bounds each test.
settings.register_profile("orderwatch", deadline=None)
settings.load_profile("orderwatch")
