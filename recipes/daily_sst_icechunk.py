"""Example recipe: the daily SST archive into an Icechunk repository, one commit per bake.

The same inputs, chunks and encodings as ``daily_sst.py``; the store is a
transactional Icechunk repository, so readers see each bake (or append) whole
or not at all, and every earlier version stays readable by its snapshot id::

    ARCOFORGE_DEMO_INPUTS=arcoforge-demo/inputs arcoforge bake recipes/daily_sst_icechunk.py --target-root out/
    arcoforge history out/daily-sst.icechunk

Run it again with ``--append`` after new days arrive: one more commit, or none
if there is nothing new.
"""

import os

import apache_beam as beam

from arcoforge import ConcatDim, FilePattern, OpenURLWithFSSpec, OpenWithXarray, StoreToIcechunk
from arcoforge.demo import demo_days, demo_path

INPUT_DIR = os.path.abspath(os.environ.get("ARCOFORGE_DEMO_INPUTS", "arcoforge-demo/inputs"))
NDAYS = int(os.environ.get("ARCOFORGE_DEMO_DAYS", "90"))


def make_path(time):
    return demo_path(INPUT_DIR, time)


pattern = FilePattern(make_path, ConcatDim("time", demo_days(NDAYS), nitems_per_file=1))

recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | StoreToIcechunk(
        store_name="daily-sst.icechunk",
        combine_dims=pattern.combine_dim_keys,
        target_chunks={"time": 30},
        attrs={"summary": "Daily analysed SST and sea-ice fraction on a 1-degree grid (synthetic)."},
        branch="main",
    )
)
