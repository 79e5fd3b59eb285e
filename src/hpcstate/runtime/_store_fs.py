"""Which file system holds the store, and whether SQLite is safe on it.

SQLite's WAL mode keeps its lock table in a memory-mapped ``-shm`` file: processes on
OTHER hosts never see each other's locks, and the POSIX locks of network file systems
are unreliable or off. On NFS, Lustre, GPFS, BeeGFS, CIFS... two hosts writing one store
can corrupt it silently. :func:`network_filesystem` names such a file system from
``/proc/self/mountinfo`` (Linux; elsewhere nothing is detected) so the store can refuse
to open there and point to PostgreSQL instead.

The parsing is pure (:func:`mount_of` takes the mountinfo text) and tested on recorded
lines; :func:`filesystem_of` reads the running host's table.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from attrs import frozen

#: File system types (mountinfo's "fstype" field, before any ".subtype") on which
#: SQLite's locking is not safe between hosts, with the name a user knows them by.
NETWORK_FILESYSTEMS: Final[dict[str, str]] = {
    "nfs": "NFS",
    "nfs4": "NFS",
    "lustre": "Lustre",
    "gpfs": "GPFS (IBM Storage Scale)",
    "beegfs": "BeeGFS",
    "cifs": "CIFS/SMB",
    "smb3": "CIFS/SMB",
    "smbfs": "CIFS/SMB",
    "ceph": "CephFS",
    "glusterfs": "GlusterFS",
    "gfs2": "GFS2",
    "ocfs2": "OCFS2",
    "afs": "AFS",
    "panfs": "PanFS",
    "pvfs2": "OrangeFS",
    "orangefs": "OrangeFS",
    "wekafs": "WekaFS",
    "9p": "9P",
    "vboxsf": "VirtualBox shared folder",
}
#: FUSE subtypes ("fuse.<subtype>") that are network file systems.
NETWORK_FUSE: Final[dict[str, str]] = {
    "sshfs": "SSHFS",
    "glusterfs": "GlusterFS",
    "ceph-fuse": "CephFS",
    "cephfs": "CephFS",
    "beegfs": "BeeGFS",
    "s3fs": "s3fs",
    "rclone": "rclone",
    "juicefs": "JuiceFS",
}

_OCTAL: Final = re.compile(r"\\([0-7]{3})")


@frozen
class Mount:
    """One line of mountinfo: where it is mounted, its type, and its source."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/<pid>/mountinfo`` text; lines that do not have the
    documented shape (``... mount_point ... - fstype source options``) are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < dash + 3 or len(fields) < 5:
            continue
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]),
                fstype=fields[dash + 1],
                source=_unescape(fields[dash + 2]),
            )
        )
    return mounts


def mount_of(path: str, mountinfo: str) -> Mount | None:
    """The mount that holds the absolute, resolved ``path``: the last-mounted of the
    longest mount points that contain it (a later mount on the same point hides an
    earlier one)."""
    best: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        point = mount.mount_point.rstrip("/") or "/"
        inside = point == "/" or path == point or path.startswith(point + "/")
        if not inside:
            continue
        if best is None or len(point) >= len(best.mount_point.rstrip("/") or "/"):
            best = mount
    return best


def unsafe_name(fstype: str) -> str | None:
    """The user-facing name of a network file system type, None for a local one."""
    if fstype.startswith("fuse."):
        return NETWORK_FUSE.get(fstype[5:])
    return NETWORK_FILESYSTEMS.get(fstype.split(".", 1)[0])


def filesystem_of(path: Path) -> Mount | None:
    """The mount holding ``path`` (the nearest existing ancestor), or None where
    ``/proc/self/mountinfo`` cannot be read (not Linux)."""
    try:
        text = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    probe = path.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return mount_of(os.path.realpath(probe), text)


def network_filesystem(path: Path) -> tuple[str, Mount] | None:
    """(name, mount) if ``path`` is on a network file system, else None."""
    mount = filesystem_of(path)
    if mount is None:
        return None
    name = unsafe_name(mount.fstype)
    return (name, mount) if name is not None else None
