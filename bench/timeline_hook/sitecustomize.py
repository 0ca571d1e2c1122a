"""Imported by Python at start-up when this folder is on ``PYTHONPATH``: marks the timeline's points
(:mod:`bench.timeline`) in this process when ``SB_TIMELINE_DIR`` is set, and does nothing otherwise."""

import os

if os.environ.get("SB_TIMELINE_DIR"):
    from bench.timeline import install

    install()
