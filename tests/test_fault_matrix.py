"""The process dies at every named step of a bake and of an append: readers see old-or-new, reruns converge.

Each run is ``arcoforge.cli.main`` in a child process forked from one server
process that imported arcoforge, Beam, xarray and zarr once (a fresh
interpreter takes seconds to import them; a fork takes milliseconds). The
fault is ``ARCOFORGE_FAULT_AT`` (see :mod:`arcoforge.faults`): the child kills
itself with SIGKILL at that step, leaving whatever it wrote, as an OOM kill would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import xarray as xr

from arcoforge.demo import write_demo_archive
from arcoforge.state import StoreState

BAKE_STEPS = ["bake.plan", "bake.template", "bake.recorded", "bake.task#2", "bake.chunks", "bake.arrays",
              "bake.commit", "bake.complete"]
APPEND_STEPS = ["append.plan", "append.backup", "append.journal", "append.task", "append.chunks",
                "append.coordinate", "append.commit", "append.arrays", "append.complete", "append.cleanup"]
METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}

SERVER = textwrap.dedent('''
    import json, os, sys
    import apache_beam, xarray, zarr  # imported once, by the parent of every run
    import arcoforge.cli, arcoforge.transforms

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.environ.update(job["env"])
            try:
                code = arcoforge.cli.main(job["argv"])
            except BaseException:
                code = 99
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        print(json.dumps({"signal": signal, "code": code}), flush=True)
''')

RECIPE = textwrap.dedent('''
    import apache_beam as beam
    from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

    pattern = pattern_from_file_sequence({paths!r}, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | StoreToZarr(store_name="a.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={{"time": 4}},
                      append_dim="time", zarr_format={zarr_format})
    )
''')


class Runner:
    """Runs ``arcoforge`` command lines in children forked from one warm server process."""

    def __init__(self, folder: Path, src: Path):
        script = folder / "server.py"
        script.write_text(SERVER)
        env = {**__import__("os").environ, "PYTHONPATH": str(src)}
        self.process = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        self.folder, self.n = folder, 0

    def run(self, *argv: str, fault: str | None = None) -> tuple[dict, str]:
        self.n += 1
        log = self.folder / f"run-{self.n}.log"
        job = {"argv": list(argv), "env": {"ARCOFORGE_FAULT_AT": fault} if fault else {}, "log": str(log)}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        outcome = json.loads(self.process.stdout.readline())
        return outcome, log.read_text()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    return write_demo_archive(tmp_path_factory.mktemp("days"), ndays=7, nlat=3, nlon=4, start=dt.date(2003, 5, 1))


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("runner"), Path(__file__).parents[1] / "src")
    yield runner
    runner.close()


def recipe_file(folder: Path, paths, zarr_format: int) -> Path:
    path = folder / f"recipe-{len(paths)}-v{zarr_format}.py"
    if not path.exists():
        path.write_text(RECIPE.format(paths=list(paths), zarr_format=zarr_format))
    return path


def bake(runner: Runner, recipe: Path, target: Path, *extra: str, fault: str | None = None) -> tuple[dict, str]:
    return runner.run("bake", str(recipe), "--target-root", str(target), "--no-stac", *extra, fault=fault)


def chunk_hashes(store: Path) -> dict[str, str]:
    """sha256 of every file of the store but its metadata documents (which carry the bake time)."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and p.name not in METADATA}


def decoded(store: Path) -> xr.Dataset | None:
    """What a reader opening the store with xarray's defaults sees (None: no store there)."""
    try:
        ds = xr.open_zarr(store)
    except FileNotFoundError:
        return None
    except Exception as error:  # zarr's GroupNotFoundError: a store whose root is not published yet
        if "no group" in str(error).lower():
            return None
        raise
    return ds.load().drop_attrs()


def state_summary(target: Path) -> dict:
    state = StoreState(str(target / "a.zarr"))
    complete = state.read_json("complete.json") or {}
    return {"lengths": complete.get("lengths"), "ingested": state.ingested(),
            "journal": state.read_json("append.json") is not None,
            "leftovers": sorted(p.name for p in (target / ".arcoforge" / "a.zarr").iterdir()
                                if p.name not in ("complete.json", "plan.json"))}


class Baseline:
    """A store an uninterrupted run wrote: its chunks, its decoded dataset, its state."""

    def __init__(self, target: Path):
        self.target = target
        self.hashes = chunk_hashes(target / "a.zarr")
        self.dataset = decoded(target / "a.zarr")
        self.state = state_summary(target)

    def copy_to(self, target: Path) -> Path:
        shutil.copytree(self.target, target)
        return target

    def assert_same(self, target: Path) -> None:
        assert chunk_hashes(target / "a.zarr") == self.hashes
        xr.testing.assert_identical(decoded(target / "a.zarr"), self.dataset)
        assert state_summary(target) == self.state


def baselines(runner: Runner, days, root: Path, zarr_format: int, first: int) -> dict[int, Baseline]:
    """Uninterrupted: a bake of the first days, an append to 6 days, the next daily append to 7."""
    found = {}
    target = root / "out"
    for n, extra in ((first, ()), (6, ("--append",)), (7, ("--append",))):
        outcome, log = bake(runner, recipe_file(root, days[:n], zarr_format), target, *extra)
        assert outcome == {"signal": None, "code": 0}, log
        found[n] = Baseline(shutil.copytree(target, root / f"after-{n}"))
    return found


@pytest.fixture(scope="module")
def v3(runner, days, tmp_path_factory):
    # 3 days in chunks of 4: the append to 6 rewrites the partly filled chunk 0 and adds chunk 1;
    # the time coordinate was baked with room for 8 and grows in its one chunk.
    return baselines(runner, days, tmp_path_factory.mktemp("v3"), 3, first=3)


@pytest.fixture(scope="module")
def v2(runner, days, tmp_path_factory):
    # 1 day: the time coordinate has room for 2 and grows into new chunks beyond its first.
    return baselines(runner, days, tmp_path_factory.mktemp("v2"), 2, first=1)


def crash(runner: Runner, recipe: Path, target: Path, step: str, *extra: str) -> None:
    outcome, log = bake(runner, recipe, target, *extra, fault=step)
    assert outcome["signal"] == 9, log  # killed at the step, not finished or failed
    assert f"fault injected at {step.split('#')[0]}" in log


def assert_old_or_new(target: Path, old: xr.Dataset | None, new: xr.Dataset) -> str:
    seen = decoded(target / "a.zarr")
    if seen is None:
        assert old is None, "the store vanished"
        return "none"
    if old is not None and seen.sizes == old.sizes:
        xr.testing.assert_identical(seen, old)
        return "old"
    xr.testing.assert_identical(seen, new)
    return "new"


def rerun(runner: Runner, recipe: Path, target: Path, *extra: str) -> str:
    # lease: drop after merge
    outcome, log = bake(runner, recipe, target, *extra, "--break-lease")
    assert outcome == {"signal": None, "code": 0}, log
    return log


@pytest.mark.parametrize("step", BAKE_STEPS)
def test_a_bake_killed_at_any_step_shows_no_store_or_the_whole_one_and_its_rerun_converges(
        tmp_path, runner, days, v3, step):
    reference = v3[3]
    recipe = recipe_file(tmp_path, days[:3], 3)
    crash(runner, recipe, tmp_path / "out", step)
    seen = assert_old_or_new(tmp_path / "out", None, reference.dataset)
    assert seen == ("new" if step in ("bake.commit", "bake.complete") else "none")
    rerun(runner, recipe, tmp_path / "out")
    reference.assert_same(tmp_path / "out")


@pytest.mark.parametrize("step", APPEND_STEPS)
def test_an_append_killed_at_any_step_shows_the_old_or_the_new_store_and_its_rerun_converges(
        tmp_path, runner, days, v3, step):
    old, new = v3[3], v3[6]
    target = old.copy_to(tmp_path / "out")
    recipe = recipe_file(tmp_path, days[:6], 3)
    crash(runner, recipe, target, step, "--append")
    seen = assert_old_or_new(target, old.dataset, new.dataset)
    assert seen == ("new" if APPEND_STEPS.index(step) >= APPEND_STEPS.index("append.commit") else "old")
    rerun(runner, recipe, target, "--append")
    new.assert_same(target)


@pytest.mark.parametrize("step", ["append.coordinate", "append.commit", "append.arrays"])
def test_an_append_killed_late_then_the_next_daily_append_loses_no_day(tmp_path, runner, days, v3, step):
    """The issue's case: killed after the coordinate, after the commit, before completion; then tomorrow."""
    target = v3[3].copy_to(tmp_path / "out")
    crash(runner, recipe_file(tmp_path, days[:6], 3), target, step, "--append")
    rerun(runner, recipe_file(tmp_path, days[:7], 3), target, "--append")
    v3[7].assert_same(target)


@pytest.mark.parametrize("step", ["append.task", "append.coordinate", "append.commit"])
def test_zarr_v2_appends_killed_before_or_after_the_commit_then_the_next_day_converge(
        tmp_path, runner, days, v2, step):
    """Zarr v2 (.zmetadata is the commit document); the time coordinate outgrows its first chunk."""
    old, new = v2[1], v2[6]
    target = old.copy_to(tmp_path / "out")
    crash(runner, recipe_file(tmp_path, days[:6], 2), target, step, "--append")
    assert assert_old_or_new(target, old.dataset, new.dataset) == ("new" if step == "append.commit" else "old")
    rerun(runner, recipe_file(tmp_path, days[:7], 2), target, "--append")
    v2[7].assert_same(target)
