"""File-system primitives and the claim area: atomic writes, safe moves, claims, recovery."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

import pytest

from daemon.config import OutcomeConfig
from daemon.errors import AlreadyRunningError
from daemon.fs import (
    TMP_SUFFIX,
    filesystem_type,
    hold_lock,
    move_into,
    remove_stale_temporaries,
    write_atomic,
    write_atomic_group,
    write_new,
)
from daemon.intake.claims import ClaimArea

SHM = Path("/dev/shm")


def _other_device_folder(tmp_path: Path) -> Path:
    if not SHM.is_dir() or SHM.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary folder")
    folder = SHM / f"infarctwatch-test-{os.getpid()}-{tmp_path.name}"
    folder.mkdir()
    return folder


class TestWriteAtomicGroup:
    def test_every_file_lands_and_no_temporary_is_left(self, tmp_path) -> None:
        """A group writes new files and replaces old ones; only the final names remain."""
        (tmp_path / "b.json").write_bytes(b"old")
        files = [(tmp_path / f"{n}.json", n.encode() * 3) for n in "abc"]
        assert write_atomic_group(files) == [None, None, None]
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
            "a.json": b"aaa",
            "b.json": b"bbb",
            "c.json": b"ccc",
        }

    def test_a_file_of_another_folder_or_a_relative_path_lands_where_asked(
        self, tmp_path, monkeypatch
    ) -> None:
        """Names are relative to the first file's folder; any other path is taken as given."""
        first, other = tmp_path / "first", tmp_path / "other"
        first.mkdir()
        other.mkdir()
        monkeypatch.chdir(tmp_path)
        files = [
            (Path("first/1.json"), b"1"),
            (other / "2.json", b"2"),
            (Path("other/3.json"), b"3"),
        ]
        assert write_atomic_group(files) == [None, None, None]
        assert sorted(p.name for p in first.iterdir()) == ["1.json"]
        assert sorted(p.name for p in other.iterdir()) == ["2.json", "3.json"]
        assert (other / "3.json").read_bytes() == b"3"

    def test_a_vanished_folder_is_made_again(self, tmp_path) -> None:
        """The reports folder deleted under the daemon: made again, the files land in it."""
        gone = tmp_path / "gone"
        errors = write_atomic_group([(gone / "a.json", b"a"), (gone / "b.json", b"b")])
        assert errors == [None, None]
        assert sorted(p.name for p in gone.iterdir()) == ["a.json", "b.json"]

    def test_a_folder_that_cannot_be_made_is_every_files_error(self, tmp_path) -> None:
        """A file where the folder should be: each entry carries the error, nothing is written."""
        (tmp_path / "blocked").write_bytes(b"")
        folder = tmp_path / "blocked" / "reports"
        errors = write_atomic_group([(folder / "a.json", b"a"), (folder / "b.json", b"b")])
        assert all(isinstance(e, NotADirectoryError) for e in errors)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked"]


class TestWriteAtomic:
    def test_replaces_content_and_leaves_no_temporary(self, tmp_path) -> None:
        """The final name holds the new bytes; no temporary file is left beside it."""
        target = tmp_path / "r.json"
        write_atomic(target, b"old")
        write_atomic(target, b"new")
        assert target.read_bytes() == b"new"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

    def test_stale_temporaries_from_a_crash_are_removed(self, tmp_path) -> None:
        """Temporary files (dotfiles with the temporary suffix) are cleared; others are kept."""
        (tmp_path / f".r.json.abcd{TMP_SUFFIX}").write_bytes(b"half")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / f".x.1234{TMP_SUFFIX}").write_bytes(b"half")
        (tmp_path / "keep.json").write_bytes(b"{}")
        assert remove_stale_temporaries(tmp_path) == 2
        assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["keep.json"]


class TestMoveInto:
    def test_a_different_file_of_the_same_name_is_never_replaced(self, tmp_path) -> None:
        """Name collisions get ~1, ~2: every file survives."""
        dest = tmp_path / "done"
        for content in (b"first", b"second", b"third"):
            src = tmp_path / "scan.png"
            src.write_bytes(content)
            move_into(src, dest, PurePosixPath("scan.png"))
        assert {p.name: p.read_bytes() for p in dest.iterdir()} == {
            "scan.png": b"first",
            "scan~1.png": b"second",
            "scan~2.png": b"third",
        }

    def test_an_identical_file_is_recognised_as_a_duplicate(self, tmp_path) -> None:
        """The same content under the same name (a re-run after a crash) is not copied twice."""
        dest = tmp_path / "done"
        for _ in range(2):
            src = tmp_path / "scan.png"
            src.write_bytes(b"same bytes")
            landed, duplicate = move_into(
                src,
                dest,
                PurePosixPath("scan.png"),
                sha256=hashlib.sha256(b"same bytes").hexdigest(),
            )
        assert duplicate
        assert landed == dest / "scan.png"
        assert [p.name for p in dest.iterdir()] == ["scan.png"]
        assert not (tmp_path / "scan.png").exists()

    def test_sub_folders_are_kept(self, tmp_path) -> None:
        """A name with sub-folders lands in the same sub-folders."""
        src = tmp_path / "x.dcm"
        src.write_bytes(b"x")
        landed, _ = move_into(src, tmp_path / "done", PurePosixPath("study/series/x.dcm"))
        assert landed == tmp_path / "done" / "study" / "series" / "x.dcm"

    def test_across_devices_the_file_is_copied_then_the_source_removed(self, tmp_path) -> None:
        """A real cross-device move (tmp -> /dev/shm): same bytes and mtime, source gone."""
        dest = _other_device_folder(tmp_path)
        try:
            src = tmp_path / "scan.png"
            src.write_bytes(os.urandom(3_000_000))
            os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
            expected = src.read_bytes()
            landed, duplicate = move_into(src, dest, PurePosixPath("scan.png"))
            assert not duplicate and landed == dest / "scan.png"
            assert landed.read_bytes() == expected
            assert landed.stat().st_mtime_ns == 1_600_000_000_000_000_000
            assert not src.exists()
            assert [p.name for p in dest.iterdir()] == ["scan.png"]
        finally:
            for path in dest.iterdir():
                path.unlink()
            dest.rmdir()

    def test_across_devices_a_symlink_is_recreated_never_followed(self, tmp_path) -> None:
        """A link is moved as a link (its target is never read or copied)."""
        dest = _other_device_folder(tmp_path)
        try:
            link = tmp_path / "link.png"
            link.symlink_to("/etc/passwd")
            landed, _ = move_into(link, dest, PurePosixPath("link.png"))
            assert landed is not None and landed.is_symlink()
            assert landed.readlink() == Path("/etc/passwd")
            assert not link.is_symlink()
        finally:
            for path in dest.iterdir():
                path.unlink()
            dest.rmdir()


class TestLock:
    def test_a_second_holder_is_refused_with_the_first_ones_pid(self, tmp_path) -> None:
        """Two daemons can never share a folder: the second is told which pid holds it."""
        lock = tmp_path / "lock"
        with (
            hold_lock(lock, "this work folder"),
            pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}"),
            hold_lock(lock, "this work folder"),
        ):
            pass
        with hold_lock(lock, "this work folder"):
            pass


class TestClaimArea:
    def _area(self, tmp_path: Path, **outcome: str) -> ClaimArea:
        area = ClaimArea(tmp_path / "in", tmp_path / "work", OutcomeConfig(**outcome))
        (tmp_path / "in").mkdir(parents=True)
        for folder in area.folders():
            folder.mkdir(parents=True, exist_ok=True)
        return area

    def test_claim_is_one_rename_into_processing(self, tmp_path) -> None:
        """The file keeps its inode (no copy) and its name, as processing/<claim id>~<name>."""
        area = self._area(tmp_path)
        src = tmp_path / "in" / "scan.dcm"
        src.write_bytes(b"dicom")
        inode = src.stat().st_ino
        claim = area.claim(src)
        assert claim is not None
        assert not src.exists()
        assert claim.path == area.processing / f"{claim.claim_id}~scan.dcm"
        assert claim.path.stat().st_ino == inode
        assert claim.name == "scan.dcm"

    def test_a_file_already_taken_is_not_claimed_twice(self, tmp_path) -> None:
        """The second claim of the same path finds nothing and leaves nothing behind."""
        area = self._area(tmp_path)
        src = tmp_path / "in" / "scan.dcm"
        src.write_bytes(b"x")
        assert area.claim(src) is not None
        assert area.claim(src) is None
        assert len(list(area.processing.iterdir())) == 1

    def test_two_files_of_the_same_name_never_collide(self, tmp_path) -> None:
        """Each claim has its own id, so a second scan.png does not replace the first."""
        area = self._area(tmp_path)
        claims = []
        for content in (b"one", b"two"):
            src = tmp_path / "in" / "scan.png"
            src.write_bytes(content)
            claims.append(area.claim(src))
        assert sorted(c.path.read_bytes() for c in claims if c) == [b"one", b"two"]

    @pytest.mark.parametrize(
        "name", ["study/series/a%2F b~1.dcm", "x" * 231, "x" * 232, "d/" + "é" * 120]
    )
    def test_any_name_survives_a_crash_exactly(self, tmp_path, name: str) -> None:
        """Sub-folders, escapes, '~' and names too long for one entry all come back as they were."""
        area = self._area(tmp_path, success="keep")
        src = tmp_path / "in" / name
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(b"scan")
        claim = area.claim(src)
        assert claim is not None
        assert claim.name == name
        (recovered,) = area.recover()  # what a restart after kill -9 sees
        assert (recovered.claim_id, recovered.path, recovered.name) == (
            claim.claim_id,
            claim.path,
            name,
        )
        assert area.finish(recovered, ok=True, sha256=None) == "kept"
        assert (area.root / "done" / name).read_bytes() == b"scan"
        assert list(area.processing.iterdir()) == []

    def test_recover_returns_leftovers_and_clears_empty_claim_folders(self, tmp_path) -> None:
        """After a crash: claims come back, names intact, in either layout; empty folders go."""
        area = self._area(tmp_path, success="keep")
        (area.processing / "0000000000000001-aaaaaa" / "study").mkdir(parents=True)
        (area.processing / "0000000000000001-aaaaaa" / "study" / "a.png").write_bytes(b"a")
        (area.processing / "0000000000000002-bbbbbb").mkdir()
        (area.processing / "0000000000000003-cccccc~sub%2Fb.png").write_bytes(b"b")
        (area.processing / "stray.png").write_bytes(b"s")
        claims = area.recover()
        assert sorted(c.name for c in claims) == ["stray.png", "study/a.png", "sub/b.png"]
        assert not (area.processing / "0000000000000002-bbbbbb").exists()
        for claim in claims:
            assert claim.path.exists()
            assert claim.path.is_relative_to(area.processing)
        again = {(c.claim_id, c.path, c.name) for c in area.recover()}  # a second crash
        assert again == {(c.claim_id, c.path, c.name) for c in claims}

    def test_outcomes_move_keep_delete(self, tmp_path) -> None:
        """Success moves to work/done, failure is kept beside incoming; delete removes."""
        area = self._area(tmp_path, success="move", failure="keep")
        ok_src, bad_src = tmp_path / "in" / "ok.png", tmp_path / "in" / "bad.png"
        ok_src.write_bytes(b"ok")
        bad_src.write_bytes(b"bad")
        ok, bad = area.claim(ok_src), area.claim(bad_src)
        assert ok and bad
        assert area.finish(ok, ok=True, sha256=None) == "moved"
        assert area.finish(bad, ok=False, sha256=None) == "kept"
        assert (tmp_path / "work" / "done" / "ok.png").read_bytes() == b"ok"
        assert (tmp_path / "in" / ".infarctwatch" / "failed" / "bad.png").read_bytes() == b"bad"
        assert list(area.processing.iterdir()) == []
        deleting = self._area(tmp_path / "d", success="delete")
        src = tmp_path / "d" / "in" / "x.png"
        src.write_bytes(b"x")
        claim = deleting.claim(src)
        assert claim and deleting.finish(claim, ok=True, sha256=None) == "deleted"
        assert files(tmp_path / "d") == []


def files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if not p.is_dir()]


def test_filesystem_type_of_a_local_folder(tmp_path: Path) -> None:
    """The mount table names the file system of a folder (used to warn about inotify on NFS)."""
    kind = filesystem_type(tmp_path)
    assert kind is not None and kind not in ("nfs", "cifs")


_MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/scanner nfs4 rw,vers=4.2 0 0
//pacs/dwi\\040export /mnt/dwi\\040export cifs rw 0 0
tmpfs /mnt/scanner/cache tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/srv/reports", "ext4"),  # only / holds it
        ("/mnt/scanner", "nfs4"),  # the mount point itself
        ("/mnt/scanner/incoming", "nfs4"),  # inside it
        ("/mnt/scanner/cache/x", "tmpfs"),  # the longest prefix wins over /mnt/scanner
        ("/mnt/scannerX/incoming", "ext4"),  # a longer name is not inside /mnt/scanner
        ("/mnt/dwi export/incoming", "cifs"),  # \040 in the mount table is a space
    ],
)
def test_filesystem_type_reads_the_mount_table(tmp_path: Path, path: str, kind: str) -> None:
    """Longest mount-point prefix, whole path components only, octal-escaped spaces."""
    mounts = tmp_path / "mounts"
    mounts.write_text(_MOUNTS, encoding="utf-8")
    assert filesystem_type(Path(path), mounts=mounts) == kind


def test_filesystem_type_without_a_mount_table(tmp_path: Path) -> None:
    """No readable mount table: unknown, never a guess."""
    assert filesystem_type(tmp_path, mounts=tmp_path / "missing") is None


def test_write_new_never_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A taken name gets ~1, then ~2; the first file keeps its bytes; no temporary is left."""
    target = tmp_path / "note.json"
    assert write_new(target, b"first") == target
    assert write_new(target, b"second") == tmp_path / "note~1.json"
    assert write_new(target, b"third") == tmp_path / "note~2.json"
    assert target.read_bytes() == b"first"
    assert (tmp_path / "note~2.json").read_bytes() == b"third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.json", "note~1.json", "note~2.json"]
