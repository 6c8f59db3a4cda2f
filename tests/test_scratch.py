"""Temporary files and folders of killed processes are swept; those of live ones, and anything else, are not.

Real processes throughout: a child that makes scratch entries and exits
without removing them, and an ``arcoforge bake`` killed with SIGKILL while it
runs, whose leftovers (progress, warm workers' and Beam's folders) the next bake removes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from arcoforge.scratch import host_code, owner_tag, remove_stale, scratch_dir, scratch_file

SRC = Path(__file__).parents[1] / "src"


@pytest.fixture
def private_tmp(monkeypatch):
    """A private temporary folder, short enough for Unix sockets in it: this process's and its children's."""
    folder = tempfile.mkdtemp(prefix="af-", dir="/tmp" if os.path.isdir("/tmp") else None)
    monkeypatch.setattr(tempfile, "tempdir", folder)
    monkeypatch.setenv("TMPDIR", folder)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def child_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(SRC)}


def names(folder: Path) -> set[str]:
    """arcoforge's entries in ``folder`` (Beam and others may leave their own)."""
    return {p.name for p in folder.iterdir() if p.name.startswith("arcoforge-")}


def test_entries_of_a_process_that_is_gone_are_removed_and_nothing_else(private_tmp):
    made = subprocess.run(
        [sys.executable, "-c", "from arcoforge.scratch import scratch_dir, scratch_file\n"
                               "import os\nfolder = scratch_dir('progress')\n"
                               "open(os.path.join(folder, 'events-1.jsonl'), 'w').close()\n"
                               "print(os.path.basename(folder), os.path.basename(scratch_file('copy', '.nc')[1]))"],
        env=child_env(private_tmp), capture_output=True, text=True, check=True).stdout.split()
    assert all(name.startswith(("arcoforge-progress-", "arcoforge-copy-")) for name in made)
    mine = os.path.basename(scratch_dir("workers"))  # this process's: alive
    _, my_copy = scratch_file("copy", ".nc")
    pid = os.getpid()
    reused = f"arcoforge-progress-{pid}.1.{host_code()}-abcdefgh"  # this pid, another start: a reused pid
    elsewhere = f"arcoforge-progress-{pid + 1}.1.{host_code('another-host')}-abcdefgh"  # not ours to judge
    others = ["arcoforge-cache-0", "arcoforge-copy-notes.txt", "somebody-else-1.0.abcdef-x", "arcoforge-x.nc"]
    for name in [reused, elsewhere, *others]:  # folders, as the sweep removes whole folders
        (private_tmp / name).mkdir()
    link = f"arcoforge-copy-{made[0].split('-')[2]}-linkxxxx.nc"  # a dead maker's name, but a symbolic link
    (private_tmp / link).symlink_to(private_tmp / "arcoforge-cache-0")
    old, fresh = "arcoforge-workers-k3j4h5g6", "arcoforge-1a2b3c4d.nc"  # older versions' names
    (private_tmp / old).mkdir()
    (private_tmp / fresh).touch()
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(private_tmp / old, (day_ago, day_ago))

    removed = remove_stale()
    assert sorted(os.path.basename(p) for p in removed) == sorted([*made, reused, old])
    assert {p.name for p in private_tmp.iterdir()} == {mine, os.path.basename(my_copy), elsewhere, *others, link,
                                                       fresh}


def test_the_owner_tag_is_this_process_and_changes_in_a_forked_child():
    pid = os.getpid()
    assert owner_tag().startswith(f"{pid}.") and owner_tag().endswith(host_code())
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(writer, owner_tag().encode())
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(reader, 100).decode().startswith(f"{child}.")


SLOW_RECIPE = textwrap.dedent('''
    import time
    import apache_beam as beam
    from arcoforge import OpenURLWithFSSpec, OpenWithXarray, StoreToZarr, pattern_from_file_sequence

    def slowly(index, ds):
        time.sleep({sleep})  # killed meanwhile
        return index, ds

    pattern = pattern_from_file_sequence({paths!r}, "time")
    recipe = (
        beam.Create(pattern.items())
        | OpenURLWithFSSpec()
        | OpenWithXarray(file_type=pattern.file_type)
        | beam.MapTuple(slowly)
        | StoreToZarr(store_name="{store}.zarr", combine_dims=pattern.combine_dim_keys, target_chunks={{"time": 4}})
    )
''')


def bake_command(folder: Path, paths: list[str], store: str, sleep: float, workers: int) -> list[str]:
    recipe = folder / f"{store}.py"
    recipe.write_text(SLOW_RECIPE.format(paths=paths, store=store, sleep=sleep))
    return [sys.executable, "-m", "arcoforge.cli", "-q", "bake", str(recipe), "--target-root", str(folder / "out"),
            "--no-stac", "--num-workers", str(workers)]


def test_a_killed_bake_leaves_folders_that_the_next_bake_removes(private_tmp, tmp_path, daily_archive):
    paths = daily_archive[:3]
    killed = subprocess.Popen(bake_command(tmp_path, paths, "killed", 60, 2), env=child_env(private_tmp),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while {name.split("-")[1] for name in names(private_tmp)} != {"progress", "workers", "beam"}:  # running
            assert killed.poll() is None, killed.stderr.read().decode()
            assert time.monotonic() < deadline, "the bake made no progress folder"
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)  # as an OOM kill: no cleanup runs
        killed.wait()
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(killed.pid, signal.SIGKILL)  # its workers too
    left = names(private_tmp)
    assert all(name.split("-")[2].startswith(f"{killed.pid}.") for name in left)
    alive = os.path.basename(scratch_dir("progress"))  # this process's, as a bake running beside

    done = subprocess.run(bake_command(tmp_path, paths, "next", 0, 1), env=child_env(private_tmp),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "next.zarr").is_dir()
    assert names(private_tmp) == {alive}  # the killed bake's gone; the next bake's own removed at its end
    assert [p.name for p in private_tmp.iterdir() if p.name.startswith("beam-pipeline-temp")] == []
