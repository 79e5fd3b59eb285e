"""The store's environment: a disk that fills up, a read-only file system, a state
directory that cannot be created, a network file system.

Full and read-only disks are REAL: a small tmpfs mounted by the test (as root; the
tests skip, saying why, where mounting is not permitted) and unmounted afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import hpcstate as h
from hpcstate import Run
from hpcstate.backend import JobSpec
from hpcstate.cli import run_cli
from hpcstate.runtime import (
    Store,
    StoreEnvironmentError,
    StoreFull,
    StoreReadOnly,
    StoreUnsafeFilesystem,
)
from hpcstate.runtime._store import Change
from hpcstate.runtime._store_fs import mount_of, parse_mountinfo, unsafe_name

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _run(run_id: str, count: int = 1) -> Run:
    items = [
        h.new_item(id=f"{run_id}.{i}", run_id=run_id, backend="local", now=T0, array_index=i)
        for i in range(count)
    ]
    return Run(id=run_id, backend="local", name=f"job {run_id}", created_at=T0, items=items)


class Tmpfs:
    def __init__(self, point: Path) -> None:
        self.point = point

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.point)], check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    """A 2 MiB tmpfs of its own (to fill up, or to make read-only)."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield Tmpfs(point)
    finally:
        if subprocess.run(["umount", str(point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], check=False)


def _fill_disk(directory: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def test_a_disk_that_fills_during_writes_is_store_full_and_loses_nothing(tmpfs: Tmpfs) -> None:
    db = tmpfs.point / "state" / "hpcstate.db"
    spec = JobSpec(command=["echo", "x" * 2000])
    created: list[str] = []
    ballast = tmpfs.point / "ballast"  # deleted later: "free some space and retry"
    ballast.write_bytes(b"\0" * 512 * 1024)
    with Store(db) as store:
        with pytest.raises(StoreFull) as info:  # noqa: PT012 (fill until it is full)
            for n in range(10_000):
                store.create_run(_run(f"r{n:05d}", count=3), spec=spec)
                created.append(f"r{n:05d}")
        assert info.value.location == str(db)
        assert "full" in str(info.value)
        assert str(db) in str(info.value)
        assert len(created) >= 3  # it did fill up while writing
        # The failed transaction was rolled back; every run stored before is intact.
        assert [s.id for s in store.list_runs()] == sorted(created)  # same created_at: by id
        # A compare-and-set on a full disk fails the same way and changes nothing.
        _fill_disk(tmpfs.point)
        item = store.get_item(f"{created[0]}.0")
        step = h.submitted(item, native_id="42", at=T0 + timedelta(seconds=1))
        with contextlib.suppress(StoreFull):  # the WAL may still have room for one
            for _ in range(200):
                store.add_self_report(
                    run_id=created[0], item_id=item.id, reported_at=T0, doc={"pad": "y" * 4000}
                )
        with pytest.raises(StoreFull):
            store.commit([Change(item=step.item, expected_version=0, events=step.events)])
        assert store.get_item(item.id).version == 0
        ballast.unlink()
        # Space again: the same store writes again.
        store.commit([Change(item=step.item, expected_version=0, events=step.events)])
        assert store.get_item(item.id).native_id == "42"
    with Store(db) as again:
        assert len(again.list_runs()) == len(created)
        assert again.get_run(created[-1]).items[2].id == f"{created[-1]}.2"


def test_a_read_only_file_system_reads_and_refuses_writes(tmpfs: Tmpfs, tmp_path: Path) -> None:
    db = tmpfs.point / "state" / "hpcstate.db"
    with Store(db) as store:
        store.create_run(_run("r1", count=2))
        store.create_run(_run("r2"))
    tmpfs.remount("ro")
    with Store(db) as store:
        assert store.read_only is not None
        assert [s.id for s in store.list_runs()] == ["r1", "r2"]
        assert [i.id for i in store.get_run("r1").items] == ["r1.0", "r1.1"]
        good, bad = store.active_items()
        assert (len(good), bad) == (3, [])
        with pytest.raises(StoreReadOnly) as info:
            store.create_run(_run("r3"))
        assert info.value.location == str(db)
        assert "read-only" in str(info.value)
        item = store.get_item("r1.0")
        step = h.submitted(item, native_id="7", at=T0)
        with pytest.raises(StoreReadOnly):
            store.commit([Change(item=step.item, expected_version=0, events=step.events)])
        with pytest.raises(StoreReadOnly):
            store.prune(older_than=timedelta(0), now=T0 + timedelta(days=1))
    # What a user meets: `hpcstate list --cached` works on it.
    out, err = io.StringIO(), io.StringIO()
    env = {"HPCSTATE_DB": str(db), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    code = run_cli(["list", "--cached"], env=env, stdout=out, stderr=err, tty=False)
    assert code == 0, err.getvalue()
    assert "r1" in out.getvalue()
    assert "r2" in out.getvalue()


def test_a_read_only_file_in_a_writable_directory_reads_and_refuses_writes(
    tmp_path: Path,
) -> None:
    """The file alone is read-only (a read-only bind mount of just the file): the
    directory is writable, so SQLite can make its WAL index there and reads work."""
    db = tmp_path / "hpcstate.db"
    with Store(db) as store:
        store.create_run(_run("r1", count=2))
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    bound = subprocess.run(["mount", "--bind", str(db), str(db)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"bind mounts are not permitted here: {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(db)], check=True)
        with Store(db) as store:
            assert store.read_only == f"the file {db} is not writable"
            assert [i.id for i in store.get_run("r1").items] == ["r1.0", "r1.1"]
            with pytest.raises(StoreReadOnly, match="read-only"):
                store.create_run(_run("r2"))
            assert [s.id for s in store.list_runs()] == ["r1"]
    finally:
        subprocess.run(["umount", str(db)], check=False)
    with Store(db) as writable:  # unmounted: the same file is writable again
        writable.create_run(_run("r2"))
        assert len(writable.list_runs()) == 2


def test_an_uncreatable_state_directory_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(StoreEnvironmentError) as info:
        Store(blocker / "state" / "hpcstate.db")
    assert info.value.location == str(blocker / "state")
    assert f"cannot create the state directory {blocker / 'state'}" in str(info.value)


def test_an_uncreatable_state_directory_on_a_read_only_disk_is_named(tmpfs: Tmpfs) -> None:
    tmpfs.remount("ro")
    with pytest.raises(StoreEnvironmentError) as info:
        Store(tmpfs.point / "state" / "hpcstate.db")
    assert info.value.location == str(tmpfs.point / "state")
    assert "Read-only file system" in str(info.value)


def test_a_new_store_in_a_read_only_directory_is_named(tmpfs: Tmpfs) -> None:
    (tmpfs.point / "state").mkdir()
    tmpfs.remount("ro")
    with pytest.raises(StoreEnvironmentError) as info:
        Store(tmpfs.point / "state" / "hpcstate.db")
    assert info.value.location == str(tmpfs.point / "state")
    assert "not writable" in str(info.value)


# -- network file systems --------------------------------------------------------------

# Lines as /proc/self/mountinfo prints them (recorded on Linux hosts: an NFS home, a
# Lustre scratch, GPFS, BeeGFS, CIFS, sshfs, and local file systems).
MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
61 27 0:52 / /home rw,relatime shared:30 - nfs4 fs1.example.org:/export/home rw,vers=4.2,rsize=1048576,hard,proto=tcp,sec=sys
62 61 0:53 / /home/alice/local\040disk rw,relatime - xfs /dev/sdb1 rw,attr2
70 27 0:60 / /lustre/scratch rw,relatime shared:40 - lustre 10.0.0.1@o2ib:/scratch rw,flock,lazystatfs
71 27 0:61 / /gpfs/projects rw,relatime - gpfs projects rw
72 27 0:62 / /mnt/beegfs rw,relatime - beegfs beegfs_nodev rw,cfgFile=/etc/beegfs/beegfs-client.conf
73 27 0:63 / /mnt/share rw,relatime - cifs //nas/share rw,vers=3.1.1,cache=strict
74 27 0:64 / /mnt/remote rw,nosuid,nodev,relatime - fuse.sshfs alice@host: rw,user_id=0
75 27 0:65 / /mnt/nfs3 rw,relatime - nfs nas:/vol rw,vers=3
76 27 0:66 / /dev/shm rw,relatime - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "mount_point", "name"),
    [
        ("/home/alice/.local/state/hpcstate/hpcstate.db", "/home", "NFS"),
        ("/home/alice/local disk/hpcstate.db", "/home/alice/local disk", None),
        ("/lustre/scratch/alice/hpcstate.db", "/lustre/scratch", "Lustre"),
        ("/gpfs/projects/x.db", "/gpfs/projects", "GPFS (IBM Storage Scale)"),
        ("/mnt/beegfs/x.db", "/mnt/beegfs", "BeeGFS"),
        ("/mnt/share/x.db", "/mnt/share", "CIFS/SMB"),
        ("/mnt/remote/x.db", "/mnt/remote", "SSHFS"),
        ("/mnt/nfs3/x.db", "/mnt/nfs3", "NFS"),
        ("/mnt/nfs3x/x.db", "/", None),  # a prefix of the name is not the mount
        ("/dev/shm/x.db", "/dev/shm", None),
        ("/var/tmp/x.db", "/", None),
    ],
)
def test_recorded_mount_lines_name_network_file_systems(
    path: str, mount_point: str, name: str | None
) -> None:
    mount = mount_of(path, MOUNTINFO)
    assert mount is not None
    assert mount.mount_point == mount_point
    assert unsafe_name(mount.fstype) == name


def test_mountinfo_lines_of_another_shape_are_skipped() -> None:
    assert parse_mountinfo("garbage\n\n1 2 3\n") == []
    assert mount_of("/x", "") is None


def test_a_local_store_is_not_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "hpcstate.db") as store:
        assert store.read_only is None


def test_a_store_on_a_network_file_system_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The detection reads the host's mount table; give it one where tmp_path is NFS.
    from hpcstate.runtime import _store_fs

    table = f"27 1 254:0 / / rw - ext4 /dev/vda rw\n61 27 0:52 / {tmp_path} rw - nfs4 nas:/h rw\n"
    monkeypatch.setattr(
        _store_fs, "filesystem_of", lambda path: mount_of(os.path.realpath(path), table)
    )
    db = tmp_path / "state" / "hpcstate.db"
    with pytest.raises(StoreUnsafeFilesystem) as info:
        Store(db)
    message = str(info.value)
    assert f"{db} is on NFS (nfs4 mounted at {tmp_path})" in message
    assert "postgresql://" in message
    assert info.value.location == str(db)
    assert not db.exists()
    # The documented override: used anyway, without WAL (no shared memory).
    monkeypatch.setenv("HPCSTATE_ALLOW_NETWORK_FS", "1")
    with Store(db) as store:
        store.create_run(_run("r1"))
        assert store._read("PRAGMA journal_mode")[0][0] == "delete"


# -- a power loss or an OS crash -------------------------------------------------------

_CLAIMER = """
import os, sys
from datetime import datetime, timezone
from hpcstate.runtime import Store

store = Store(sys.argv[1], sweep=False)
at = datetime(2026, 3, 1, tzinfo=timezone.utc)
store.claim_submit("c.0", version=0, tag="t0", at=at)  # restarts the WAL: synced anyway
os.path.exists(sys.argv[2] + "-begin")
claimed = store.claim_submit("c.1", version=0, tag="t1", at=at)
os.path.exists(sys.argv[2] + "-end")
os._exit(0 if claimed else 3)  # no close: closing checkpoints (and syncs) the WAL
"""


def test_a_submit_claim_is_on_disk_when_claim_submit_returns(tmp_path: Path) -> None:
    # WAL with synchronous=NORMAL (the store's setting) does not sync at commit: after a
    # power loss the claim could be gone while its job went out, and a restarted
    # tracker would submit the job again. The claim's commit must sync the log.
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.create_run(_run("c", count=2))
    marker = str(tmp_path / "mark")
    trace = tmp_path / "trace"
    source = Path(h.__file__).parent.parent  # the hpcstate under test, in the child too
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-o",
            str(trace),
            "-e",
            "trace=fsync,fdatasync,access,stat,newfstatat",
            sys.executable,
            "-c",
            _CLAIMER,
            str(db),
            marker,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "ptrace" in done.stderr and done.returncode != 0:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    lines = trace.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if f"{marker}-begin" in line)
    end = next(i for i, line in enumerate(lines) if f"{marker}-end" in line)
    syncs = [line for line in lines[begin:end] if "fsync(" in line or "fdatasync(" in line]
    assert syncs, "the second claim's commit did not sync anything"
