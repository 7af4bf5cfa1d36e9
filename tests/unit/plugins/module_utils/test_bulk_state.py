"""The bulk reconciler's packed per-device state: planning against it is planning against what was read."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.reconcile import BulkReconciler, DIFF_KEPT
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.state import EXPORT_FIELDS, Known
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError, SpecError
from ansible_collections.fleet.azure_iot.plugins.module_utils._twin import kept_twin, plan_twin
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import plan_device

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
GW_SCOPE = "ms-azure-iot-edge://gw-637121074930370650"
OWN_SCOPE = "ms-azure-iot-edge://dev-637121074930370651"

AUTHS = [
    {"symmetricKey": {"primaryKey": K1, "secondaryKey": K2},
     "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None}, "type": "sas"},
    {"symmetricKey": {"primaryKey": None, "secondaryKey": None},  # a query twin or an export without keys
     "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None}, "type": "sas"},
    {"symmetricKey": {}, "type": "sas"},
    {"symmetricKey": {"primaryKey": None, "secondaryKey": None},
     "x509Thumbprint": {"primaryThumbprint": "A" * 40, "secondaryThumbprint": "b" * 40}, "type": "selfSigned"},
    {"symmetricKey": {"primaryKey": None, "secondaryKey": None},
     "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None}, "type": "certificateAuthority"},
    {"type": "none"},
]


@st.composite
def identities(draw):
    """Identities as a GET, an export line or a query twin shows them (extra fields included)."""
    edge = draw(st.booleans())
    if edge:
        scope, parents = OWN_SCOPE, draw(st.sampled_from([[], [GW_SCOPE]]))
    else:
        scope = draw(st.sampled_from([None, "", GW_SCOPE]))
        parents = [scope] if scope else []
    ident = {"deviceId": "dev", "etag": draw(st.sampled_from(["MTA=", "NDI="])),
             "status": draw(st.sampled_from(["enabled", "disabled"])),
             "statusReason": draw(st.sampled_from([None, "maintenance"])),
             "authentication": draw(st.sampled_from(AUTHS)), "capabilities": {"iotEdge": edge},
             "deviceScope": scope, "parentScopes": parents}
    if draw(st.booleans()):  # what a GET adds
        ident.update(generationId="637121074930370650", connectionState="Disconnected", cloudToDeviceMessageCount=0)
    return ident


specs = st.fixed_dictionaries({
    "status": st.sampled_from([None, "enabled", "disabled"]),
    "status_reason": st.sampled_from([None, "", "maintenance", "other"]),
    "edge_enabled": st.sampled_from([None, True, False]),
    "auth_type": st.sampled_from([None, "sas", "self_signed", "certificate_authority", "none"]),
    "primary_key": st.sampled_from([None, K1, K2]),
    "primary_thumbprint": st.sampled_from([None, "a" * 40, "C" * 40]),
    "parent": st.sampled_from([None, "", "gw"]),
})


@given(identities(), specs, st.booleans())
@settings(max_examples=400, deadline=None)
def test_property_a_plan_against_the_packed_identity_is_the_plan_against_the_read_one(ident, options, keys_known):
    try:
        spec = DeviceSpec(device_id="dev", **options)
    except SpecError:
        return
    parent_scope = {None: None, "": "", "gw": GW_SCOPE}[spec.parent]
    try:
        want = plan_device(spec, ident, parent_scope)
    except PlanError as exc:
        try:
            plan_device(spec, Known(ident, keys_known).identity, parent_scope)
        except PlanError as again:
            assert str(again) == str(exc)
            return
        raise AssertionError("the packed identity planned where the read one could not")
    got = plan_device(spec, Known(ident, keys_known).identity, parent_scope)
    assert (got.action, got.changes, got.etag, got.before, got.after) == \
        (want.action, want.changes, want.etag, want.before, want.after)
    if want.body is not None:  # what a bulk entry or an import line carries
        assert {k: got.body.get(k) for k in EXPORT_FIELDS} == {k: want.body.get(k) for k in EXPORT_FIELDS}


def test_packed_state_answers_what_the_reconciler_asks():
    edge = {"deviceId": "gw", "etag": "MQ==", "capabilities": {"iotEdge": True}, "deviceScope": OWN_SCOPE,
            "parentScopes": [GW_SCOPE]}
    leaf = {"deviceId": "s1", "etag": "Mg==", "capabilities": {"iotEdge": False}, "deviceScope": GW_SCOPE}
    known_edge, known_leaf, absent = Known(edge), Known(leaf), Known(None, True)
    assert (known_edge.exists, known_edge.edge, known_edge.edge_scope, known_edge.device_scope) == \
        (True, True, OWN_SCOPE, OWN_SCOPE)
    assert (known_leaf.exists, known_leaf.edge, known_leaf.edge_scope, known_leaf.device_scope) == \
        (True, False, None, GW_SCOPE)  # a leaf's deviceScope is its parent's: not a scope of its own
    assert (absent.exists, absent.edge, absent.edge_scope, absent.identity, absent.twin) == (False, False, None, None, None)
    assert known_edge.identity["parentScopes"] == [GW_SCOPE]


twins = st.fixed_dictionaries({
    "etag": st.sampled_from(["AAAA", "BBBB"]),
    "tags": st.dictionaries(st.sampled_from(["fleet", "site", "owner"]),
                            st.one_of(st.sampled_from(["a", "b"]), st.dictionaries(st.just("x"), st.integers(0, 3))),
                            max_size=3),
    "properties": st.fixed_dictionaries({
        "desired": st.dictionaries(st.sampled_from(["interval", "$version", "mode"]), st.integers(0, 9), max_size=3),
        "reported": st.dictionaries(st.just("fw"), st.just("1.0"))}),
})


@given(twins, st.dictionaries(st.sampled_from(["fleet", "site", "new"]), st.sampled_from(["a", "c", None]), max_size=3))
@settings(max_examples=300, deadline=None)
def test_property_the_packed_twin_is_the_kept_twin_and_plans_alike(twin, declared_tags):
    known = Known({"deviceId": "dev"}, False, twin)
    assert known.twin == kept_twin(twin)
    spec = DeviceSpec(device_id="dev", tags=declared_tags)
    assert plan_twin(spec, known.twin) == plan_twin(spec, twin)


def test_equal_twin_sections_are_shared_and_never_changed_by_planning():
    a = Known({"deviceId": "a"}, False, {"etag": "1", "tags": {"fleet": "plant-7", "site": {"line": 1}}})
    b = Known({"deviceId": "b"}, False, {"etag": "2", "tags": {"site": {"line": 1}, "fleet": "plant-7"}})
    assert a.twin["tags"] is b.twin["tags"]  # one object for the fleet's equal tag sets
    plan = plan_twin(DeviceSpec(device_id="a", tags={"site": {"line": 2}, "fleet": None}), a.twin)
    assert plan["full"]["tags"] == {"site": {"line": 2}}
    assert b.twin["tags"] == {"fleet": "plant-7", "site": {"line": 1}}  # the shared section is as it was read


@pytest.mark.parametrize("detail", [None, "summary", "full"])
@pytest.mark.parametrize("how", ["ascending", "descending", "shuffled 1", "shuffled 2", "shuffled 3"])
def test_a_summary_diff_keeps_the_plans_it_shows_and_a_bounded_number(how, detail):
    """Whatever order the changed devices are planned in, a summary keeps the plans of the DIFF_KEPT ids that sort
    first (the diff shows DIFF_SUMMARY_ABOVE of them) and never more than twice that; no diff keeps none."""
    order = list(range(3000))
    if how == "descending":
        order.reverse()
    elif how.startswith("shuffled"):
        random.Random(how).shuffle(order)
    rec = BulkReconciler(None, [], diff_detail=detail)
    most = 0
    for i in order:
        did = f"dev-{i:05d}"
        rec._keep_for_diff(did, plan_device(DeviceSpec(device_id=did), None), {}, Known(None, True))
        most = max(most, len(rec.plans))
    if detail is None:
        assert most == 0
    elif detail == "full":
        assert len(rec.plans) == 3000
    else:
        assert most <= 2 * DIFF_KEPT
        assert set(f"dev-{i:05d}" for i in range(DIFF_KEPT)) <= set(rec.plans)
