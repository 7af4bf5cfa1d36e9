"""The gateway host's config.toml from typed options (module_utils/_edge_config.py): every provisioning variant
builds a document the schema accepts, options of another variant are refused by name, the TOML writer round-trips
whatever it is given, secrets are masked also as TOML escapes them, and a host name, parent or agent change asks
for IoT Edge to be stopped first."""

from __future__ import annotations

import base64
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config import (
    UPSTREAM_AGENT_IMAGE,
    build_config,
    config_secrets,
    edge_stop_reasons,
    mask_text,
    render_toml,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config_schema import validate
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError

KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
CS = f"HostName=plant.azure-devices.net;DeviceId=gw;SharedAccessKey={KEY}"
VARIANTS = {
    "manual": dict(connection_string=CS),
    "manual_x509": dict(iothub_hostname="plant.azure-devices.net", device_id="gw", identity_cert="/c.pem",
                        identity_pk="/k.pem"),
    "dps_symmetric_key": dict(dps_id_scope="0ne00000001", dps_registration_id="gw", dps_symmetric_key=KEY),
    "dps_x509": dict(dps_id_scope="0ne00000001", identity_cert="/c.pem", identity_pk="/k.pem"),
    "dps_tpm": dict(dps_id_scope="0ne00000001", dps_registration_id="gw"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_builds_a_document_the_schema_accepts(variant):
    doc = build_config(dict(provisioning=variant, hostname="gw.plant.example", **VARIANTS[variant]))
    assert validate(doc) == ([], [])
    assert tomllib.loads(render_toml(doc)) == doc


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_names_what_it_misses(variant):
    with pytest.raises(InputError, match=f"provisioning={variant} needs"):
        build_config(dict(provisioning=variant))


def test_an_option_of_another_variant_is_refused_by_name():
    with pytest.raises(InputError, match="dps_id_scope: not used by provisioning=manual"):
        build_config(dict(provisioning="manual", connection_string=CS, dps_id_scope="0ne"))


def test_a_hub_connection_string_is_refused():
    with pytest.raises(InputError, match="hub \\(policy\\) connection string"):
        build_config(dict(provisioning="manual",
                          connection_string=f"HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"))


def test_a_lower_layer_pulls_its_agent_through_the_parent():
    doc = build_config(dict(provisioning="manual", connection_string=CS, hostname="low", parent_hostname="mid"))
    assert doc["parent_hostname"] == "mid" and doc["agent"]["config"]["image"] == UPSTREAM_AGENT_IMAGE
    assert validate(doc) == ([], [])


def test_edge_ca_needs_both_halves_and_absolute_paths():
    with pytest.raises(InputError, match="give both"):
        build_config(dict(provisioning="manual", connection_string=CS, edge_ca_cert="/c.pem"))
    with pytest.raises(InputError, match="absolute path"):
        build_config(dict(provisioning="manual", connection_string=CS, trust_bundle_cert="root.pem"))


def test_secrets_are_masked_also_as_toml_escapes_them():
    password = 'pa"ss\\word'
    doc = build_config(dict(provisioning="manual", connection_string=CS,
                            agent_auth={"serveraddress": "r.example", "username": "u", "password": password}))
    text = render_toml(doc)
    secrets = config_secrets(doc)
    assert CS in secrets and password in secrets
    masked = mask_text(text, secrets)
    assert KEY not in masked and "pa" + '\\"' + "ss" not in masked and "ss\\\\word" not in masked
    assert "serveraddress" in masked


def test_file_locations_are_not_secrets():
    doc = build_config(dict(provisioning="manual_x509", **VARIANTS["manual_x509"]))
    assert config_secrets(doc) == []


def test_edge_stop_reasons():
    old = build_config(dict(provisioning="manual", connection_string=CS, hostname="a"))
    assert edge_stop_reasons(old, old) == []
    assert edge_stop_reasons(old, {**old, "hostname": "b"}) == ["hostname"]
    new = build_config(dict(provisioning="manual", connection_string=CS, hostname="a", parent_hostname="p"))
    assert edge_stop_reasons(old, new) == ["local_gateway_hostname", "agent"]  # the agent moves to $upstream
    assert edge_stop_reasons(old, {**old, "trust_bundle_cert": "file:///x"}) == []
    assert edge_stop_reasons(None, old) == ["hostname", "local_gateway_hostname", "agent"]


_keys = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
_scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(_scalars, max_size=3),
                                                         st.dictionaries(_keys, inner, max_size=3)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_render_round_trips_any_document(doc):
    assert tomllib.loads(render_toml(doc)) == doc


def test_file_secrets_reads_the_config_and_falls_back_on_text(tmp_path):
    from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config import file_secrets
    good = tmp_path / "config.toml"
    good.write_text(render_toml(build_config(dict(provisioning="manual", connection_string=CS))))
    assert file_secrets(str(good)) == [CS]
    broken = tmp_path / "broken.toml"
    broken.write_text(f'connection_string = "{CS}\n[provisioning.attestation.symmetric_key]\nvalue = "{KEY}"\n')
    assert KEY in file_secrets(str(broken))
    assert file_secrets(str(tmp_path / "missing.toml")) == []


def test_a_trailing_newline_is_neither_a_bare_key_nor_a_host_name():
    # Python's `$` matches before a final newline: found by the round-trip property above.
    assert tomllib.loads(render_toml({"0\n": {"a\n": 1}})) == {"0\n": {"a\n": 1}}
    with pytest.raises(InputError, match="is not a host name"):
        build_config(dict(provisioning="manual", connection_string=CS, hostname="gw\n"))
