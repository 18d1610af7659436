"""``python -m attnduality.distributed demo ...``: the demo's command line
(:func:`attnduality.experiments.distributed_demo.main`)."""

from __future__ import annotations

from ..experiments.distributed_demo import main

if __name__ == "__main__":
    raise SystemExit(main())
