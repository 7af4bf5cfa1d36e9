"""The pure plan function: desired + current -> create / update (exact fields) / delete / none."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import REDACTED
from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import plan_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import desired_view, plan_device, view_of

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
K3 = base64.b64encode(b"3" * 32).decode()
GW_SCOPE = "ms-azure-iot-edge://gw-637121074930370650"
OTHER_SCOPE = "ms-azure-iot-edge://gw2-637121074930370651"


def device(**over):
    base = {
        "deviceId": "dev", "generationId": "637121074930370650", "etag": "MTA=", "connectionState": "Disconnected",
        "status": "enabled", "statusReason": None, "connectionStateUpdatedTime": "0001-01-01T00:00:00Z",
        "statusUpdatedTime": "0001-01-01T00:00:00Z", "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": {"symmetricKey": {"primaryKey": K1, "secondaryKey": K2},
                           "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None}, "type": "sas"},
        "capabilities": {"iotEdge": False}, "parentScopes": [],
    }
    base.update(over)
    return base


def spec(**kw):
    return DeviceSpec(device_id="dev", **kw)


def test_create_minimal_lets_the_hub_generate_keys():
    p = plan_device(spec(), None)
    assert p.action == "create"
    assert p.body == {"deviceId": "dev", "status": "enabled", "authentication": {"type": "sas", "symmetricKey": {}},
                      "capabilities": {"iotEdge": False}, "parentScopes": [], }
    assert p.etag is None


def test_create_leaf_with_parent_sets_device_scope():
    p = plan_device(spec(primary_key=K1, secondary_key=K2, status_reason="new"), None, GW_SCOPE)
    assert p.body["deviceScope"] == GW_SCOPE and p.body["statusReason"] == "new"
    assert p.body["authentication"]["symmetricKey"] == {"primaryKey": K1, "secondaryKey": K2}


def test_create_edge_child_sets_parent_scopes_not_device_scope():
    p = plan_device(spec(edge_enabled=True), None, GW_SCOPE)
    assert p.body["parentScopes"] == [GW_SCOPE] and "deviceScope" not in p.body


def test_no_options_means_no_change():
    p = plan_device(spec(), device(deviceScope=GW_SCOPE, parentScopes=[GW_SCOPE], statusReason="kept"))
    assert p.action == "none" and not p.changed and p.body is None


def test_update_status_keeps_keys_parent_and_reason():
    current = device(deviceScope=GW_SCOPE, parentScopes=[GW_SCOPE], statusReason="kept")
    p = plan_device(spec(status="disabled"), current)
    assert p.action == "update" and list(p.changes) == ["status"]
    assert p.etag == "MTA="
    assert p.body["authentication"]["symmetricKey"] == {"primaryKey": K1, "secondaryKey": K2}
    assert p.body["deviceScope"] == GW_SCOPE and p.body["statusReason"] == "kept"
    assert p.body["generationId"] == current["generationId"]  # read-only fields are echoed, the hub ignores them


def test_update_of_edge_device_echoes_its_scope():
    current = device(capabilities={"iotEdge": True}, deviceScope=GW_SCOPE, parentScopes=[OTHER_SCOPE])
    p = plan_device(spec(status="disabled"), current)
    assert p.body["deviceScope"] == GW_SCOPE and p.body["parentScopes"] == [OTHER_SCOPE]


def test_parent_empty_detaches_and_none_keeps():
    current = device(deviceScope=GW_SCOPE, parentScopes=[GW_SCOPE])
    assert plan_device(spec(), current, None).action == "none"
    p = plan_device(spec(), current, "")
    assert list(p.changes) == ["parent_scope"] and p.body["deviceScope"] == "" and p.body["parentScopes"] == []


def test_move_edge_child_between_parents():
    current = device(capabilities={"iotEdge": True}, deviceScope="ms-azure-iot-edge://dev-1", parentScopes=[GW_SCOPE])
    p = plan_device(spec(), current, OTHER_SCOPE)
    assert p.changes == {"parent_scope": (GW_SCOPE, OTHER_SCOPE)}
    assert p.body["parentScopes"] == [OTHER_SCOPE] and p.body["deviceScope"] == "ms-azure-iot-edge://dev-1"


def test_leaf_to_edge_moves_parent_to_parent_scopes():
    current = device(deviceScope=GW_SCOPE, parentScopes=[GW_SCOPE])
    p = plan_device(spec(edge_enabled=True), current)
    assert p.body["parentScopes"] == [GW_SCOPE] and p.body["deviceScope"] is None


def test_explicit_keys_compared_and_changed():
    p = plan_device(spec(primary_key=K3), device())
    assert list(p.changes) == ["primary_key"]
    assert p.body["authentication"]["symmetricKey"] == {"primaryKey": K3, "secondaryKey": K2}


def test_switch_to_self_signed_and_thumbprint_case():
    p = plan_device(spec(primary_thumbprint="ab" * 20), device())
    assert p.body["authentication"] == {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "AB" * 20,
                                                                                 "secondaryThumbprint": None}}
    current = device(authentication={"type": "selfSigned", "symmetricKey": {"primaryKey": None, "secondaryKey": None},
                                     "x509Thumbprint": {"primaryThumbprint": "ab" * 20, "secondaryThumbprint": None}})
    assert plan_device(spec(primary_thumbprint="AB" * 20), current).action == "none"
    assert plan_device(spec(auth_type="self_signed"), current).action == "none"


def test_omitted_thumbprint_is_kept_like_an_omitted_key():
    """Certificate rotation: a new primary thumbprint must not clear the secondary (and vice versa)."""
    current = device(authentication={"type": "selfSigned", "symmetricKey": {"primaryKey": None, "secondaryKey": None},
                                     "x509Thumbprint": {"primaryThumbprint": "AA" * 20, "secondaryThumbprint": "BB" * 20}})
    p = plan_device(spec(primary_thumbprint="CC" * 20), current)
    assert list(p.changes) == ["primary_thumbprint"]
    assert p.body["authentication"]["x509Thumbprint"] == {"primaryThumbprint": "CC" * 20, "secondaryThumbprint": "BB" * 20}
    p = plan_device(spec(secondary_thumbprint="dd" * 20), current)
    assert list(p.changes) == ["secondary_thumbprint"]
    assert p.body["authentication"]["x509Thumbprint"] == {"primaryThumbprint": "AA" * 20, "secondaryThumbprint": "DD" * 20}
    with pytest.raises(PlanError, match="primary_thumbprint"):
        plan_device(spec(secondary_thumbprint="dd" * 20), None)  # a new device needs its primary


def test_self_signed_needs_a_thumbprint():
    with pytest.raises(PlanError, match="primary_thumbprint"):
        plan_device(spec(auth_type="self_signed"), device())


def test_back_to_sas_generates_new_keys():
    current = device(authentication={"type": "certificateAuthority", "symmetricKey": {"primaryKey": None, "secondaryKey": None},
                                     "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None}})
    p = plan_device(spec(auth_type="sas"), current)
    assert p.body["authentication"] == {"type": "sas", "symmetricKey": {}}


def test_absent():
    assert plan_device(spec(state="absent"), None).action == "none"
    p = plan_device(spec(state="absent"), device())
    assert p.action == "delete" and p.etag == "MTA=" and p.after is None


def test_status_reason_empty_string_clears():
    p = plan_device(spec(status_reason=""), device(statusReason="old"))
    assert p.changes == {"status_reason": ("old", None)} and p.body["statusReason"] is None


def test_diff_redacts_keys_and_names_the_parent():
    p = plan_device(spec(primary_key=K3), device(deviceScope=GW_SCOPE, parentScopes=[GW_SCOPE]))
    d = plan_diff(p, "iothub device dev")
    assert d["before"]["primary_key"] == REDACTED and d["after"]["primary_key"] == REDACTED + " (changed)"
    assert d["after"]["secondary_key"] == REDACTED
    assert d["before"]["parent"] == "gw"
    assert K1 not in str(d) and K2 not in str(d) and K3 not in str(d)


# ----------------------------------------------------------------------------- properties
keys = st.sampled_from([None, K1, K2, K3])
thumbs = st.sampled_from(["a" * 40, "B" * 64, "c" * 40])
auths = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"auth_type": st.sampled_from([None, "sas"]), "primary_key": keys, "secondary_key": keys}),
    st.fixed_dictionaries({"auth_type": st.sampled_from([None, "self_signed"]), "primary_thumbprint": thumbs,
                           "secondary_thumbprint": st.one_of(st.none(), thumbs)}),
    st.fixed_dictionaries({"secondary_thumbprint": thumbs}),
    st.fixed_dictionaries({"auth_type": st.sampled_from(["certificate_authority", "none"])}),
)
specs = st.builds(
    lambda auth, rest: {**auth, **rest},
    auths,
    st.fixed_dictionaries({
        "status": st.sampled_from([None, "enabled", "disabled"]),
        "status_reason": st.sampled_from([None, "", "maintenance", "x" * 128]),
        "edge_enabled": st.sampled_from([None, True, False]),
        "parent": st.sampled_from([None, "", "gw", "gw2"]),
    }),
)


def _valid(d):
    return DeviceSpec(device_id="dev", **d)


@given(st.one_of(st.none(), specs), specs)
@settings(max_examples=300, deadline=None)
def test_property_applying_the_plan_converges(initial, desired):
    """Applied by the emulator's registry (an independent model of the service): the result is what the
    options asked for, nothing else changed, and planning again yields nothing."""
    registry_mod = pytest.importorskip("iot_emulator.registry")
    reg = registry_mod.Registry()
    scopes = {"": ""}
    for gw, parent in (("gw", None), ("gw2", "gw")):
        body = {"deviceId": gw, "capabilities": {"iotEdge": True}}
        if parent:
            body["parentScopes"] = [scopes[parent]]
        scopes[gw] = reg.put(gw, body, None)["deviceScope"]

    def apply(plan):
        if plan.action == "create":
            return reg.put("dev", plan.body, None)
        if plan.action == "update":
            return reg.put("dev", plan.body, f'"{plan.etag}"')
        if plan.action == "delete":
            reg.delete("dev", f'"{plan.etag}"')
            return None
        return reg.get("dev") if "dev" in reg.devices else None

    def plan_for(s):
        current = reg.get("dev") if "dev" in reg.devices else None
        try:
            return current, plan_device(s, current, scopes.get(s.parent) if s.parent is not None else None)
        except PlanError:
            return current, None

    if initial is not None:
        _current, p0 = plan_for(_valid(initial))
        assume(p0 is not None)
        apply(p0)
    s1 = _valid(desired)
    current, p1 = plan_for(s1)
    assume(p1 is not None)  # only auth_type=self_signed without any thumbprint cannot be planned
    result = apply(p1)
    before = view_of(current)
    wanted = desired_view(s1, before, scopes.get(s1.parent) if s1.parent is not None else None)
    got = view_of(result)
    for field, value in wanted.items():
        if field in ("primary_key", "secondary_key") and value is None and got["auth_type"] == "sas":
            assert got[field]  # generated by the hub
            if before and before["auth_type"] == "sas" and s1.wanted_auth_type in (None, "sas"):
                assert got[field] == before[field]  # never regenerated by accident
            continue
        if field.endswith("thumbprint") and value is not None:
            assert got[field].upper() == value.upper()
            continue
        assert got[field] == value, field
    _current, again = plan_for(s1)
    assert again.action == "none", again.changes


@given(specs)
@settings(max_examples=200, deadline=None)
def test_property_planning_on_the_desired_state_is_a_no_op(d):
    s = _valid(d)
    current = device(deviceScope=GW_SCOPE, parentScopes=[GW_SCOPE])
    try:
        p = plan_device(s, current, None)
    except PlanError:
        return
    if p.action == "update":
        p2 = plan_device(s, {**p.body, "authentication": _fill_keys(p.body["authentication"])}, None)
        assert p2.action == "none", p2.changes


def _fill_keys(auth):
    out = dict(auth)
    if auth["type"] == "sas":
        out["symmetricKey"] = {"primaryKey": auth["symmetricKey"].get("primaryKey") or K1,
                               "secondaryKey": auth["symmetricKey"].get("secondaryKey") or K2}
    return out
