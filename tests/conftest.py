"""Shared test configuration.

The convex-core problems in these tests are tiny (tens of samples), where intra-op threading only adds overhead; on a
loaded 2-core machine OpenMP oversubscription made single fits up to 100x slower. One thread keeps the suite fast
and its floating-point results reproducible.
"""

import torch

torch.set_num_threads(1)
