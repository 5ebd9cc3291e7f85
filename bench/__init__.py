"""hyco's benchmarks: relayed throughput, latency, HTTP, memory and kernel cost, with baselines.

Run ``python -m bench`` (``--quick`` for a short run, ``--full`` for the large sizes). Every figure
is the median of several rounds and is set against a baseline measured in the same run, because
absolute numbers on a shared machine say little.
"""

from __future__ import annotations

__all__: list[str] = []
