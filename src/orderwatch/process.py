"""Settings of the whole Python process that a long-running orderwatch command makes.

A library user who embeds a ``Worker`` in their own process keeps their own settings: only
the CLI's commands that run workers (``worker``, ``serve``, ``demo``) and the
benchmarks call :func:`tune_gc`.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000
"""Net allocations of container objects between two young-generation collections (CPython's
default is 700)."""


def tune_gc() -> None:
    """Collect cyclic garbage less often, and never walk what start-up made.

    Why: a vendor call makes a few hundred short-lived objects, almost all freed at once by
    reference counting, yet CPython's default thresholds run a young collection every 700
    allocations and, every hundred of those, a full one that walks every object the process
    holds (modules, settings, SQLAlchemy tables, the aiohttp session): about an eighth of
    the worker's CPU (``bench/pipeline.py --gc default`` against ``--gc tuned``).
    ``gc.freeze()`` moves everything alive now out of the collector's walks, and a young
    generation of :data:`GEN0_THRESHOLD` makes collections rare; memory stays bounded, since
    garbage in cycles is still collected, a little later.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)


__all__ = ["GEN0_THRESHOLD", "tune_gc"]
