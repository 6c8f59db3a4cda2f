"""The spill: batches of work in flight written beside the store, sealed, and removed once the store is published."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from arcoforge.io.spill import Spill, new_spill_key, remove_spills, spill_folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_sections_come_back_whole_and_sealed(tmp_path):
    store = f"{tmp_path}/out/sst.zarr"
    spill = Spill(store, "owner-a", new_spill_key())
    secret = "PLANTED-spill-secret-1234"
    refs = spill.put_sections({("sst", (0,)): [{"token": secret}, 1], ("sst", (1,)): [2, 3, 4]})
    assert {ref.count for ref in refs.values()} == {2, 3}
    assert spill.get(refs[("sst", (1,))]) == [2, 3, 4]  # a section is read alone, by its byte range
    assert spill.get(refs[("sst", (0,))]) == [{"token": secret}, 1]
    written = _files(tmp_path)
    assert list(written) and all(path.startswith(f"{tmp_path}/out/.arcoforge/sst.zarr/spill/owner-a/")
                                 for path in written)
    assert not any(secret.encode() in data for data in written.values())  # encrypted at rest
    # Another key (another bake) cannot read it, and a changed byte is refused rather than unpickled.
    with pytest.raises(InvalidTag):
        Spill(store, "owner-a", new_spill_key()).get(refs[("sst", (0,))])
    path = next(iter(written))
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 1
    Path(path).write_bytes(bytes(data))
    with pytest.raises(InvalidTag):
        spill.get(refs[("sst", (1,))])


def test_removing_keeps_live_bakes_and_takes_killed_ones(tmp_path):
    store = f"{tmp_path}/sst.zarr"
    for owner in ("mine", "live", "killed"):
        Spill(store, owner, new_spill_key()).put([owner])
    day_ago = time.time() - 25 * 3600
    for path in Path(spill_folder(store, "killed")).iterdir():
        os.utime(path, (day_ago, day_ago))
    remove_spills(store, "mine")
    left = sorted(p.name for p in Path(spill_folder(store, "x")).parent.iterdir())
    assert left == ["live"]
    remove_spills(store, "live")
    assert not Path(spill_folder(store, "x")).parent.exists()
    remove_spills(store, "nobody")  # nothing there: nothing to do


def test_a_killed_bake_of_this_host_is_removed_at_once(tmp_path):
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store = f"{tmp_path}/sst.zarr"
    killed = f"{socket.gethostname()}-{int(gone.stdout)}-0123abcd"
    live = f"{socket.gethostname()}-{os.getpid()}-4567ef01"
    for owner in (killed, live, "elsewhere-1-89abcdef"):
        Spill(store, owner, new_spill_key()).put([owner])
    remove_spills(store, "mine")
    assert sorted(p.name for p in Path(spill_folder(store, "x")).parent.iterdir()) == sorted([live, "elsewhere-1-89abcdef"])


def test_spill_on_s3(s3, s3_filesystem):
    options, bucket = s3
    store = f"s3://{bucket}/out/sst.zarr"
    spill = Spill(store, "owner-s3", new_spill_key(), options)
    ref = spill.put([b"piece", 7])
    assert spill.get(ref) == [b"piece", 7]
    fs = s3_filesystem(options)
    assert fs.find(f"{bucket}/out/.arcoforge/sst.zarr/spill/owner-s3")
    remove_spills(store, "owner-s3", options)
    fs.invalidate_cache()
    assert not fs.find(f"{bucket}/out/.arcoforge/sst.zarr/spill")


class LiveValues:
    """A piece's variable that counts how many of its unpickled copies are alive at once."""

    alive = 0
    most = 0
    alive_when_read: list[int] = []

    def __init__(self, values):
        self._values, self.shape, self.size, self.ndim = values, values.shape, values.size, values.ndim

    @property
    def values(self):
        LiveValues.alive_when_read.append(LiveValues.alive)
        return self._values

    def __setstate__(self, state):
        self.__dict__.update(state, unpickled=True)
        LiveValues.alive += 1
        LiveValues.most = max(LiveValues.most, LiveValues.alive)

    def __del__(self):
        if self.__dict__.get("unpickled"):
            LiveValues.alive -= 1


def test_a_write_task_holds_one_section_of_its_pieces_at_once(tmp_path):
    """A task of many small inputs must not hold every piece while it writes (issue 16: ~18 kB a piece),
    nor a whole section's pieces once read."""
    import numpy as np

    from arcoforge.rechunk import TaskGrid, assemble_task

    spill = Spill(f"{tmp_path}/out/s.zarr", "owner-a", new_spill_key())
    steps = np.arange(40.0)
    pieces = [((i, 0), {"a": LiveValues(steps[i:i + 1, None]), "b": LiveValues(-steps[i:i + 1, None])}, f"f{i}.nc")
              for i in range(40)]
    refs = [spill.put_sections({0: pieces[i:i + 5]})[0] for i in range(0, 40, 5)]  # 8 batches of 5 inputs
    objects = spill.objects(refs)
    assert len(objects) == 40 and [p[0] for p in objects] == [p[0] for p in pieces]  # read again each time
    LiveValues.most, LiveValues.alive_when_read = 0, []
    grid = TaskGrid(shape=(40, 1), task_shape=(40, 1), unit=(1, 1))
    written = {name: values.copy() for name, _, values in assemble_task(
        ("g", (0, 0)), objects, grid, {"a": np.dtype("f8"), "b": np.dtype("f8")})}
    np.testing.assert_array_equal(written["a"][:, 0], steps)
    np.testing.assert_array_equal(written["b"][:, 0], -steps)
    assert LiveValues.most <= 2 * 5 + 2  # one section (two variables a piece), not 80 variables
    # And each piece is let go once read: a piece of a real input holds its file open while it lives
    # (up to xarray's 128 files, ~0.6 MB each). The last piece of a section is read alone.
    assert min(LiveValues.alive_when_read) <= 2
