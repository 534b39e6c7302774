"""The model inbox: a real daemon installs archives dropped into model.inbox, or files them away.

Archives are made with deploy's own packer from the committed bundle (`versioned_bundle`), signed
with a key made for the test; the daemon requires signatures, as a device set up with
``device-install --public-key`` does.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import TYPE_CHECKING

from daemon_support import (
    drop,
    make_config,
    reports,
    running,
    small_png,
    versioned_bundle,
    wait_for,
    write_slowly,
)

from daemon.clock import utc_now
from daemon.service.status import describe, read_status
from deploy.install import current_version, install_bundle
from deploy.pack import pack_bundle
from deploy.signing import SignaturePolicy, keygen

if TYPE_CHECKING:
    from pathlib import Path

V1, V2, V3, V4 = "1.0.0-inbox", "2.0.0-inbox", "3.0.0-inbox", "4.0.0-inbox"


def archive(tmp_path: Path, version: str, key: Path | None) -> bytes:
    """The bytes of a packed bundle archive of ``version``, signed with ``key`` if given."""
    folder = versioned_bundle(tmp_path / f"src-{version}", version)
    return pack_bundle(folder, tmp_path / f"{version}.tar.gz", sign_key=key).path.read_bytes()


def tampered(data: bytes) -> bytes:
    """The archive with labels.json changed after signing (manifest and signature kept)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for member in src.getmembers():
            content = src.extractfile(member) if member.isfile() else None
            payload = content.read() if content is not None else b""
            if member.name.endswith("labels.json"):
                payload = b'["tampered"]'
                member.size = len(payload)
            dst.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return out.getvalue()


def note(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def signed_device(tmp_path: Path, **model: object):
    """A models folder holding a signed V1, and a config that requires signatures."""
    private, public = keygen(tmp_path / "release")
    models = tmp_path / "models"
    v1 = pack_bundle(
        versioned_bundle(tmp_path / "src-v1", V1), tmp_path / "v1.tgz", sign_key=private
    )
    install_bundle(v1.path, models, policy=SignaturePolicy(public, True))
    inbox = tmp_path / "inbox"
    config = make_config(
        tmp_path,
        model={
            "path": str(models),
            "inbox": str(inbox),
            "public_key": str(public),
            "require_signature": True,
            **model,
        },
    )
    return config, private, models, inbox


def serving(service) -> str:
    return service.service.reloader._holder.current.info.version


def scan_version(config, name: str, seed: int) -> str:
    drop(config.incoming, name, small_png(seed))
    wait_for(lambda: name in reports(config.reports), what=f"the report of {name}")
    return reports(config.reports)[name]["model"]["version"]


class TestInbox:
    def test_signed_archives_are_installed_and_served(self, tmp_path) -> None:
        """One left in .processing/ by a crash is installed at start; one copied in slowly later.

        Each lands in installed/ with a note, becomes current, and the next report names it.
        """
        config, private, models, inbox = signed_device(tmp_path)
        (inbox / ".processing").mkdir(parents=True)
        (inbox / ".processing" / "v2.tar.gz").write_bytes(archive(tmp_path, V2, private))
        v3 = archive(tmp_path, V3, private)
        with running(config) as service:
            reloader = service.service.reloader
            wait_for(lambda: reloader.snapshot().reloads == 1, what="v2 from .processing/")
            assert current_version(models) == V2
            assert scan_version(config, "a.png", 1) == V2
            write_slowly(inbox / "v3.tar.gz", v3)
            wait_for(lambda: reloader.snapshot().reloads == 2, what="v3 from the inbox")
            assert scan_version(config, "b.png", 2) == V3
            wait_for(lambda: read_status(config.status_path)["model"]["version"] == V3)
            status = read_status(config.status_path)
        assert sorted(p.name for p in (inbox / "installed").iterdir()) == [
            "v2.tar.gz",
            "v2.tar.gz.json",
            "v3.tar.gz",
            "v3.tar.gz.json",
        ]
        assert list((inbox / ".processing").iterdir()) == []
        written = note(inbox / "installed", "v3.tar.gz")
        assert written["outcome"] == "installed"
        assert written["bundle"]["version"] == V3
        assert written["install"]["previous"] == V2
        assert written["install"]["signature"].startswith("signature valid")
        assert "current -> versions/3.0.0-inbox" in written["reason"]
        assert status["inbox"]["last"]["version"] == V3
        assert status["model"]["version"] == V3
        assert status["model"]["reload_error"] is None

    def test_refused_archives_go_to_rejected_with_the_reason(self, tmp_path) -> None:
        """Tampered, unsigned and non-archive files are filed in rejected/ beside a note saying
        why; nothing changes in the models folder. A file still named .part is not touched until
        it is renamed, then installed."""
        config, private, models, inbox = signed_device(tmp_path)
        inbox.mkdir()
        (inbox / "v4.tar.gz.part").write_bytes(archive(tmp_path, V4, private))
        with running(config) as service:
            drop(inbox, "tampered.tar.gz", tampered(archive(tmp_path, V2, private)))
            drop(inbox, "unsigned.tar.gz", archive(tmp_path, V3, None))
            drop(inbox, "notes.txt", b"please install the new model")
            wait_for(
                lambda: len(list((inbox / "rejected").glob("*.json"))) == 3,
                what="three rejections",
            )
            assert current_version(models) == V1
            assert serving(service) == V1
            assert (inbox / "v4.tar.gz.part").exists()
            (inbox / "v4.tar.gz.part").rename(inbox / "v4.tar.gz")
            wait_for(lambda: serving(service) == V4, what="v4 in service")
            wait_for(lambda: read_status(config.status_path)["inbox"]["installed"] == 1)
            status = read_status(config.status_path)
        rejected = inbox / "rejected"
        assert "labels.json: sha256" in note(rejected, "tampered.tar.gz")["reason"]
        assert note(rejected, "tampered.tar.gz")["error"] == "VerificationError"
        assert "manifest.sig is missing" in note(rejected, "unsigned.tar.gz")["reason"]
        assert "not a bundle archive" in note(rejected, "notes.txt")["reason"]
        assert (rejected / "notes.txt").read_bytes() == b"please install the new model"
        assert sorted(p.name for p in (models / "versions").iterdir()) == [V1, V4]
        assert status["inbox"]["rejected"] == 3
        text, _ = describe(status, config.status_path, utc_now())
        assert "3 rejected" in text

    def test_the_inbox_is_disabled_without_a_models_folder(self, tmp_path) -> None:
        """model.path naming a bundle folder: the inbox says why it is off and touches nothing."""
        bundle = versioned_bundle(tmp_path / "bundle", V1)
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        (inbox / "v2.tar.gz").write_bytes(archive(tmp_path, V2, None))
        config = make_config(tmp_path, model={"path": str(bundle), "inbox": str(inbox)})
        with running(config):
            wait_for(lambda: read_status(config.status_path) is not None, what="a status file")
            status = read_status(config.status_path)
        assert status["inbox"]["enabled"] is False
        assert "not a models folder" in status["inbox"]["disabled_reason"]
        assert sorted(p.name for p in inbox.iterdir()) == ["v2.tar.gz"]
        text, _ = describe(status, config.status_path, utc_now())
        assert "DISABLED" in text
