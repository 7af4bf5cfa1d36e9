"""The config.toml schema (module_utils/_edge_config_schema.py, written from aziotctl's and iotedge's
super_config.rs) judged by files nobody here wrote: every super-config.toml that the iotedge CLI's own
`config apply` tests feed the product, and Microsoft's iotedge_config_cli templates (../shared/corpus). All must
pass, so the schema is not stricter than the product; deliberately broken variants of them must fail, so it is
not looser."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config import check_config, render_toml
from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config_schema import validate
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
SUPER = sorted(CORPUS.glob("iotedge-config/*/super-config.toml"))
TEMPLATES = sorted(CORPUS.glob("iotedge-config-cli-templates/*/device_config.toml"))


def _load(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_the_corpus_is_there():
    assert len(SUPER) >= 20 and len(TEMPLATES) == 3, "the corpus is missing: ../shared/corpus"


@pytest.mark.parametrize("path", SUPER, ids=lambda p: p.parent.name)
def test_every_config_the_product_accepts_passes(path):
    errors, unknown = validate(_load(path))
    assert errors == [] and unknown == []
    check_config(_load(path))  # the role's stricter check too: no unknown or pre-1.2 key in any of them


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.parent.name)
def test_the_cli_templates_pass_with_their_stray_key_reported(path):
    # The iotedge_config_cli templates carry provisioning.authentication.trust_bundle_cert, a key the product
    # ignores (shared/reference/iot-api-2.md 5.3, quirk c): not an error, but unknown, which the role refuses.
    errors, unknown = validate(_load(path))
    assert errors == []
    assert unknown == ["provisioning.authentication.trust_bundle_cert"]


@pytest.mark.parametrize("path", SUPER, ids=lambda p: p.parent.name)
def test_render_round_trips_every_corpus_file(path):
    doc = _load(path)
    assert tomllib.loads(render_toml(doc)) == doc


def _set(doc, dotted, value):
    *head, last = dotted.split(".")
    node = doc
    for k in head:
        node = node[k]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()
BROKEN = [
    ("manual-connection-string", "provisioning", DELETE, "missing field `provisioning`"),
    ("manual-connection-string", "provisioning.source", "manually", "unknown variant 'manually'"),
    ("manual-connection-string", "provisioning.source", DELETE, "missing field `source`"),
    ("manual-connection-string", "provisioning", {"source": "manual", "connection_string": 42},
     "did not match any variant"),
    ("manual-connection-string", "provisioning.authentication.device_id_pk", {"value": "YWJj", "uri": 1}, ""),
    ("dps-symmetric-key", "provisioning.attestation.method", "sas", "unknown variant 'sas'"),
    ("dps-symmetric-key", "provisioning.attestation.symmetric_key.value", "not*base64", "base64"),
    ("dps-symmetric-key", "provisioning.attestation.registration_id", DELETE, "missing field `registration_id`"),
    ("dps-symmetric-key", "provisioning.global_endpoint", "global.azure-devices-provisioning.net", "is not a URL"),
    ("dps-tpm", "provisioning.attestation.registration_id", DELETE, "missing field `registration_id`"),
    ("manual-x509", "provisioning.authentication.identity_pk", DELETE, "missing field `identity_pk`"),
    ("manual-x509", "provisioning.authentication.identity_pk", "https://example.org/key", "file:// or pkcs11:"),
    ("ca-certs", "edge_ca.pk", DELETE, "did not match any variant"),
    ("ca-certs", "trust_bundle_cert", "/var/secrets/trusted-ca.pem", "is not a URL"),
    ("nested-edge", "auto_reprovisioning_mode", "Sometimes", "is not one of"),
    ("nested-edge", "prefer_module_identity_cache", "no", "expected true or false"),
    ("nested-edge", "agent.config", DELETE, "missing field `config`"),
    ("nested-edge", "agent.imagePullPolicy", "always", "is not one of"),
    ("nested-edge", "moby_runtime.uri", DELETE, "missing field `uri`"),
    ("nested-edge", "iotedge_max_requests.management", -1, "non-negative integer"),
]


@pytest.mark.parametrize("name, key, value, message", BROKEN, ids=[f"{b[0]}:{b[1]}" for b in BROKEN])
def test_broken_variants_fail(name, key, value, message):
    doc = copy.deepcopy(_load(CORPUS / "iotedge-config" / name / "super-config.toml"))
    _set(doc, key, value)
    errors, _unknown = validate(doc)
    if not message:  # serde's untagged enum takes the first variant that fits and ignores the rest
        assert errors == [] and _unknown == ["provisioning.authentication.device_id_pk.uri"]
        return
    assert any(message in e for e in errors), errors
    with pytest.raises(InputError):
        check_config(doc)


def test_pre_12_and_unknown_keys_are_refused_by_the_role_check():
    doc = _load(CORPUS / "iotedge-config" / "nested-edge" / "super-config.toml")
    doc["certificates"] = {"device_ca_cert": "/x"}
    with pytest.raises(InputError, match=r"pre-1.2 .*certificates \(use \[edge_ca\]"):
        check_config(doc)
    doc = _load(CORPUS / "iotedge-config" / "nested-edge" / "super-config.toml")
    doc["provisioning"]["device_connection_string"] = "HostName=x"
    with pytest.raises(InputError, match="provisioning.device_connection_string"):
        check_config(doc)
    doc = _load(CORPUS / "iotedge-config" / "nested-edge" / "super-config.toml")
    doc["parent_hostnme"] = "gw"
    assert validate(doc) == ([], ["parent_hostnme"])  # the product would ignore it: a silent misconfiguration
    with pytest.raises(InputError, match="unknown keys parent_hostnme"):
        check_config(doc)
