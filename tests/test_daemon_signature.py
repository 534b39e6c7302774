"""Signature checks belong to the runtime (`daemon.shared.signature`); deploy re-raises its own."""

from __future__ import annotations

import pytest
from daemon_support import versioned_bundle

from daemon import errors as runtime
from daemon.shared.signature import NO_POLICY, SignaturePolicy, check_signature, load_public_key
from deploy import errors as deploy_errors
from deploy import signing
from deploy.signing import keygen, sign_folder


@pytest.fixture
def signed(tmp_path):
    private, public = keygen(tmp_path / "release")
    folder = versioned_bundle(tmp_path / "bundle", "1.0.0-sig")
    sign_folder(folder, private)
    return folder, public


class TestRuntimeSignature:
    def test_a_valid_signature_names_the_key(self, signed) -> None:
        """A signature made by the configured key verifies and names the key id."""
        folder, public = signed
        outcome = check_signature(folder, SignaturePolicy(public, require_signature=True))
        assert outcome.startswith("signature valid (key ")

    def test_refusals_are_runtime_errors_not_deploy_errors(self, signed, tmp_path) -> None:
        """A changed manifest and a missing required signature raise daemon.errors classes."""
        folder, public = signed
        manifest = folder / "manifest.json"
        manifest.write_text(manifest.read_text().replace("1.0.0-sig", "6.6.6"))
        with pytest.raises(runtime.SignatureError, match="does not verify") as info:
            check_signature(folder, SignaturePolicy(public))
        assert not isinstance(info.value, deploy_errors.DeployError)
        (folder / "manifest.sig").unlink()
        with pytest.raises(runtime.SignatureError, match="missing"):
            check_signature(folder, SignaturePolicy(public, require_signature=True))
        assert check_signature(folder, NO_POLICY) == "unsigned"
        with pytest.raises(runtime.KeyFileError, match="not a PEM public key"):
            load_public_key(folder / "labels.json")

    def test_deploy_raises_its_own_classes_which_are_also_the_runtimes(self, signed) -> None:
        """Through deploy.signing the same refusals are DeployErrors (the CLI's exit code 1)."""
        folder, _public = signed
        (folder / "manifest.sig").unlink()
        policy = SignaturePolicy(folder / "labels.json", require_signature=True)
        with pytest.raises(deploy_errors.SignatureError) as info:
            signing.check_signature(folder, policy)
        assert isinstance(info.value, runtime.SignatureError)
        with pytest.raises(deploy_errors.KeyFileError) as key_info:
            signing.load_public_key(folder / "labels.json")
        assert isinstance(key_info.value, runtime.KeyFileError)
