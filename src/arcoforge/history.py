"""``arcoforge history STORE``: the snapshots of an Icechunk store's branch, newest first.

Each line gives the snapshot id, when it was written, what it is (an
arcoforge ``bake``, ``append`` or ``virtual`` commit, the ``schema`` snapshot a
bake commits before its data, or another writer's commit) and its message.
Any snapshot opens with
``xr.open_zarr(repo.readonly_session(snapshot_id=ID).store, consolidated=False)``.
"""

from __future__ import annotations

import argparse
import json

EXIT_OK = 0


HELP = "list the snapshots of an Icechunk store (StoreToIcechunk's output)"


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``history`` subcommand's arguments (its parser is made by :mod:`arcoforge.cli_args`)."""
    parser.add_argument("store", metavar="STORE", help="the repository's path or s3:// URL")
    parser.add_argument("--branch", default="main", help="the branch to list (default main)")
    parser.add_argument("--storage-options", type=json.loads, default=None, metavar="JSON",
                        help='options reaching the store, as JSON (e.g. \'{"endpoint_url": "http://..."}\')')
    parser.add_argument("--json", action="store_true", help="one JSON object per snapshot")


def history_lines(store: str, branch: str = "main", storage_options: dict | None = None,
                  as_json: bool = False) -> list[str]:
    """The lines ``arcoforge history`` prints for ``store``."""
    from .io.icechunk_store import history

    lines = []
    for entry in history(store, branch, storage_options):
        kind = entry.metadata.get("kind", "-")
        if as_json:
            lines.append(json.dumps({"id": entry.id, "written_at": entry.written_at, "kind": kind,
                                     "message": entry.message, "arcoforge": dict(entry.metadata)}, default=str))
        else:
            lines.append(f"{entry.id}  {entry.written_at}  {kind:<7}  {entry.message}")
    return lines


def run_history(args: argparse.Namespace) -> int:
    """Print the branch's snapshots."""
    from .io.icechunk_store import quiet_icechunk_logs

    quiet_icechunk_logs()
    for line in history_lines(args.store, args.branch, args.storage_options, args.json):
        print(line)
    return EXIT_OK
