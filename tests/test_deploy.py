"""Model deployment: pack, verify, sign, install, roll back, list and prune bundles.

Every bundle is made from the committed seed bundle, copied into a temporary folder and given its
own version with `daemon.shared.bundle.write_manifest`. Every refusal is checked the same way: a
snapshot of the models folder (names, types, modes, sizes, contents, link targets) taken before
equals the one taken after.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pkgutil
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

import deploy
from daemon.cli import main as infarctwatch
from daemon.shared.bundle import (
    DEFAULT_BUNDLE,
    MANIFEST,
    SIGNATURE,
    designated_bundle,
    load_bundle,
)
from daemon.shared.bundle import write_manifest as daemon_write_manifest
from deploy.archive import Limits, inspect, unpack
from deploy.cli import main
from deploy.device_config import read_policy
from deploy.errors import (
    DeployConfigError,
    KeyFileError,
    ModelsDirError,
    RollbackError,
    SignatureError,
    UnsafeArchiveError,
    VerificationError,
    VersionConflictError,
)
from deploy.install import (
    CURRENT,
    HISTORY,
    VERSIONS,
    install_bundle,
    list_versions,
    prune,
    rollback,
    rollback_target,
)
from deploy.pack import pack_bundle, sign_bundle
from deploy.signing import SignaturePolicy, keygen, sign_folder
from deploy.verify import verify_bundle

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# ------------------------------------------------------------------------------------ helpers


def make_bundle(base: Path, version: str, *, name: str = "infarctwatch-test") -> Path:
    """A valid bundle folder with its own version and content, from the committed seed bundle."""
    folder = base / f"src-{version}"
    shutil.copytree(DEFAULT_BUNDLE, folder)
    seed = json.loads((DEFAULT_BUNDLE / MANIFEST).read_text())
    (folder / "metrics.json").write_text(json.dumps({"version": version}) + "\n")
    daemon_write_manifest(
        folder,
        name=name,
        version=version,
        variants=seed["variants"],
        input_spec=seed["input"],
        metrics_summary={},
    )
    return folder


def make_archive(base: Path, version: str, **kwargs: Path | None) -> Path:
    """A packed ``.tar.gz`` of `make_bundle` (``sign_key=...`` to sign it)."""
    folder = make_bundle(base, version)
    return pack_bundle(folder, base / f"b-{version}.tar.gz", sign_key=kwargs.get("sign_key")).path


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything observable about a tree except folder timestamps."""
    if not root.exists():
        return {}
    result: dict[str, tuple[object, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            result[rel] = ("link", str(path.readlink()))
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = ("dir", st.st_mode, st.st_uid)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            result[rel] = ("file", st.st_mode, st.st_size, digest, st.st_mtime_ns)
    return result


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def evil_archive(path: Path, bundle: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    """A real bundle (its sub-folders' files too) plus whatever ``extra`` adds, as ``path``
    (.tar.gz)."""
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(p for p in bundle.rglob("*") if p.is_file()):
            add_bytes(tar, f"b/{file.relative_to(bundle).as_posix()}", file.read_bytes())
        extra(tar)
    return path


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog for a terminal; leave the global state as it was found."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A models folder holding version 1.0.0 (current)."""
    folder = tmp_path / "models"
    install_bundle(make_archive(tmp_path, "1.0.0"), folder)
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh ed25519 key pair from keygen: (private, public)."""
    (tmp_path / "keys").mkdir()
    return keygen(tmp_path / "keys" / "release")


# --------------------------------------------------------------------------------------- pack


class TestPack:
    def test_run_folder_is_packed_from_its_bundle_subfolder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`pack RUN_DIR` finds RUN_DIR/bundle and names the archive NAME-VERSION.tar.gz."""
        run = tmp_path / "run"
        run.mkdir()
        make_bundle(tmp_path, "2.1.0").rename(run / "bundle")
        (run / "train.log").write_text("not part of the bundle\n")
        monkeypatch.chdir(tmp_path)
        packed = pack_bundle(run)
        assert packed.path == Path("infarctwatch-test-2.1.0.tar.gz")
        assert packed.verified.version == "2.1.0"
        with tarfile.open(packed.path) as tar:
            names = tar.getnames()
        assert "infarctwatch-test-2.1.0/manifest.json" in names
        assert not any("train.log" in n for n in names)

    def test_packing_is_reproducible(self, tmp_path: Path) -> None:
        """The same bundle packs to the same bytes: an archive's sha256 names it."""
        folder = make_bundle(tmp_path, "1.0.0")
        a = pack_bundle(folder, tmp_path / "a.tar.gz").path.read_bytes()
        os.utime(folder / "labels.json", (0, 0))
        b = pack_bundle(folder, tmp_path / "b.tar.gz").path.read_bytes()
        assert a == b

    def test_archive_members_are_plain_and_owned_by_root(self, tmp_path: Path) -> None:
        """Members are folders and regular files, uid/gid 0, modes 0755/0644."""
        path = make_archive(tmp_path, "1.0.0")
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                assert member.isdir() or member.isreg()
                assert (member.uid, member.gid) == (0, 0)
                assert member.mode == (0o755 if member.isdir() else 0o644)

    def test_an_invalid_folder_is_not_packed(self, tmp_path: Path) -> None:
        """A bundle that fails verification is refused before any archive is written."""
        folder = make_bundle(tmp_path, "1.0.0")
        (folder / "model.bin").write_bytes(b"corrupt")
        with pytest.raises(VerificationError, match=r"model\.bin: sha256"):
            pack_bundle(folder, tmp_path / "out.tar.gz")
        assert not (tmp_path / "out.tar.gz").exists()
        assert not list(tmp_path.glob(".pack-*"))

    def test_signing_while_packing_leaves_the_run_folder_alone(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """--sign puts manifest.sig into the archive only, never into the training run."""
        private, public = keys
        folder = make_bundle(tmp_path, "1.0.0")
        before = snapshot(folder)
        packed = pack_bundle(folder, tmp_path / "s.tar.gz", sign_key=private, public_key=public)
        assert snapshot(folder) == before
        assert packed.verified.signature.startswith("signature valid")


# ------------------------------------------------------------------------------------- verify


class TestVerify:
    def test_folder_and_archive_verify_alike(self, tmp_path: Path) -> None:
        """A folder and its archive give the same name, version and manifest sha256."""
        folder = make_bundle(tmp_path, "1.0.0")
        archive = pack_bundle(folder, tmp_path / "a.tar.gz").path
        a, b = verify_bundle(folder), verify_bundle(archive)
        assert (a.name, a.version, a.sha256) == (b.name, b.version, b.sha256)
        listed = len(json.loads((folder / "manifest.json").read_text())["files"])
        assert a.files == b.files == listed and a.signature == "unsigned"

    def test_checksum_mismatch_is_reported_with_the_file_name(self, tmp_path: Path) -> None:
        """A changed byte in model.bin fails verification and names the file."""
        folder = make_bundle(tmp_path, "1.0.0")
        data = bytearray((folder / "model.bin").read_bytes())
        data[100] ^= 0xFF
        (folder / "model.bin").write_bytes(bytes(data))
        with pytest.raises(VerificationError, match=r"model\.bin: sha256 .* does not match"):
            verify_bundle(folder)

    def test_unknown_format_version_is_refused(self, tmp_path: Path) -> None:
        """A manifest from a future bundle format is refused, saying which formats are read."""
        folder = make_bundle(tmp_path, "1.0.0")
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["format_version"] = 99
        (folder / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(VerificationError, match="format_version 99 is not supported"):
            verify_bundle(folder)

    def test_missing_path_is_a_verification_error(self, tmp_path: Path) -> None:
        """A bundle path that does not exist says so."""
        with pytest.raises(VerificationError, match="no such file"):
            verify_bundle(tmp_path / "nope.tar.gz")


# ------------------------------------------------------------------------------------ signing


class TestSigning:
    def test_keygen_writes_a_private_key_only_its_owner_can_read(
        self, keys: tuple[Path, Path]
    ) -> None:
        """The private key is mode 0600, the public key 0644, both PEM."""
        private, public = keys
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert stat.S_IMODE(public.stat().st_mode) == 0o644
        assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
        assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")

    def test_keygen_never_overwrites_a_key(self, keys: tuple[Path, Path]) -> None:
        """Running keygen twice with one prefix is refused and the key stays."""
        private, _ = keys
        before = private.read_bytes()
        with pytest.raises(KeyFileError, match="refusing to overwrite"):
            keygen(private.with_suffix(""))
        assert private.read_bytes() == before

    def test_signed_bundle_is_accepted_when_a_signature_is_required(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """A bundle signed with the key pair verifies against its public key."""
        private, public = keys
        archive = make_archive(tmp_path, "1.0.0", sign_key=private)
        result = verify_bundle(archive, SignaturePolicy(public, require_signature=True))
        assert result.signature.startswith("signature valid (key ")

    def test_unsigned_bundle_is_refused_when_required(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """No manifest.sig and require_signature: refused."""
        _, public = keys
        archive = make_archive(tmp_path, "1.0.0")
        with pytest.raises(SignatureError, match=r"manifest\.sig is missing"):
            verify_bundle(archive, SignaturePolicy(public, require_signature=True))

    def test_unsigned_bundle_passes_when_not_required(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """A public key without require_signature accepts unsigned bundles, and says so."""
        _, public = keys
        result = verify_bundle(make_archive(tmp_path, "1.0.0"), SignaturePolicy(public))
        assert result.signature == "unsigned"

    def test_tampered_signature_is_refused_even_when_not_required(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """A signature that does not verify is never ignored."""
        private, public = keys
        folder = make_bundle(tmp_path, "1.0.0")
        sign_folder(folder, private)
        raw = bytearray((folder / SIGNATURE).read_bytes())
        raw[5] = ord("A") if raw[5] != ord("A") else ord("B")
        (folder / SIGNATURE).write_bytes(bytes(raw))
        with pytest.raises(SignatureError, match="does not verify"):
            verify_bundle(folder, SignaturePolicy(public))

    def test_signature_by_another_key_is_refused(self, tmp_path: Path) -> None:
        """A bundle signed by key A does not verify with key B."""
        a_private, _ = keygen(tmp_path / "a")
        _, b_public = keygen(tmp_path / "b")
        archive = make_archive(tmp_path, "1.0.0", sign_key=a_private)
        with pytest.raises(SignatureError, match="another key signed it"):
            verify_bundle(archive, SignaturePolicy(b_public, require_signature=True))

    def test_manifest_changed_after_signing_is_refused(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """Re-hashing a swapped model into the manifest breaks the signature."""
        private, public = keys
        folder = make_bundle(tmp_path, "1.0.0")
        sign_folder(folder, private)
        signature = (folder / SIGNATURE).read_bytes()
        (folder / "metrics.json").write_text('{"swapped": true}\n')
        seed = json.loads((folder / MANIFEST).read_text())
        daemon_write_manifest(
            folder,
            name=seed["name"],
            version=seed["version"],
            variants=seed["variants"],
            input_spec=seed["input"],
            metrics_summary={},
        )
        (folder / SIGNATURE).write_bytes(signature)
        with pytest.raises(SignatureError, match="the manifest was changed"):
            verify_bundle(folder, SignaturePolicy(public, require_signature=True))

    def test_garbage_signature_file_is_refused(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """manifest.sig that is not base64 of 64 bytes is refused with a clear reason."""
        _, public = keys
        folder = make_bundle(tmp_path, "1.0.0")
        (folder / SIGNATURE).write_text("not base64 at all!\n")
        with pytest.raises(SignatureError, match="not base64"):
            verify_bundle(folder, SignaturePolicy(public))

    def test_a_private_key_is_not_a_public_key(
        self, tmp_path: Path, keys: tuple[Path, Path]
    ) -> None:
        """Passing the private key where the public key belongs is a key error."""
        private, _ = keys
        archive = make_archive(tmp_path, "1.0.0", sign_key=private)
        with pytest.raises(KeyFileError, match="not a PEM public key"):
            verify_bundle(archive, SignaturePolicy(private))

    def test_sign_an_existing_archive(self, tmp_path: Path, keys: tuple[Path, Path]) -> None:
        """`sign ARCHIVE` rewrites it with a valid manifest.sig."""
        private, public = keys
        archive = make_archive(tmp_path, "1.0.0")
        sign_bundle(archive, private)
        result = verify_bundle(archive, SignaturePolicy(public, require_signature=True))
        assert result.signature.startswith("signature valid")


# ------------------------------------------------------------------------------------ install


class TestInstall:
    def test_install_creates_version_current_and_history(self, tmp_path: Path) -> None:
        """A first install unpacks versions/<v>, points current at it and records it."""
        models = tmp_path / "models"
        result = install_bundle(make_archive(tmp_path, "1.0.0"), models)
        assert result.action == "installed" and result.previous is None
        assert (models / CURRENT).readlink() == Path(VERSIONS) / "1.0.0"
        record = json.loads((models / HISTORY).read_text().splitlines()[-1])
        assert record["version"] == "1.0.0" and record["sha256"] == result.sha256
        assert not [p for p in models.iterdir() if p.name.startswith(".")]

    def test_a_hand_made_flat_archive_installs(self, tmp_path: Path) -> None:
        """`tar czf x.tar.gz -C bundle .` (a ./ root entry, ./-prefixed names) is accepted."""
        folder = make_bundle(tmp_path, "1.0.0")
        archive = tmp_path / "flat.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname=".")
        result = install_bundle(archive, tmp_path / "models")
        assert result.action == "installed" and result.version == "1.0.0"

    def test_the_daemon_loads_what_was_installed(self, tmp_path: Path) -> None:
        """designated_bundle(models) is the installed bundle and it loads."""
        models = tmp_path / "models"
        result = install_bundle(make_archive(tmp_path, "1.0.0"), models)
        bundle = load_bundle(designated_bundle(models))
        assert bundle.version == "1.0.0" and bundle.sha256 == result.sha256

    def test_a_folder_installs_like_an_archive(self, tmp_path: Path) -> None:
        """A bundle folder is copied (regular files only), verified, installed."""
        models = tmp_path / "models"
        result = install_bundle(make_bundle(tmp_path, "1.0.0"), models)
        assert result.action == "installed"
        assert load_bundle(models / CURRENT).version == "1.0.0"

    def test_installing_the_same_bundle_twice_changes_nothing(
        self, tmp_path: Path, models: Path
    ) -> None:
        """Re-installing the current bundle is a no-op: same tree, same history."""
        before = snapshot(models)
        result = install_bundle(tmp_path / "b-1.0.0.tar.gz", models)
        assert result.action == "unchanged"
        assert snapshot(models) == before

    def test_same_version_with_other_content_is_refused(self, tmp_path: Path, models: Path) -> None:
        """A version names one exact bundle: other content under it is refused, nothing changes."""
        other = tmp_path / "other"
        other.mkdir()
        folder = make_bundle(other, "1.0.0")
        (folder / "metrics.json").write_text('{"different": true}\n')
        seed = json.loads((folder / MANIFEST).read_text())
        daemon_write_manifest(
            folder,
            name=seed["name"],
            version="1.0.0",
            variants=seed["variants"],
            input_spec=seed["input"],
            metrics_summary={},
        )
        before = snapshot(models)
        with pytest.raises(VersionConflictError, match="give the new bundle a new version"):
            install_bundle(folder, models)
        assert snapshot(models) == before

    def test_reinstalling_an_older_installed_version_activates_it(
        self, tmp_path: Path, models: Path
    ) -> None:
        """An installed, non-current version is activated, not unpacked again."""
        install_bundle(make_archive(tmp_path, "2.0.0"), models)
        result = install_bundle(tmp_path / "b-1.0.0.tar.gz", models)
        assert result.action == "activated" and result.previous == "2.0.0"
        assert list_versions(models).current == "1.0.0"

    def test_a_damaged_installed_copy_is_repaired(self, tmp_path: Path, models: Path) -> None:
        """If versions/<v> was damaged on disk, installing the same bundle replaces it."""
        (models / VERSIONS / "1.0.0" / "model.bin").write_bytes(b"bit rot")
        result = install_bundle(tmp_path / "b-1.0.0.tar.gz", models)
        assert result.action == "repaired"
        assert load_bundle(models / CURRENT).version == "1.0.0"

    def test_concurrent_installs_are_serialised(self, tmp_path: Path, models: Path) -> None:
        """Two installs at once (CLI and the daemon's inbox, say) both land, one after the other."""
        archives = [make_archive(tmp_path, v) for v in ("2.0.0", "3.0.0")]
        errors: list[BaseException] = []

        def run(archive: Path) -> None:
            try:
                install_bundle(archive, models)
            except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(a,)) for a in archives]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        state = list_versions(models)
        assert {v.version for v in state.versions} == {"1.0.0", "2.0.0", "3.0.0"}
        assert state.current in {"2.0.0", "3.0.0"}
        assert len((models / HISTORY).read_text().splitlines()) == 3

    def test_current_as_a_real_folder_is_refused(self, tmp_path: Path) -> None:
        """A models folder whose current is not deploy's symlink is left alone."""
        models = tmp_path / "models"
        (models / CURRENT).mkdir(parents=True)
        before = snapshot(models)
        with pytest.raises(ModelsDirError, match="is not a symlink"):
            install_bundle(make_archive(tmp_path, "1.0.0"), models)
        assert snapshot(models) == before

    def test_a_refused_first_install_leaves_no_models_folder(self, tmp_path: Path) -> None:
        """The models folder created for an install is removed again when the bundle is refused."""
        folder = make_bundle(tmp_path, "1.0.0")
        (folder / "model.bin").write_bytes(b"corrupt")
        with pytest.raises(VerificationError):
            install_bundle(folder, tmp_path / "new" / "models")
        assert not (tmp_path / "new").exists()

    @pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
    def test_root_installs_files_owned_like_the_models_folder(self, tmp_path: Path) -> None:
        """Run as root, installed files take the models folder's owner (the service user)."""
        models = tmp_path / "models"
        models.mkdir()
        os.chown(models, 4321, 4321)
        install_bundle(make_archive(tmp_path, "1.0.0"), models)
        for path in [*models.rglob("*")]:
            assert (path.lstat().st_uid, path.lstat().st_gid) == (4321, 4321), path


# -------------------------------------------------------------------------------- refusals


class TestRefusals:
    """Each unsafe or invalid bundle is refused with a clear message and nothing changes."""

    def _refuse(self, models: Path, archive: Path, error: type[Exception], match: str) -> None:
        before = snapshot(models)
        with pytest.raises(error, match=match):
            install_bundle(archive, models)
        assert snapshot(models) == before

    def test_dotdot_member(self, tmp_path: Path, models: Path) -> None:
        """A member named b/../../evil.txt is refused and written nowhere."""
        archive = evil_archive(
            tmp_path / "e.tar.gz",
            make_bundle(tmp_path, "2.0.0"),
            lambda t: add_bytes(t, "b/../../evil.txt", b"x"),
        )
        self._refuse(models, archive, UnsafeArchiveError, r"'\.\.' component")
        assert not list(tmp_path.rglob("evil.txt"))

    def test_absolute_member(self, tmp_path: Path, models: Path) -> None:
        """A member with an absolute path is refused."""
        target = tmp_path / "abs-evil.txt"
        archive = evil_archive(
            tmp_path / "e.tar.gz",
            make_bundle(tmp_path, "2.0.0"),
            lambda t: add_bytes(t, str(target), b"x"),
        )
        self._refuse(models, archive, UnsafeArchiveError, "absolute path")
        assert not target.exists()

    @pytest.mark.parametrize("target", ["/etc/passwd", "../../../outside"])
    def test_symlink_pointing_outside(self, tmp_path: Path, models: Path, target: str) -> None:
        """A symlink leaving the bundle is refused (absolute or relative)."""

        def extra(tar: tarfile.TarFile) -> None:
            info = tarfile.TarInfo("b/escape")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)

        archive = evil_archive(tmp_path / "e.tar.gz", make_bundle(tmp_path, "2.0.0"), extra)
        self._refuse(models, archive, UnsafeArchiveError, "symlink .* points outside the bundle")

    def test_hardlink_pointing_outside(self, tmp_path: Path, models: Path) -> None:
        """A hard link to a file outside the bundle is refused."""

        def extra(tar: tarfile.TarFile) -> None:
            info = tarfile.TarInfo("b/passwd")
            info.type, info.linkname = tarfile.LNKTYPE, "../../etc/passwd"
            tar.addfile(info)

        archive = evil_archive(tmp_path / "e.tar.gz", make_bundle(tmp_path, "2.0.0"), extra)
        self._refuse(models, archive, UnsafeArchiveError, "hardlink .* points outside the bundle")

    def test_link_inside_the_bundle_is_refused_too(self, tmp_path: Path, models: Path) -> None:
        """Bundles hold regular files only: even a harmless inner symlink is refused."""

        def extra(tar: tarfile.TarFile) -> None:
            info = tarfile.TarInfo("b/alias.xml")
            info.type, info.linkname = tarfile.SYMTYPE, "model.xml"
            tar.addfile(info)

        archive = evil_archive(tmp_path / "e.tar.gz", make_bundle(tmp_path, "2.0.0"), extra)
        self._refuse(models, archive, UnsafeArchiveError, "regular files only")

    @pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
    def test_device_or_fifo(self, tmp_path: Path, models: Path, kind: bytes) -> None:
        """Character/block devices and fifos are refused."""

        def extra(tar: tarfile.TarFile) -> None:
            info = tarfile.TarInfo("b/dev")
            info.type, info.devmajor, info.devminor = kind, 1, 3
            tar.addfile(info)

        archive = evil_archive(tmp_path / "e.tar.gz", make_bundle(tmp_path, "2.0.0"), extra)
        self._refuse(models, archive, UnsafeArchiveError, "device or fifo")

    def test_duplicate_member(self, tmp_path: Path, models: Path) -> None:
        """A second manifest.json later in the archive (overwrite trick) is refused."""
        archive = evil_archive(
            tmp_path / "e.tar.gz",
            make_bundle(tmp_path, "2.0.0"),
            lambda t: add_bytes(t, "b/manifest.json", b"{}"),
        )
        self._refuse(models, archive, UnsafeArchiveError, "appears twice")

    def test_bad_checksum(self, tmp_path: Path, models: Path) -> None:
        """An archive whose model.bin does not match the manifest is refused."""
        folder = make_bundle(tmp_path, "2.0.0")
        (folder / "model.bin").write_bytes((folder / "model.bin").read_bytes()[:-1] + b"\0")
        archive = evil_archive(tmp_path / "e.tar.gz", folder, lambda _: None)
        self._refuse(models, archive, VerificationError, r"model\.bin: sha256")

    def test_unlisted_file(self, tmp_path: Path, models: Path) -> None:
        """A file the manifest does not list is refused: what is verified is what is loaded."""
        archive = evil_archive(
            tmp_path / "e.tar.gz",
            make_bundle(tmp_path, "2.0.0"),
            lambda t: add_bytes(t, "b/extra.py", b"import os\n"),
        )
        self._refuse(models, archive, VerificationError, "not listed in the manifest")

    def test_unknown_format_version(self, tmp_path: Path, models: Path) -> None:
        """A bundle from a future format is refused."""
        folder = make_bundle(tmp_path, "2.0.0")
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["format_version"] = 7
        (folder / MANIFEST).write_text(json.dumps(manifest))
        archive = evil_archive(tmp_path / "e.tar.gz", folder, lambda _: None)
        self._refuse(models, archive, VerificationError, "format_version 7 is not supported")

    def test_not_a_gzip_tar(self, tmp_path: Path, models: Path) -> None:
        """Random bytes are refused as unreadable."""
        archive = tmp_path / "junk.tar.gz"
        archive.write_bytes(os.urandom(4096))
        self._refuse(models, archive, UnsafeArchiveError, r"not a readable \.tar\.gz")

    def test_truncated_archive(self, tmp_path: Path, models: Path) -> None:
        """An archive cut short in transfer is refused."""
        good = make_archive(tmp_path, "2.0.0").read_bytes()
        archive = tmp_path / "cut.tar.gz"
        archive.write_bytes(good[: len(good) // 2])
        self._refuse(models, archive, UnsafeArchiveError, "not a readable|ends inside")

    def test_no_manifest_at_the_top(self, tmp_path: Path, models: Path) -> None:
        """An archive without a manifest where a bundle's belongs is refused."""
        archive = tmp_path / "e.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            add_bytes(tar, "a/x.txt", b"x")
            add_bytes(tar, "b/y.txt", b"y")
        self._refuse(models, archive, UnsafeArchiveError, "no manifest.json at the top")

    def test_member_count_limit(self, tmp_path: Path, models: Path) -> None:
        """More members than the limit: refused before unpacking."""
        archive = make_archive(tmp_path, "2.0.0")
        before = snapshot(models)
        with pytest.raises(UnsafeArchiveError, match="more than 3 members"):
            install_bundle(archive, models, limits=Limits(max_members=3))
        assert snapshot(models) == before

    def test_size_limit(self, tmp_path: Path, models: Path) -> None:
        """More bytes than the limit once unpacked: refused before unpacking."""
        archive = make_archive(tmp_path, "2.0.0")
        before = snapshot(models)
        with pytest.raises(UnsafeArchiveError, match="more than 100000 bytes"):
            install_bundle(archive, models, limits=Limits(max_bytes=100_000))
        assert snapshot(models) == before

    def test_missing_signature_when_required(
        self, tmp_path: Path, models: Path, keys: tuple[Path, Path]
    ) -> None:
        """require_signature and an unsigned archive: refused, nothing changes."""
        _, public = keys
        before = snapshot(models)
        with pytest.raises(SignatureError, match="missing"):
            install_bundle(
                make_archive(tmp_path, "2.0.0"), models, policy=SignaturePolicy(public, True)
            )
        assert snapshot(models) == before

    def test_signature_by_another_key(self, tmp_path: Path, models: Path) -> None:
        """A bundle signed by a key the device does not trust: refused, nothing changes."""
        other_private, _ = keygen(tmp_path / "other")
        _, trusted_public = keygen(tmp_path / "trusted")
        archive = make_archive(tmp_path, "2.0.0", sign_key=other_private)
        before = snapshot(models)
        with pytest.raises(SignatureError, match="does not verify"):
            install_bundle(archive, models, policy=SignaturePolicy(trusted_public, True))
        assert snapshot(models) == before

    def test_all_problems_are_listed_at_once(self, tmp_path: Path) -> None:
        """inspect() reports every bad member, not just the first."""

        def extra(tar: tarfile.TarFile) -> None:
            add_bytes(tar, "/abs", b"x")
            add_bytes(tar, "b/../up", b"x")
            info = tarfile.TarInfo("b/fifo")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)

        archive = evil_archive(tmp_path / "e.tar.gz", make_bundle(tmp_path, "2.0.0"), extra)
        with pytest.raises(UnsafeArchiveError) as caught:
            inspect(archive)
        assert len(caught.value.problems) == 3

    def test_unpack_writes_nothing_when_inspection_fails(self, tmp_path: Path) -> None:
        """Good members before a bad one are not written either."""
        archive = evil_archive(
            tmp_path / "e.tar.gz",
            make_bundle(tmp_path, "2.0.0"),
            lambda t: add_bytes(t, "b/../x", b"x"),
        )
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(UnsafeArchiveError):
            unpack(archive, dest)
        assert list(dest.iterdir()) == []

    def test_folder_with_a_symlink_is_refused(self, tmp_path: Path, models: Path) -> None:
        """Installing from a folder refuses symlinks in it (no reading through them)."""
        folder = make_bundle(tmp_path, "2.0.0")
        (folder / "passwd").symlink_to("/etc/passwd")
        self._refuse(models, folder, UnsafeArchiveError, "not a regular file")


# ------------------------------------------------------------------------- rollback and prune


class TestRollbackAndPrune:
    def test_rollback_walks_back_the_activation_chain(self, tmp_path: Path, models: Path) -> None:
        """v1, v2, v3 installed: rollback gives v2, then v1, then refuses."""
        install_bundle(make_archive(tmp_path, "2.0.0"), models)
        install_bundle(make_archive(tmp_path, "3.0.0"), models)
        assert rollback(models) == ("3.0.0", "2.0.0")
        assert rollback(models) == ("2.0.0", "1.0.0")
        before = snapshot(models)
        with pytest.raises(RollbackError, match="no previous version"):
            rollback(models)
        assert snapshot(models) == before

    def test_rollback_to_a_named_version_and_back(self, tmp_path: Path, models: Path) -> None:
        """--to VERSION activates it; a plain rollback then returns to where it was."""
        install_bundle(make_archive(tmp_path, "2.0.0"), models)
        install_bundle(make_archive(tmp_path, "3.0.0"), models)
        assert rollback(models, to="1.0.0") == ("3.0.0", "1.0.0")
        assert rollback_target(models) == "3.0.0"
        assert rollback(models) == ("1.0.0", "3.0.0")

    def test_rollback_to_a_missing_version_is_refused(self, models: Path) -> None:
        """--to an uninstalled version lists what is installed."""
        with pytest.raises(RollbackError, match=r"not installed .*installed: 1\.0\.0"):
            rollback(models, to="9.9.9")

    def test_three_versions_are_kept_by_default(self, tmp_path: Path, models: Path) -> None:
        """After five installs only the three most recent remain."""
        for version in ("2.0.0", "3.0.0", "4.0.0"):
            install_bundle(make_archive(tmp_path, version), models)
        result = install_bundle(make_archive(tmp_path, "5.0.0"), models)
        assert result.pruned == ("2.0.0",)
        assert sorted(p.name for p in (models / VERSIONS).iterdir()) == [
            "3.0.0",
            "4.0.0",
            "5.0.0",
        ]

    def test_the_rollback_target_is_never_pruned(self, tmp_path: Path, models: Path) -> None:
        """With keep=1 the previous version still stays, so rollback always works."""
        install_bundle(make_archive(tmp_path, "2.0.0"), models, keep=1)
        assert sorted(p.name for p in (models / VERSIONS).iterdir()) == ["1.0.0", "2.0.0"]
        install_bundle(make_archive(tmp_path, "3.0.0"), models, keep=1)
        assert sorted(p.name for p in (models / VERSIONS).iterdir()) == ["2.0.0", "3.0.0"]
        assert rollback(models) == ("3.0.0", "2.0.0")

    def test_prune_after_rollback_keeps_current_and_its_previous(
        self, tmp_path: Path, models: Path
    ) -> None:
        """Rolled back to v2 of v1..v3: prune(keep=1) keeps v2 (current) and v1 (its previous)."""
        install_bundle(make_archive(tmp_path, "2.0.0"), models)
        install_bundle(make_archive(tmp_path, "3.0.0"), models)
        rollback(models)
        assert prune(models, keep=1) == ("3.0.0",)
        assert list_versions(models).current == "2.0.0"
        assert list_versions(models).previous == "1.0.0"

    def test_list_marks_current_and_previous(self, tmp_path: Path, models: Path) -> None:
        """list_versions: newest activation first, current and rollback target flagged."""
        install_bundle(make_archive(tmp_path, "2.0.0"), models)
        state = list_versions(models)
        assert [v.version for v in state.versions] == ["2.0.0", "1.0.0"]
        assert state.versions[0].current and state.versions[1].previous
        assert state.versions[0].name == "infarctwatch-test"

    def test_leftovers_of_an_interrupted_install_are_cleaned(
        self, tmp_path: Path, models: Path
    ) -> None:
        """A .staging- folder from a crash disappears with the next successful install."""
        (models / ".staging-crashed").mkdir()
        (models / ".staging-crashed" / "model.bin").write_bytes(b"x")
        install_bundle(make_archive(tmp_path, "2.0.0"), models)
        assert not (models / ".staging-crashed").exists()


# ---------------------------------------------------------------------------------------- CLI


class TestCli:
    def test_keygen_pack_verify_install_list_rollback(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The documented workflow, command by command, with exit codes and key output."""
        monkeypatch.chdir(tmp_path)
        models = tmp_path / "models"
        assert main(["keygen", "release"]) == 0
        for version in ("1.0.0", "2.0.0"):
            folder = make_bundle(tmp_path, version)
            assert main(["pack", str(folder), "--sign", "release.key"]) == 0
            archive = f"infarctwatch-test-{version}.tar.gz"
            policy = ["--public-key", "release.pub", "--require-signature", "--no-config"]
            assert main(["verify", archive, *policy]) == 0
            assert main(["install", archive, "--models-dir", str(models), *policy]) == 0
        out = capsys.readouterr().out
        assert "signature valid" in out and "installed and activated" in out
        assert main(["list", "--models-dir", str(models), "--no-config"]) == 0
        listing = capsys.readouterr().out
        assert "* 2.0.0" in listing and "< 1.0.0" in listing
        assert main(["rollback", "--models-dir", str(models), "--no-config"]) == 0
        assert "current -> versions/1.0.0 (was 2.0.0)" in capsys.readouterr().out
        assert main(["list", "--models-dir", str(models), "--json", "--no-config"]) == 0
        assert json.loads(capsys.readouterr().out)["current"] == "1.0.0"

    def test_refusal_exits_1_with_the_reason_on_stderr(
        self, tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refused install prints why and exits 1."""
        archive = evil_archive(
            tmp_path / "e.tar.gz",
            make_bundle(tmp_path, "2.0.0"),
            lambda t: add_bytes(t, "b/../evil", b"x"),
        )
        code = main(["install", str(archive), "--models-dir", str(models), "--no-config"])
        assert code == 1
        assert "refusing to unpack" in capsys.readouterr().err

    def test_config_supplies_models_dir_and_signature_policy(
        self, tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--config: model.path is the models folder and require_signature is enforced."""
        _, public = keys
        config = tmp_path / "daemon.yaml"
        models = tmp_path / "models"
        config.write_text(
            f"model:\n  path: {models}\n  public_key: {public}\n  require_signature: true\n"
        )
        archive = make_archive(tmp_path, "1.0.0")
        assert main(["install", str(archive), "--config", str(config)]) == 1
        assert "manifest.sig is missing" in capsys.readouterr().err
        assert not models.exists()

    def test_a_malformed_config_is_refused(self, tmp_path: Path) -> None:
        """require_signature: true without a key is a configuration error, not a weaker policy."""
        config = tmp_path / "daemon.yaml"
        config.write_text("model:\n  require_signature: true\n")
        with pytest.raises(DeployConfigError, match=r"needs 'model\.public_key'"):
            read_policy(config)

    def test_usage_errors_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Missing models folder or unknown options: exit code 2."""
        assert main(["list", "--no-config"]) == 2
        assert "--models-dir is required" in capsys.readouterr().err
        assert main(["frobnicate"]) == 2

    def test_dispatcher_routes_deploy(self, tmp_path: Path) -> None:
        """`infarctwatch deploy ...` reaches this CLI through daemon.cli."""
        assert infarctwatch(["deploy", "keygen", str(tmp_path / "k")]) == 0
        assert (tmp_path / "k.key").exists()


def test_deploy_imports_neither_tensorflow_nor_openvino() -> None:
    """Every deploy module imports in a fresh interpreter without TensorFlow, Keras or OpenVINO."""
    modules = sorted(m.name for m in pkgutil.walk_packages(deploy.__path__, "deploy."))
    assert "deploy.install" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = {m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'openvino'}\n"
        "print(','.join(sorted(bad)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
