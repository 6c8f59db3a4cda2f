"""Icechunk repository I/O: opening a repository from a URL, writing keys into a session, branch moves, history.

An Icechunk repository is a transactional Zarr store: writers change a
*session*, and a commit makes the change visible all at once (or not at all).
arcoforge uses three of its operations:

* a writable session on a private *scratch branch* holds a bake's schema (the
  template), committed there so that it can be forked (Icechunk forks only a
  session without uncommitted changes);
* workers write chunks into pickled forks of the scratch session; the last step
  merges the forks and commits on the scratch branch;
* the target branch is moved to that commit with a compare-and-swap on its old
  snapshot (:func:`move_branch`): readers of the branch see the old snapshot or
  the new one, whole, and a bake killed before the move changes nothing.

Local paths and ``s3://bucket/prefix`` URLs are supported; S3 uses Icechunk's
own S3 client, configured from the fsspec-style storage options arcoforge
takes everywhere (``key``, ``secret``, ``endpoint_url``,
``client_kwargs.region_name``, ``anon``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Snapshot metadata key under which arcoforge records what a commit holds.
METADATA_KEY = "arcoforge"


def storage_for(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The Icechunk storage of a repository at a local path, ``file://`` URL or ``s3://bucket/prefix``."""
    import icechunk

    from .filesystems import options_for
    from .redaction import register_secrets, secret_values

    if "://" not in url or url.startswith("file://"):
        path = url[len("file://"):] if url.startswith("file://") else url
        quiet_icechunk_logs()
        return icechunk.local_filesystem_storage(path)
    protocol, _, rest = url.partition("://")
    if protocol not in ("s3", "s3a"):
        raise ValueError(f"Icechunk stores are supported on local paths and s3:// URLs, not {protocol}:// ({url})")
    options = dict(options_for(url, storage_options))
    if options:
        register_secrets(secret_values(options))
    bucket, _, prefix = rest.partition("/")
    client = dict(options.get("client_kwargs") or {})
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    return icechunk.s3_storage(
        bucket=bucket, prefix=prefix.rstrip("/") or None,
        region=client.get("region_name") or options.get("region") or ("us-east-1" if endpoint else None),
        endpoint_url=endpoint, allow_http=bool(endpoint and str(endpoint).startswith("http://")),
        access_key_id=options.get("key"), secret_access_key=options.get("secret"),
        session_token=options.get("token"), anonymous=bool(options.get("anon")) or None,
        from_env=None if options.get("key") or options.get("anon") else True,
        force_path_style=bool(endpoint),
    )


def open_repository(url: str, storage_options: Mapping[str, Any] | None = None, create: bool = True,
                    config: Any = None, virtual_credentials: Mapping[str, Any] | None = None) -> Any:
    """The repository at ``url`` (created when absent and ``create``)."""
    import icechunk

    storage = storage_for(url, storage_options)
    # The prefixes of the virtual chunk containers readers may fetch from, each with its credentials (or None).
    access = icechunk.containers_credentials(dict(virtual_credentials)) if virtual_credentials else None
    if create:
        return icechunk.Repository.open_or_create(storage, config=config, authorize_virtual_chunk_access=access)
    return icechunk.Repository.open(storage, config=config, authorize_virtual_chunk_access=access)


def repository_exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether an Icechunk repository exists at ``url``."""
    import icechunk

    return bool(icechunk.Repository.exists(storage_for(url, storage_options)))


def is_repository(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``url`` holds an Icechunk repository (False when Icechunk is not installed, or for other URLs)."""
    try:
        return repository_exists(url, storage_options)
    except (ImportError, ValueError):
        return False


def branch_head(repo: Any, branch: str) -> str | None:
    """The snapshot id the branch points to (``None`` if there is no such branch)."""
    return repo.lookup_branch(branch) if branch in repo.list_branches() else None


def head_metadata(repo: Any, snapshot_id: str | None) -> dict[str, Any]:
    """What arcoforge recorded in the snapshot's metadata (empty for snapshots arcoforge did not commit)."""
    if snapshot_id is None:
        return {}
    return dict(repo.lookup_snapshot(snapshot_id).metadata.get(METADATA_KEY) or {})


def scratch_branch(branch: str, fingerprint: str) -> str:
    """The private branch a bake of ``branch`` with plan ``fingerprint`` works on until it moves ``branch``."""
    return f"arcoforge.{branch}.{fingerprint[:16]}"


def start_scratch(repo: Any, branch: str, fingerprint: str, base: str | None) -> Any:
    """A writable session on a fresh scratch branch at ``base`` (replacing one a killed bake left)."""
    scratch = scratch_branch(branch, fingerprint)
    if scratch in repo.list_branches():
        repo.delete_branch(scratch)
    repo.create_branch(scratch, base or _first_snapshot(repo))
    return repo.writable_session(scratch)


def drop_merged_scratches(repo: Any, branch: str, head: str | None) -> None:
    """Delete the scratch branches of ``branch`` that point at its head: bakes killed after moving it."""
    prefix = scratch_branch(branch, "")
    for name in repo.list_branches():
        if name.startswith(prefix) and head is not None and repo.lookup_branch(name) == head:
            repo.delete_branch(name)


def drop_branch(repo: Any, branch: str) -> None:
    """Delete ``branch`` if it exists."""
    if branch in repo.list_branches():
        repo.delete_branch(branch)


def clear(store: Any) -> None:
    """Delete every node of a writable session's store (the root group too)."""
    _run(store.clear())


def _first_snapshot(repo: Any) -> str:
    """The repository's initial snapshot (what a new branch starts from)."""
    *_, first = repo.ancestry(branch="main")
    return first.id


def put_keys(store: Any, files: Mapping[str, bytes]) -> None:
    """Write raw Zarr keys (metadata documents, chunks) into a session's store."""
    from zarr.core.buffer import default_buffer_prototype

    prototype = default_buffer_prototype()

    from ..documents import is_metadata_key

    async def put_all() -> None:
        # A node's metadata before anything under it: Icechunk places a chunk in an array it knows.
        for key in sorted((k for k in files if is_metadata_key(k)), key=lambda k: k.count("/")):
            await store.set(key, prototype.buffer.from_bytes(files[key]))
        await asyncio.gather(*(store.set(key, prototype.buffer.from_bytes(data)) for key, data in files.items()
                               if not is_metadata_key(key)))

    _run(put_all())


def get_keys(store: Any, keys: list[str]) -> dict[str, bytes]:
    """The keys a session's store holds among ``keys`` (absent ones left out)."""
    from zarr.core.buffer import default_buffer_prototype

    prototype = default_buffer_prototype()

    async def get_all() -> list:
        return await asyncio.gather(*(store.get(key, prototype) for key in keys))

    return {key: value.to_bytes() for key, value in zip(keys, _run(get_all())) if value is not None}


def _run(coroutine: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coroutine)


def move_branch(repo: Any, branch: str, snapshot_id: str, expected: str | None) -> None:
    """Point ``branch`` at ``snapshot_id`` if it still points at ``expected`` (created if ``expected`` is None).

    The compare-and-swap is Icechunk's: another writer that moved the branch
    since the bake planned makes this fail (:class:`~arcoforge.errors.InfrastructureError`,
    as when another bake holds a Zarr store's lease) rather than be overwritten.
    """
    import icechunk

    from ..errors import InfrastructureError

    try:
        if expected is None:
            repo.create_branch(branch, snapshot_id)
        else:
            repo.reset_branch(branch, snapshot_id, from_snapshot_id=expected)
    except icechunk.IcechunkError as error:
        now = branch_head(repo, branch)
        if now == expected:
            raise
        raise InfrastructureError(
            f"branch {branch!r} moved to snapshot {now} while this bake wrote (it started from {expected}); "
            "another writer committed first: nothing of this bake was published, run it again") from error


@dataclass(frozen=True)
class SnapshotEntry:
    """One snapshot of a branch's history, as ``arcoforge history`` lists it."""

    id: str
    written_at: str
    message: str
    metadata: Mapping[str, Any]

    @property
    def is_bake(self) -> bool:
        """Whether this is the commit of an arcoforge bake or append (not its schema snapshot)."""
        return self.metadata.get("kind") in ("bake", "append")


def history(url: str, branch: str = "main",
            storage_options: Mapping[str, Any] | None = None) -> Iterator[SnapshotEntry]:
    """The snapshots of ``branch``, newest first (:class:`~arcoforge.errors.RecipeError` if there is no repository)."""
    from ..errors import RecipeError

    if not repository_exists(url, storage_options):
        raise RecipeError(f"no Icechunk repository at {url}")
    repo = open_repository(url, storage_options, create=False)
    if branch not in repo.list_branches():
        raise RecipeError(f"{url} has no branch {branch!r} (it has {sorted(repo.list_branches())})")
    for info in repo.ancestry(branch=branch):
        yield SnapshotEntry(info.id, info.written_at.isoformat(timespec="seconds"), info.message,
                            dict(info.metadata.get(METADATA_KEY) or {}))


def quiet_icechunk_logs() -> None:
    """Keep Icechunk's warning that local repositories are not safe for concurrent commits off stderr.

    arcoforge commits from one step per bake, so the warning is not about us;
    ``ICECHUNK_LOG`` in the environment keeps Icechunk's own log settings.
    """
    import os

    import icechunk

    if "ICECHUNK_LOG" in os.environ:  # the user's own choice
        return
    try:
        icechunk.set_logs_filter("error")
    except Exception:  # noqa: BLE001 - a logging nicety, never a reason to fail
        logger.debug("could not set Icechunk's log filter", exc_info=True)
