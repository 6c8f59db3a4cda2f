"""Runners: Dask for real on a 2-worker LocalCluster, Dataflow as a dry run, Flink options.

The Dask tests check what Beam's own DaskRunner gets wrong (see arcoforge.runtime.dask_runner):
every step runs exactly once, side inputs are computed once, every branch runs,
finish_bundle outputs and tagged outputs arrive, and a recipe's store equals
``xr.open_mfdataset`` of its inputs value by value.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import apache_beam as beam
import pytest
import xarray as xr

from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence
from arcoforge.cli import EXIT_INPUT, EXIT_OK, EXIT_RECIPE, main
from arcoforge.errors import EXIT_INFRASTRUCTURE, InfrastructureError, RecipeError
from arcoforge.runtime.pipeline_options import (
    check_dataflow_job_name,
    dask_pipeline_options,
    dataflow_job_name,
    dataflow_pipeline_options,
    flink_pipeline_options,
    is_local_url,
    refuse_local_for_dataflow,
)
from arcoforge.runtime.context import use_runtime_defaults
from arcoforge.runtime.runners import choose_runner, flink_start_error

FEEDSTOCKS = Path(__file__).parents[1] / "feedstocks"


# ---------------------------------------------------------------------------------------------
# Dask


@pytest.fixture(scope="module")
def dask_address():
    distributed = pytest.importorskip("distributed", reason="the dask runner needs distributed "
                                                            "(pip install 'arcoforge[test]')")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", silence_logs=40) as cluster:
        yield cluster.scheduler_address


def _run_on_dask(pipeline_body, address, npartitions=None):
    from arcoforge.runtime.dask_runner import DaskRunner

    pipeline = beam.Pipeline(runner=DaskRunner(), options=dask_pipeline_options(address, npartitions))
    pipeline_body(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def _record(folder, tag):
    """A function that logs each call to a file of its own (workers are other processes)."""

    def record(value, *_):
        with open(os.path.join(folder, f"{tag}-{os.getpid()}-{id(value)}-{os.urandom(4).hex()}"), "w") as out:
            out.write(repr(value))
        return value

    return record


def _calls(folder, tag):
    return sorted(Path(p).read_text() for p in Path(folder).glob(f"{tag}-*"))


class _EmitsAtFinish(beam.DoFn):
    def start_bundle(self):
        self.seen = 0

    def process(self, element):
        self.seen += 1

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        yield WindowedValue(self.seen, 0, [GlobalWindow()])


def test_dask_runs_each_step_once_and_keeps_every_output(tmp_path, dask_address):
    calls = tmp_path / "calls"
    calls.mkdir()
    out = tmp_path / "out"
    out.mkdir()

    def body(p):
        xs = p | beam.Create(list(range(6))) | "inputs" >> beam.Map(_record(str(calls), "input"))
        plan = (xs | "list" >> beam.combiners.ToList()
                | "plan" >> beam.Map(lambda values: _record(str(calls), "plan")(sorted(values))))
        side = beam.pvalue.AsSingleton(plan)
        template = plan | "template" >> beam.Map(_record(str(calls), "template"))
        written = (xs
                   | "key" >> beam.FlatMap(lambda x, plan: [(x % 3, x)], plan=side)
                   | beam.GroupByKey()
                   | "write" >> beam.Map(lambda kv, plan, t: _record(str(calls), "write")((kv[0], sorted(kv[1]))),
                                         plan=side, t=beam.pvalue.AsSingleton(template)))
        _ = (written | "count" >> beam.combiners.Count.Globally()
             | "final" >> beam.Map(lambda n, plan: _record(str(calls), "final")(n), plan=side))
        # A branch nobody reads, tagged outputs, and outputs emitted by finish_bundle.
        _ = xs | "branch" >> beam.Map(_record(str(calls), "branch"))
        tagged = xs | "split" >> beam.FlatMap(
            lambda x: [beam.pvalue.TaggedOutput("odd" if x % 2 else "even", x)]).with_outputs("odd", "even")
        _ = tagged.odd | "odd" >> beam.Map(_record(str(calls), "odd"))
        _ = (xs | "finish" >> beam.ParDo(_EmitsAtFinish()) | "seen" >> beam.CombineGlobally(sum)
             | "total" >> beam.Map(_record(str(calls), "seen")))

    _run_on_dask(body, dask_address, npartitions=3)
    assert _calls(calls, "input") == [str(i) for i in range(6)]
    assert _calls(calls, "plan") == ["[0, 1, 2, 3, 4, 5]"]
    assert _calls(calls, "template") == ["[0, 1, 2, 3, 4, 5]"]
    assert _calls(calls, "write") == ["(0, [0, 3])", "(1, [1, 4])", "(2, [2, 5])"]
    assert _calls(calls, "final") == ["3"]
    assert _calls(calls, "branch") == [str(i) for i in range(6)]
    assert _calls(calls, "odd") == ["1", "3", "5"]
    assert _calls(calls, "seen") == ["6"]


def _translated(pipeline, threads):
    """The dask translator over ``pipeline`` as DaskRunner.run_pipeline sees it (after run()'s proto round trip)."""
    from apache_beam.runners.dask.overrides import dask_overrides

    from arcoforge.runtime.dask_runner import _BagTranslator, _LiftCombines

    pipeline = beam.Pipeline.from_runner_api(pipeline.to_runner_api(), pipeline.runner, pipeline._options)
    pipeline.replace_all([_LiftCombines()])
    pipeline.replace_all(dask_overrides())
    translator = _BagTranslator(threads=threads)
    pipeline.visit(translator)
    return translator


def test_dask_fuses_steps_that_only_feed_each_other_into_one_task_per_partition(tmp_path):
    """Maps that only feed each other are one task per partition, also where a PCollection has two readers."""
    import dask

    from arcoforge.runtime.dask_runner import PARTITIONS_PER_THREAD

    log = str(tmp_path / "steps")

    def step(name, func):
        def run(x):
            with open(log, "a") as out:
                out.write(name + "\n")
            return func(x)
        return run

    pipeline = beam.Pipeline()
    doubled = (pipeline | beam.Create(list(range(40))) | "add" >> beam.Map(step("add", lambda x: x + 1))
               | "double" >> beam.Map(step("double", lambda x: x * 2)))
    _ = doubled | "text" >> beam.Map(str)
    _ = doubled | "negate" >> beam.Map(lambda x: -x)
    leaves = dict(_translated(pipeline, threads=2).leaves())
    graph = {}
    for bag in leaves.values():
        graph.update(dict(bag.__dask_graph__()))
    stages = [key for key in graph if isinstance(key, tuple) and key[0].startswith("run_stage-")]
    assert len(stages) == PARTITIONS_PER_THREAD * 2  # all four steps in one task per partition
    text, negated = dask.compute(leaves["text"], leaves["negate"], scheduler="sync")
    # Element by element through the chain, as Beam fuses: no partition's outputs wait all at once.
    assert Path(log).read_text().split() == ["add", "double"] * 40
    assert sorted(text) == sorted(str((x + 1) * 2) for x in range(40))
    assert sorted(negated) == sorted(-(x + 1) * 2 for x in range(40))


def test_dask_spreads_the_shards_of_a_compact_create_over_its_partitions():
    """CompactCreate starts from one Impulse; its Reshuffle must give every thread a share (issue 16)."""
    import dask

    from arcoforge.beam.create import MIN_VALUES, compact_creates
    from arcoforge.runtime.dask_runner import PARTITIONS_PER_THREAD

    values = list(range(MIN_VALUES * 3))
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(values) | "square" >> beam.Map(lambda x: x * x)
    compact_creates(pipeline)
    (_, squares), = _translated(pipeline, threads=2).leaves()
    assert squares.npartitions == PARTITIONS_PER_THREAD * 2
    parts = dask.compute(*squares.to_delayed(), scheduler="sync")
    assert sum(1 for part in parts if part) == PARTITIONS_PER_THREAD * 2
    assert sorted(x for part in parts for x in part) == [x * x for x in values]


def test_dask_combines_within_each_partition_before_the_shuffle():
    """A CombineGlobally sends one accumulator per partition through its GroupByKey, not every value."""
    import dask

    from arcoforge.runtime.dask_runner import PARTITIONS_PER_THREAD

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(list(range(400))) | beam.CombineGlobally(sum)
    translator = _translated(pipeline, threads=1)
    grouped = [node.inputs[0] for node in translator.nodes if "GroupByKey" in type(node.transform).__name__]
    (_, total), = translator.leaves()
    assert dask.compute(total, scheduler="sync")[0] == [sum(range(400))]
    shuffled = dask.compute(translator.bags[grouped[0]], scheduler="sync")[0]
    assert len(shuffled) == PARTITIONS_PER_THREAD  # one (key, accumulator) per partition


def test_dask_never_fuses_a_step_into_a_stage_its_side_input_waits_for():
    """D reads A's stage but its side input comes from C, whose stage waits for A's: D needs a stage of its own."""
    import dask

    pipeline = beam.Pipeline()
    a = pipeline | "ca" >> beam.Create([1, 2, 3]) | "A" >> beam.Map(lambda x: x)
    b = pipeline | "cb" >> beam.Create([10, 20]) | "B" >> beam.Map(lambda x: x)
    sum_a = a | "sum a" >> beam.CombineGlobally(sum)
    c = b | "C" >> beam.Map(lambda x, total: x + total, total=beam.pvalue.AsSingleton(sum_a))
    sum_c = c | "sum c" >> beam.CombineGlobally(sum)
    _ = a | "D" >> beam.Map(lambda x, total: x * total, total=beam.pvalue.AsSingleton(sum_c))
    leaves = dict(_translated(pipeline, threads=1).leaves())
    (d,) = dask.compute(leaves["D"], scheduler="sync")  # a cycle between two stages would raise here
    assert sorted(d) == [42, 84, 126]


def test_dask_refuses_what_it_cannot_run(dask_address):
    def body(p):
        _ = (p | beam.Create([(1, 1), (2, 2)]) | beam.WindowInto(beam.window.FixedWindows(10)) | beam.GroupByKey())

    with pytest.raises(NotImplementedError, match="only the global window"):
        _run_on_dask(body, dask_address)


def test_store_to_zarr_on_dask_equals_the_inputs(tmp_path, daily_archive, dask_address):
    pattern = pattern_from_file_sequence(daily_archive, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name="dask.zarr", combine_dims=pattern.combine_dim_keys,
                      target_chunks={"time": 5, "lat": 5}, target_root=str(tmp_path))
    )
    with use_runtime_defaults(num_workers=2):
        # One partition per input: the inputs and write tasks spread over both workers.
        _run_on_dask(lambda p: p | recipe, dask_address, npartitions=len(daily_archive))
    expected = xr.open_mfdataset(daily_archive, engine="h5netcdf").load()
    stored = xr.open_zarr(tmp_path / "dask.zarr").load()
    xr.testing.assert_equal(stored, expected)
    assert stored.chunk({"time": 5}).chunks["time"] == (5, 5, 2)


def _merge_feedstock_expected(tmp_path) -> xr.Dataset:
    from arcoforge.feedstock import load_recipe_module

    module = load_recipe_module(FEEDSTOCKS / "sst-ice-merge" / "recipe.py")
    parts = []
    for variable in module.pattern.combine_dims[0].keys:
        files = [module.make_url(variable, day) for day in module.pattern.combine_dims[1].keys]
        ds = xr.open_mfdataset(files, engine="h5netcdf")
        parts.append(module.ice_percent_to_fraction(None, ds))
    return xr.merge(parts, combine_attrs="drop_conflicts").load()


def test_cli_bakes_the_merge_feedstock_on_dask(tmp_path, dask_address, capsys):
    code = main(["-q", "bake", str(FEEDSTOCKS / "sst-ice-merge"), "--runner", "dask", "--dask-address",
                 dask_address, "--target-root", str(tmp_path), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_OK, lines[-1]
    result = lines[-1]
    assert result["event"] == "result" and result["status"] == "succeeded"
    assert result["details"][0]["runner"] == "dask"
    stored = xr.open_zarr(tmp_path / "sst-ice.zarr").load()
    expected = _merge_feedstock_expected(tmp_path)
    xr.testing.assert_equal(stored[["analysed_sst", "sea_ice_fraction"]],
                            expected[["analysed_sst", "sea_ice_fraction"]])
    assert float(stored.sea_ice_fraction.max()) <= 1.0 and stored.sea_ice_fraction.attrs["units"] == "1"


def test_cli_starts_a_local_dask_cluster_and_reports_bad_inputs(tmp_path, daily_archive, capsys):
    pytest.importorskip("distributed")
    folder = tmp_path / "bad"
    folder.mkdir()
    broken = folder / "broken.nc"
    broken.write_bytes(b"not a netcdf file")
    paths = list(daily_archive[:2]) + [str(broken)]
    (folder / "recipe.py").write_text(textwrap.dedent(f'''
        import apache_beam as beam
        from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence
        pattern = pattern_from_file_sequence({paths!r}, "time")
        recipe = (beam.Create(pattern.items()) | OpenURLWithFSSpec() | OpenWithXarray(file_type=pattern.file_type)
                  | StoreToZarr(store_name="bad.zarr", combine_dims=pattern.combine_dim_keys))
    '''))
    code = main(["-q", "bake", str(folder / "recipe.py"), "--runner", "dask", "--num-workers", "2",
                 "--target-root", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    assert "broken.nc (pattern index Index(time=2))" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Dataflow


def test_dataflow_job_names():
    assert dataflow_job_name("My_Feedstock", "daily SST", "20260101T120000") == \
        "my-feedstock-daily-sst-20260101t120000"
    long = dataflow_job_name("x" * 200, "recipe", "20260101t120000")
    assert len(long) <= 63 and long.endswith("-20260101t120000")
    assert check_dataflow_job_name(long) == long
    for bad in ("Upper", "1starts-with-digit", "ends-with-", "under_score", "a" * 1025):
        with pytest.raises(RecipeError, match="expected lowercase letters, digits and hyphens"):
            check_dataflow_job_name(bad)


def test_dataflow_options_from_config():
    settings = {"project": "my-project", "region": "europe-west1", "temp_location": "gs://bucket/tmp",
                "machine_type": "n2-highmem-4", "max_num_workers": 20, "labels": {"team": "ocean"}}
    options = dataflow_pipeline_options(settings, "sst-daily-20260101t000000",
                                        extra={"experiments": ["use_runner_v2"]}).get_all_options(drop_default=True)
    assert options["runner"] == "DataflowRunner"
    assert options["job_name"] == "sst-daily-20260101t000000"
    assert (options["project"], options["region"], options["temp_location"]) == \
        ("my-project", "europe-west1", "gs://bucket/tmp")
    assert options["machine_type"] == "n2-highmem-4" and options["max_num_workers"] == 20
    assert options["labels"] == ["team=ocean"] and options["experiments"] == ["use_runner_v2"]
    with pytest.raises(RecipeError, match="runner.dataflow.project, runner.dataflow.temp_location"):
        dataflow_pipeline_options({"region": "r"}, "job")
    for bad in ("/tmp", "gs://b/tmp", "gs://Upper/tmp"):
        with pytest.raises(RecipeError, match="temp_location must be a gs:// URL with a valid bucket name"):
            dataflow_pipeline_options({**settings, "temp_location": bad}, "job")
    with pytest.raises(RecipeError, match="Dataflow job name 'Bad_Name' is not valid"):
        dataflow_pipeline_options({**settings, "job_name": "Bad_Name"}, "job")


def test_dataflow_dry_run_accepts_the_pipeline(tmp_path, capsys):
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient",
                        reason="the Dataflow runner needs apache-beam[gcp] (pip install 'arcoforge[dataflow]')",
                        exc_type=ImportError)
    config = tmp_path / "bake.yaml"
    config.write_text(textwrap.dedent("""
        target:
          root: gs://my-bucket/stores
        runner:
          name: dataflow
          dataflow:
            project: my-project
            region: europe-west1
            temp_location: gs://my-bucket/tmp
            machine_type: n2-highmem-4
            max_num_workers: 8
    """))
    # The feedstock's inputs are files of this machine, which Dataflow's workers could never read.
    code = main(["-q", "bake", str(FEEDSTOCKS / "daily-sst"), "--config", str(config), "--prune", "--dry-run",
                 "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_RECIPE, lines[-1]
    assert "inputs are on this machine" in lines[-1]["error"] and "gs://" in lines[-1]["error"]
    assert not [line for line in lines if line["event"] == "dry_run"]

    # The job itself: Dataflow's own translation of the whole recipe, with the options given.
    from arcoforge.feedstock import feedstock_recipes, load_feedstock, prune_pipeline

    ref = feedstock_recipes(load_feedstock(FEEDSTOCKS / "daily-sst"))["daily-sst"]
    with choose_runner("dataflow", dataflow={"project": "my-project", "region": "us-central1",
                                             "temp_location": "gs://my-bucket/tmp", "max_num_workers": 8,
                                             "machine_type": "n2-highmem-4"},
                       job_name="arcoforge-test", dry_run=True) as choice, \
            use_runtime_defaults(target_root="gs://my-bucket/stores"):
        pipeline = beam.Pipeline(runner=choice.runner, options=choice.options)
        _ = pipeline | ref.transform
        prune_pipeline(pipeline, 2)
        result = pipeline.run()
    job = result.job
    assert job.proto.name == "arcoforge-test"
    # The Dataflow job's environment, as the service would receive it (built here without a network).
    from apache_beam.runners.dataflow.internal import apiclient

    environment = apiclient.Environment([], job.options, "dry-run", "gs://my-bucket/tmp/pipeline.pb",
                                        job.proto_pipeline).proto
    pool = environment.worker_pools[0]
    assert pool.machine_type == "n2-highmem-4" and pool.autoscaling_settings.max_num_workers == 8
    assert environment.temp_storage_prefix.startswith("storage.googleapis.com/my-bucket/tmp")
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in ("OpenWithXarray", "StoreToZarr/Group by write task", "StoreToZarr/Consolidate"):
        assert any(step in name for name in names), (step, sorted(names)[:10])


def test_dataflow_refuses_local_stores_and_inputs():
    assert is_local_url("/data/a.nc") and is_local_url("file:///data/a.nc") and is_local_url("memory://x")
    assert not is_local_url("gs://bucket/a.nc") and not is_local_url("https://host/a.nc")
    refuse_local_for_dataflow(["gs://b/s.zarr"], ["gs://b/a.nc", "https://host/b.nc"])  # fine
    with pytest.raises(RecipeError, match=r"the store /tmp/out/s.zarr is on this machine.*gs://"):
        refuse_local_for_dataflow(["/tmp/out/s.zarr"], ["gs://b/a.nc"])
    with pytest.raises(RecipeError, match=r"2 of 3 inputs are on this machine \(first: /data/a.nc\)"):
        refuse_local_for_dataflow(["gs://b/s.zarr"], ["/data/a.nc", "gs://b/b.nc", "file:///data/c.nc"])


# ---------------------------------------------------------------------------------------------
# Flink


def test_flink_job_server_problems_are_classified():
    import grpc

    timeout = flink_start_error({"job_endpoint": "localhost:8099"}, grpc.FutureTimeoutError())
    assert isinstance(timeout, InfrastructureError) and timeout.exit_code == EXIT_INFRASTRUCTURE
    assert "no Beam job server answered at 'localhost:8099'" in str(timeout) and "job_server" in str(timeout)
    # Beam's own words, offline, for a master without a jar it can download or with a jar path that is wrong
    fetch = RuntimeError("Unable to fetch remote job server jar at https://repo.maven.apache.org/x.jar: <urlopen "
                         "error [Errno -3] Temporary failure in name resolution>")
    error = flink_start_error({"flink_master": "flink:8081"}, fetch)
    assert isinstance(error, InfrastructureError) and "set runner.flink.flink_job_server_jar" in str(error)
    missing = ValueError('Unable to parse jar URL "/no/job-server.jar". If using a full URL, make sure the scheme '
                         "is specified.")
    error = flink_start_error({"flink_master": "flink:8081", "flink_job_server_jar": "/no/job-server.jar"}, missing)
    assert "flink_job_server_jar = '/no/job-server.jar' must be a readable jar" in str(error)
    assert flink_start_error({"flink_master": "flink:8081"}, ValueError("a bug in a DoFn")) is None


def test_flink_options():
    options = flink_pipeline_options({"flink_master": "flink.example:8081", "parallelism": 4,
                                      "environment_type": "DOCKER",
                                      "environment_config": "registry.example/arcoforge-worker:1"})
    values = options.get_all_options(drop_default=True)
    assert values["runner"] == "FlinkRunner" and values["flink_master"] == "flink.example:8081"
    assert values["parallelism"] == 4 and values["environment_type"] == "DOCKER"
    assert values["environment_config"] == "registry.example/arcoforge-worker:1"
    portable = flink_pipeline_options({"job_endpoint": "jobserver:8099", "environment_type": "EXTERNAL",
                                       "environment_config": "localhost:50000"}).get_all_options(drop_default=True)
    assert portable["runner"] == "PortableRunner" and portable["job_endpoint"] == "jobserver:8099"
    with pytest.raises(RecipeError, match="needs a Flink cluster"):
        flink_pipeline_options({"parallelism": 2})
    with pytest.raises(RecipeError, match="flink_job_server_jar"):
        flink_pipeline_options({"flink_master": "[local]"})


def test_cli_flink_without_a_cluster_fails_clearly(tmp_path, capsys):
    code = main(["-q", "bake", str(FEEDSTOCKS / "daily-sst"), "--runner", "flink", "--target-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_RECIPE
    assert "--runner flink needs a Flink cluster" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
