"""A rotation is decided once per task (issue #22 items 6, 7, 9): pure logic of KeyIntent with plan_device."""

from __future__ import annotations

from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import plan_device
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import fresh_key, sas_keys
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import KeyIntent

K1, K2 = fresh_key(), fresh_key()


def device(primary, secondary, etag="e1"):
    return {"deviceId": "d", "etag": etag, "status": "enabled",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}},
            "capabilities": {"iotEdge": False}}


def plan(intent, spec, current):
    p = plan_device(intent.spec_for(spec, current), current, None, fresh_key())
    intent.record(spec, p)
    return p


def test_a_swap_found_applied_is_not_swapped_back():
    spec, intent = DeviceSpec(device_id="d", rotate_keys="swap"), KeyIntent()
    first = plan(intent, spec, device(K1, K2))
    assert first.action == "update" and (first.after["primary_key"], first.after["secondary_key"]) == (K2, K1)
    # The answer was lost but the write landed: the re-plan sees the swapped keys and asks for nothing more.
    assert plan(intent, spec, device(K2, K1, "e2")).action == "none"


def test_a_primary_rotation_not_applied_is_sent_again_with_the_same_key():
    spec, intent = DeviceSpec(device_id="d", rotate_keys="primary"), KeyIntent()
    first = plan(intent, spec, device(K1, K2))
    again = plan(intent, spec, device(K1, K2, "e2"))  # a conflict: nothing of it landed
    assert again.action == "update" and again.after["primary_key"] == first.after["primary_key"] != K1
    assert again.after["secondary_key"] == K2


def test_a_create_carries_keys_of_the_task_and_a_landed_one_is_not_rotated():
    spec, intent = DeviceSpec(device_id="d", rotate_keys="primary"), KeyIntent()
    create = plan(intent, spec, None)
    assert create.action == "create"
    made = (create.body["authentication"]["symmetricKey"]["primaryKey"],
            create.body["authentication"]["symmetricKey"]["secondaryKey"])
    assert all(made) and plan(intent, spec, None).body["authentication"] == create.body["authentication"]
    assert plan(intent, spec, device(*made, "e2")).action == "none"  # the lost create landed


def test_a_create_that_met_an_existing_device_rotates_it():
    spec, intent = DeviceSpec(device_id="d", rotate_keys="primary"), KeyIntent()
    assert plan(intent, spec, None).action == "create"
    # The device was there before (the lagging index hid it): the create did not land; the device is rotated.
    p = plan(intent, spec, device(K1, K2))
    assert p.action == "update" and p.after["secondary_key"] == K2 and p.after["primary_key"] not in (K1, None)
    assert sas_keys(device(K1, K2)) == (K1, K2)
