"""The process dies at every named step of a bake and of an append: readers see old-or-new, reruns converge.

Each run is ``arcoforge.cli.main`` in a child process forked from one server
process that imported arcoforge, Beam, xarray and zarr once (a fresh
interpreter takes seconds to import them; a fork takes milliseconds), two at a
time. The fault is ``ARCOFORGE_FAULT_AT`` (see :mod:`arcoforge.faults`): the
child kills itself with SIGKILL at that step, leaving whatever it wrote, as an
OOM kill would. A module fixture runs every scenario in three phases (all the
killed runs, what a reader sees after each, all the reruns); the tests then
check each scenario's outcome.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import xarray as xr

from arcoforge.demo import write_demo_archive
from arcoforge.io.state import StoreState

BAKE_STEPS = ["bake.plan", "bake.template", "bake.recorded", "bake.task#2", "bake.chunks", "bake.arrays",
              "bake.commit", "bake.complete"]
APPEND_STEPS = ["append.plan", "append.backup", "append.journal", "append.task", "append.chunks",
                "append.coordinate", "append.commit", "append.arrays", "append.complete", "append.cleanup"]
# The case (killed after the coordinate, after consolidating, before completion), then the next day.
NEXT_DAY_STEPS = ["append.coordinate", "append.commit", "append.arrays"]
V2_STEPS = ["append.task", "append.coordinate", "append.commit"]
METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}

SERVER = textwrap.dedent('''
    import json, os, sys
    import apache_beam, xarray, zarr  # imported once, by the parent of every run
    import arcoforge.cli, arcoforge.transforms

    def start(job):
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
        return pid

    for line in sys.stdin:  # a list of jobs, run at most PARALLEL at a time; their outcomes in order
        jobs, outcomes, running = json.loads(line), {}, {}
        waiting = list(enumerate(jobs))
        while waiting or running:
            while waiting and len(running) < PARALLEL:
                number, job = waiting.pop(0)
                running[start(job)] = number
            pid, status = os.wait()
            signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            outcomes[running.pop(pid)] = {"signal": signal, "code": code}
        print(json.dumps([outcomes[i] for i in range(len(jobs))]), flush=True)
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
        script.write_text(SERVER.replace("PARALLEL", "2"))
        env = {**os.environ, "PYTHONPATH": str(src)}
        self.process = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        self.folder, self.n = folder, 0

    def run_all(self, commands: list[tuple[list[str], str | None]]) -> list[tuple[dict, str]]:
        """Run ``(argv, fault)`` command lines, two at a time; their outcomes and logs, in order."""
        jobs = []
        for argv, fault in commands:
            self.n += 1
            jobs.append({"argv": list(argv), "env": {"ARCOFORGE_FAULT_AT": fault} if fault else {},
                         "log": str(self.folder / f"run-{self.n}.log")})
        self.process.stdin.write(json.dumps(jobs) + "\n")
        self.process.stdin.flush()
        outcomes = json.loads(self.process.stdout.readline())
        return [(outcome, Path(job["log"]).read_text()) for outcome, job in zip(outcomes, jobs)]

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


def bake_argv(recipe: Path, target: Path, *extra: str) -> list[str]:
    return ["bake", str(recipe), "--target-root", str(target), "--no-stac", *extra]


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


def baselines(runner: Runner, days, roots: dict[int, Path], first: dict[int, int]) -> dict[int, dict[int, Baseline]]:
    """Uninterrupted, per Zarr format: a bake of the first days, an append to 6 days, the next day's to 7."""
    found: dict[int, dict[int, Baseline]] = {fmt: {} for fmt in roots}
    for step, extra in enumerate([(), ("--append",), ("--append",)]):
        lengths = {fmt: (first[fmt], 6, 7)[step] for fmt in roots}
        done = runner.run_all([(bake_argv(recipe_file(root, days[:lengths[fmt]], fmt), root / "out", *extra), None)
                               for fmt, root in roots.items()])
        for (fmt, root), (outcome, log) in zip(roots.items(), done):
            assert outcome == {"signal": None, "code": 0}, log
            found[fmt][lengths[fmt]] = Baseline(shutil.copytree(root / "out", root / f"after-{lengths[fmt]}"))
    return found


@dataclass
class Scenario:
    """Killed at ``step`` while running ``recipe``; then ``then`` run plainly; compared with ``expected``."""

    target: Path
    recipe: Path
    step: str
    extra: tuple[str, ...]
    then: Path
    old: Baseline | None
    new: Baseline
    expected: Baseline
    outcomes: list = field(default_factory=list)
    seen: str | Exception | None = None


def scenarios(tmp: Path, days, v3: dict[int, Baseline], v2: dict[int, Baseline]) -> dict[tuple[str, str], Scenario]:
    found = {}
    bake3 = recipe_file(tmp, days[:3], 3)
    for step in BAKE_STEPS:
        found["bake", step] = Scenario(tmp / "bake" / step.replace("#", "-"), bake3, step, (), bake3, None, v3[3], v3[3])
    to6, to7 = recipe_file(tmp, days[:6], 3), recipe_file(tmp, days[:7], 3)
    for step in APPEND_STEPS:
        found["append", step] = Scenario(v3[3].copy_to(tmp / "append" / step.replace("#", "-")), to6, step, ("--append",), to6,
                                         v3[3], v3[6], v3[6])
    for step in NEXT_DAY_STEPS:
        found["next-day", step] = Scenario(v3[3].copy_to(tmp / "next-day" / step.replace("#", "-")), to6, step, ("--append",), to7,
                                           v3[3], v3[6], v3[7])
    v2to6, v2to7 = recipe_file(tmp, days[:6], 2), recipe_file(tmp, days[:7], 2)
    for step in V2_STEPS:
        found["v2", step] = Scenario(v2[1].copy_to(tmp / "v2" / step.replace("#", "-")), v2to6, step, ("--append",), v2to7,
                                     v2[1], v2[6], v2[7])
    return found


def seen_by_a_reader(scenario: Scenario) -> str:
    """'none', 'old' or 'new': what xarray's default reader sees; fails on anything else."""
    seen = decoded(scenario.target / "a.zarr")
    old = scenario.old.dataset if scenario.old else None
    if seen is None:
        assert old is None, "the store vanished"
        return "none"
    if old is not None and seen.sizes == old.sizes:
        xr.testing.assert_identical(seen, old)
        return "old"
    xr.testing.assert_identical(seen, scenario.new.dataset)
    return "new"


@pytest.fixture(scope="module")
def played(runner, days, tmp_path_factory) -> dict[tuple[str, str], Scenario]:
    """Every scenario: killed at its step, looked at by a reader, run again plainly."""
    roots = {3: tmp_path_factory.mktemp("v3"), 2: tmp_path_factory.mktemp("v2")}
    # v3: 3 days in chunks of 4: the append to 6 rewrites the partly filled chunk 0 and adds chunk 1;
    # the time coordinate was baked with room for 8 and grows in its one chunk.
    # v2: 1 day: the time coordinate has room for 2 and grows into new chunks beyond its first.
    reference = baselines(runner, days, roots, first={3: 3, 2: 1})
    found = scenarios(tmp_path_factory.mktemp("scenarios"), days, reference[3], reference[2])
    crashed = runner.run_all([(bake_argv(s.recipe, s.target, *s.extra), s.step) for s in found.values()])
    for scenario, outcome in zip(found.values(), crashed):
        scenario.outcomes.append(outcome)
        try:
            scenario.seen = seen_by_a_reader(scenario)
        except Exception as error:  # reported by the scenario's test
            scenario.seen = error
    # A plain rerun: the killed bake's lease is taken over at once (its process is gone).
    reruns = runner.run_all([(bake_argv(s.then, s.target, *s.extra), None) for s in found.values()])
    for scenario, outcome in zip(found.values(), reruns):
        scenario.outcomes.append(outcome)
    return found


def check(scenario: Scenario, seen: str) -> None:
    (killed, killed_log), (rerun, rerun_log) = scenario.outcomes
    assert killed["signal"] == 9, killed_log  # killed at the step, not finished or failed
    assert f"fault injected at {scenario.step.split('#')[0]}" in killed_log
    if isinstance(scenario.seen, Exception):
        raise scenario.seen
    assert scenario.seen == seen
    assert rerun == {"signal": None, "code": 0}, rerun_log
    scenario.expected.assert_same(scenario.target)


@pytest.mark.parametrize("step", BAKE_STEPS)
def test_a_bake_killed_at_any_step_shows_no_store_or_the_whole_one_and_its_rerun_converges(played, step):
    check(played["bake", step], "new" if step in ("bake.commit", "bake.complete") else "none")


@pytest.mark.parametrize("step", APPEND_STEPS)
def test_an_append_killed_at_any_step_shows_the_old_or_the_new_store_and_its_rerun_converges(played, step):
    committed = APPEND_STEPS.index(step) >= APPEND_STEPS.index("append.commit")
    check(played["append", step], "new" if committed else "old")


@pytest.mark.parametrize("step", NEXT_DAY_STEPS)
def test_an_append_killed_late_then_the_next_daily_append_loses_no_day(played, step):
    """The issue's case: killed after the coordinate, after the commit, before completion; then tomorrow."""
    check(played["next-day", step], "old" if step == "append.coordinate" else "new")


@pytest.mark.parametrize("step", V2_STEPS)
def test_zarr_v2_appends_killed_before_or_after_the_commit_then_the_next_day_converge(played, step):
    """Zarr v2 (.zmetadata is the commit document); the time coordinate outgrows its first chunk."""
    check(played["v2", step], "new" if step == "append.commit" else "old")
