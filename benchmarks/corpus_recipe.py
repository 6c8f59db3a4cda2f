"""The recipe the benchmark bakes: the corpus's daily files into one store, 30-day chunks.

Set ARCOFORGE_BENCH_CORPUS (folder), ARCOFORGE_BENCH_FILES (count) and
ARCOFORGE_BENCH_CHUNKS (JSON target_chunks) to choose what it reads;
ARCOFORGE_BENCH_MULTISTAGE (JSON: a threshold, or null for one pass) how a deep rechunk is made.
"""

import json
import os

import apache_beam as beam

from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

CORPUS = os.environ.get("ARCOFORGE_BENCH_CORPUS", "corpus")
NFILES = int(os.environ.get("ARCOFORGE_BENCH_FILES", "365"))
TARGET_CHUNKS = json.loads(os.environ.get("ARCOFORGE_BENCH_CHUNKS", '{"time": 30}'))
MULTISTAGE = json.loads(os.environ.get("ARCOFORGE_BENCH_MULTISTAGE", "4.0"))

paths = [os.path.join(CORPUS, f"day-{day:04d}.nc") for day in range(NFILES)]
pattern = pattern_from_file_sequence(paths, "time", nitems_per_file=1)

recipe = (
    beam.Create(pattern.items())
    | OpenURLWithFSSpec()
    | OpenWithXarray(file_type=pattern.file_type)
    | StoreToZarr(store_name="bench.zarr", combine_dims=pattern.combine_dim_keys, target_chunks=TARGET_CHUNKS,
                   multistage_threshold=MULTISTAGE)
)
