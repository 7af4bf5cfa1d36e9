"""The pure plans of the IoT Central device, the configuration and the deployment manifest."""

from __future__ import annotations

import json

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._manifest import plan_manifest, send_form
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_central_device import CentralSpec, plan_central
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_configuration import (
    ConfigurationSpec,
    plan_configuration,
)

AGENT = {"schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {}},
         "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
                           "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                       "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}},
         "modules": {"sim": {"type": "docker", "status": "running", "restartPolicy": "always", "version": "1.0",
                             "settings": {"image": "sim:1", "createOptions": {"HostConfig": {"Privileged": False}}}}}}
HUB = {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}
MANIFEST = {"$edgeAgent": {"properties.desired": AGENT}, "$edgeHub": {"properties.desired": HUB},
            "sim": {"properties.desired": {"rate": 5}}}


# ---------------------------------------------------------------------------------------- IoT Central device
def test_central_create_update_delete_none():
    spec = CentralSpec(device_id="dev-1", template="dtmi:x;1")
    create = plan_central(spec, None)
    assert create.action == "create" and create.body == {"displayName": "dev-1", "template": "dtmi:x;1",
                                                         "simulated": False, "enabled": True}
    current = {"id": "dev-1", "displayName": "dev-1", "template": "dtmi:x;1", "enabled": True, "etag": "e1"}
    assert plan_central(spec, current).action == "none"
    update = plan_central(CentralSpec(device_id="dev-1", display_name="Pump"), current)
    assert update.action == "update" and update.body == {"displayName": "Pump", "etag": "e1"}  # a merge patch
    assert update.changes == {"display_name": ("dev-1", "Pump")}
    assert plan_central(CentralSpec(device_id="dev-1", state="absent"), current).action == "delete"
    assert plan_central(CentralSpec(device_id="dev-1", state="absent"), None).action == "none"


def test_central_unset_options_are_not_managed():
    current = {"id": "d", "displayName": "Named by hand", "template": "dtmi:x;1", "enabled": False, "etag": "e"}
    assert plan_central(CentralSpec(device_id="d"), current).action == "none"


# ------------------------------------------------------------------------------------------- configuration
def test_configuration_create_then_in_place_update_of_what_may_change():
    spec = ConfigurationSpec(id="dep-1", content={"modulesContent": MANIFEST}, target_condition="tags.site='a'",
                             priority=10)
    create = plan_configuration(spec, None)
    assert create.action == "create" and create.body["targetCondition"] == "tags.site='a'"
    assert create.body["content"]["modulesContent"]["sim"] == {"properties.desired": {"rate": 5}}
    current = dict(create.body, etag="e1")
    assert plan_configuration(spec, current).action == "none"
    moved = ConfigurationSpec(id="dep-1", content={"modulesContent": MANIFEST}, target_condition="tags.site='b'")
    update = plan_configuration(moved, current)
    assert update.action == "update" and update.etag == "e1" and update.body["targetCondition"] == "tags.site='b'"
    assert update.body["content"] == current["content"]  # content is never changed in place


def test_configuration_content_change_needs_recreate():
    spec = ConfigurationSpec(id="dep-1", content={"modulesContent": MANIFEST})
    current = dict(plan_configuration(spec, None).body, etag="e1")
    other = json.loads(json.dumps(MANIFEST))
    other["sim"]["properties.desired"]["rate"] = 6
    with pytest.raises(PlanError, match="recreate=true"):
        plan_configuration(ConfigurationSpec(id="dep-1", content={"modulesContent": other}), current)
    again = plan_configuration(ConfigurationSpec(id="dep-1", content={"modulesContent": other}, recreate=True), current)
    assert again.action == "recreate" and again.etag == "e1"


def test_configuration_absent_and_missing_content():
    current = {"id": "dep-1", "etag": "e1", "content": {}}
    assert plan_configuration(ConfigurationSpec(id="dep-1", state="absent"), current).action == "delete"
    assert plan_configuration(ConfigurationSpec(id="dep-1", state="absent"), None).action == "none"
    with pytest.raises(PlanError, match="content"):
        plan_configuration(ConfigurationSpec(id="dep-1"), None)


# ------------------------------------------------------------------------------------------------ manifest
def twins_after(manifest):
    """The desired properties the module twins hold once the manifest is applied (createOptions as a string)."""
    return {name: part["properties.desired"] for name, part in send_form(manifest).items()}


def test_manifest_applied_is_no_change_and_createoptions_compare_as_json():
    assert plan_manifest(MANIFEST, twins_after(MANIFEST)) == {}
    sent = send_form(MANIFEST)["$edgeAgent"]["properties.desired"]["modules"]["sim"]["settings"]
    assert isinstance(sent["createOptions"], str)  # the wire form: a JSON string


def test_manifest_differences_are_per_module():
    current = twins_after(MANIFEST)
    current["sim"] = {"rate": 4, "$version": 3}
    changes = plan_manifest(MANIFEST, current)
    assert set(changes) == {"sim"} and changes["sim"] == ({"rate": 4}, {"rate": 5})


def test_manifest_on_a_device_without_module_twins_is_one_change_per_module():
    changes = plan_manifest(MANIFEST, {name: None for name in MANIFEST})
    assert set(changes) == {"$edgeAgent", "$edgeHub", "sim"}
