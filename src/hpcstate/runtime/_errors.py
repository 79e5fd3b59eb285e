"""Errors the runtime adds to the core's tree (all are HpcStateError subclasses)."""

from __future__ import annotations

from hpcstate import HpcStateError, TransportError


class HostKeyRejected(TransportError):
    """The SSH server's host key is not the one known_hosts expects (or is unknown).

    Permanent: retrying cannot help, and connecting anyway could hand credentials and
    job data to an impostor. Fix known_hosts (``ssh-keyscan``) after checking the key.
    """


class AuthenticationFailed(TransportError):
    """The SSH server refused every key we offered. Permanent until the setup changes."""


class StoreError(HpcStateError):
    """The state database cannot be used (wrong file, newer schema, unknown item...)."""


class CorruptRow(StoreError):
    """One stored row cannot be read; the message names the table and the row id."""

    def __init__(self, table: str, row_id: str, detail: str) -> None:
        self.table = table
        self.row_id = row_id
        self.detail = detail
        super().__init__(f"corrupt row in table {table!r}, id {row_id!r}: {detail}")


class StoreEnvironmentError(StoreError):
    """The store cannot be used because of its environment, not because of hpcstate:
    the state directory cannot be created, the file or its directory is not writable,
    the disk is full, the file system is unsafe for it. ``location`` names the file,
    directory or URL. The CLI exits 73 (cannot create) or 74 (I/O) for these."""

    def __init__(self, message: str, *, location: str) -> None:
        self.location = location
        super().__init__(message)


class StoreReadOnly(StoreEnvironmentError):
    """The store (or its directory) can be read but not written; reads still work."""


class StoreFull(StoreEnvironmentError):
    """The disk (or quota) holding the store is full; nothing already stored is lost."""


class StoreUnsafeFilesystem(StoreEnvironmentError):
    """SQLite on a network file system (NFS, Lustre, GPFS, BeeGFS...): its locking and
    WAL shared memory are not safe there; use a PostgreSQL store."""
