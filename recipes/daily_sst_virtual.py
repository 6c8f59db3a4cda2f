"""Example recipe: virtual references to the daily SST archive, no data copied.

The inputs are read for their metadata only; every chunk stays in the NetCDF
files, which readers then read directly. Two outputs of one pass: a kerchunk
reference file, and the same references committed to an Icechunk repository::

    ARCOFORGE_DEMO_INPUTS=arcoforge-demo/inputs arcoforge bake recipes/daily_sst_virtual.py --target-root out/

    xr.open_dataset("out/daily-sst-refs/reference.json", engine="kerchunk",
                    storage_options={"remote_protocol": "file"})

Written like a pangeo-forge-recipes 0.10 reference recipe: only the imports name arcoforge.
"""

import os

import apache_beam as beam

from arcoforge import ConcatDim, FilePattern, OpenWithKerchunk, WriteCombinedReference, WriteVirtualIcechunk
from arcoforge.demo import demo_days, demo_path

INPUT_DIR = os.path.abspath(os.environ.get("ARCOFORGE_DEMO_INPUTS", "arcoforge-demo/inputs"))
NDAYS = int(os.environ.get("ARCOFORGE_DEMO_DAYS", "90"))


def make_path(time):
    return demo_path(INPUT_DIR, time)


pattern = FilePattern(make_path, ConcatDim("time", demo_days(NDAYS), nitems_per_file=1))


class ReferenceAndCommit(beam.PTransform):
    """Open every input's references once; write them as kerchunk JSON and into Icechunk."""

    def expand(self, items):
        opened = items | OpenWithKerchunk(file_type=pattern.file_type, inline_threshold=300)
        json_file = opened | WriteCombinedReference(
            store_name="daily-sst-refs", concat_dims=["time"], identical_dims=["lat", "lon"],
            output_file_name="reference.json")
        repository = opened | WriteVirtualIcechunk(
            store_name="daily-sst-virtual.icechunk", concat_dims=["time"], identical_dims=["lat", "lon"])
        return (json_file, repository) | beam.Flatten()


recipe = beam.Create(pattern.items()) | ReferenceAndCommit()
