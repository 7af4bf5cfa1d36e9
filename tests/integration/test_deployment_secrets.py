"""Secrets inside deployments (#23 item 4): registry credentials and env values named like passwords are masked in
every output of iothub_edge_modules, iothub_configuration(_info), iothub_device_bulk and the roles, while
comparisons and writes use the real values.  Microsoft's nested top-layer manifest is the test data; the harness
also scans every run's -vvv --diff output for the secrets the emulator holds (document_secrets)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import counting, play, run_ok, task

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "edge-manifests"
PASSWORD = "cr-Pa55word-2026"
MASKED = ("********", "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")  # inside a string / a whole value, as Ansible masks
FILL = {"<CR.Username>": "builduser", "<CR.Password>": PASSWORD, "<Container_Registry>": "myacr.azurecr.io",
        "<Build.BuildNumber>": "1.5.0", "<Architecture>": "amd64", "<proxyAddress>": "http://proxy:3128"}


def top_layer(password: str = PASSWORD) -> dict:
    """The nested top layer, placeholders filled; written inline in a playbook, its "{{iot:identity}}" (an edgeHub
    MQTT broker authorization) must not be templated by Ansible: it is wrapped in {% raw %}, as docs say."""
    text = (CORPUS / "nestededge_topLayerBaseDeployment_amqp.json").read_text()
    for k, v in {**FILL, "<CR.Password>": password}.items():
        text = text.replace(k, v)
    return json.loads(text.replace("{{iot:identity}}", "{% raw %}{{iot:identity}}{% endraw %}"))


def agent_password(hub, did):
    desired = hub.request("GET", f"/twins/{did}/modules/$edgeAgent").json()["properties"]["desired"]
    return desired["runtime"]["settings"]["registryCredentials"]["buildcr"]["password"]


def proxy_password(hub, did):
    desired = hub.request("GET", f"/twins/{did}/modules/$edgeAgent").json()["properties"]["desired"]
    return desired["modules"]["dockerContainerRegistry"]["env"]["REGISTRY_PROXY_PASSWORD"]["value"]


def test_edge_modules_mask_registry_credentials_and_secret_env_values(ansible, emulator, hub):
    hub.put_device("top", {"deviceId": "top", "capabilities": {"iotEdge": True}})
    content = top_layer()["modulesContent"]
    r = run_ok(ansible, play(task("t", "iothub_edge_modules", device_id="top", content=content)))
    assert PASSWORD not in r.output  # the harness checks every emulator secret; this one is named here too
    after = r.task("t").result["diff"]["after"]["$edgeAgent"]
    creds = after["runtime"]["settings"]["registryCredentials"]["buildcr"]
    assert creds["password"] in MASKED and creds["username"] == "builduser"  # masked where secret, readable elsewhere
    env = after["modules"]["dockerContainerRegistry"]["env"]
    assert env["REGISTRY_PROXY_PASSWORD"]["value"] in MASKED and env["REGISTRY_PROXY_USERNAME"]["value"] == "builduser"
    assert agent_password(hub, "top") == PASSWORD and proxy_password(hub, "top") == PASSWORD  # real values written
    new = top_layer("cr-N3w-Pa55word-2026")["modulesContent"]
    with counting(emulator) as w:
        chk = run_ok(ansible, play(task("t", "iothub_edge_modules", device_id="top", content=new)), check=True)
    assert w.writes == 0 and chk.task("t").changed  # a changed password is a change: comparisons see real values
    r = run_ok(ansible, play(task("t", "iothub_edge_modules", device_id="top", content=new)))
    assert "cr-N3w-Pa55word-2026" not in r.output and PASSWORD not in r.output
    assert agent_password(hub, "top") == "cr-N3w-Pa55word-2026"


def test_configurations_mask_content_secrets_in_results(ansible, emulator, hub):
    content = top_layer()
    args = dict(id="nested-top", content=content, target_condition="tags.layer = 'top'", priority=10)
    r = run_ok(ansible, play(task("c", "iothub_configuration", **args), task("i", "iothub_configuration_info",
                                                                        id="nested-top")))
    assert PASSWORD not in r.output
    stored = r.task("c").result["configuration"]["content"]["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert stored["runtime"]["settings"]["registryCredentials"]["buildcr"]["password"] in MASKED
    listed = r.task("i").result["configurations"][0]["content"]["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert listed["runtime"]["settings"]["registryCredentials"]["buildcr"]["password"] in MASKED
    hub_cfg = hub.request("GET", "/configurations/nested-top").json()
    assert json.dumps(hub_cfg).count(PASSWORD) == 2  # the hub holds the real values (credentials and proxy env)
    with counting(emulator) as w:
        again = run_ok(ansible, play(task("c", "iothub_configuration", **args)))
    assert w.writes == 0 and not again.task("c").changed


def test_a_tree_deployment_is_masked_in_the_bulk_result_and_written_for_real_by_the_role(ansible, emulator, hub):
    tree = [{"device_id": "tree-top", "deployment": top_layer()["modulesContent"], "children": [
        {"device_id": "tree-leaf"}]}]
    role = {"name": "apply", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_hierarchy"},
            "vars": {"edge_hierarchy_tree": tree}}
    r = run_ok(ansible, play(role))
    assert PASSWORD not in r.output
    bulk = r.task("Converge the hierarchy top-down in one bulk task").result
    shown = bulk["edge_devices"][0]["deployment"]["$edgeAgent"]["properties.desired"]
    assert shown["runtime"]["settings"]["registryCredentials"]["buildcr"]["password"] in MASKED
    assert agent_password(hub, "tree-top") == PASSWORD  # the role wrote the real value, never the mask
    with counting(emulator) as w:
        again = run_ok(ansible, play(role))
    assert w.writes == 0 and again.changed_tasks() == []


SENSOR = {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
          "settings": {"image": "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5"},
          "properties.desired": {"SendInterval": 5}}


def test_nested_defaults_with_a_private_registry_and_extra_modules(ansible, emulator, hub):
    """Item 9: registry credentials on every layer (and the top layer's registry proxy), UpstreamProtocol on every
    layer, extra modules on the lower layers or on one layer; the password is never shown."""
    tree = [{"device_id": "n-top", "children": [{"device_id": "n-mid", "children": [
        {"device_id": "n-low", "children": [{"device_id": "n-sensor"}]}]}]}]
    role = {"name": "apply", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_hierarchy"},
            "vars": {"edge_hierarchy_tree": tree, "edge_hierarchy_default_deployment": "nested",
                     "edge_hierarchy_registry": "myacr.azurecr.io",
                     "edge_hierarchy_registry_credentials": {"username": "builduser", "password": PASSWORD},
                     "edge_hierarchy_extra_modules": {"sensor": SENSOR}}}
    r = run_ok(ansible, play(role))
    assert PASSWORD not in r.output
    for did, address in (("n-top", "myacr.azurecr.io"), ("n-mid", "$upstream:443"), ("n-low", "$upstream:443")):
        desired = hub.request("GET", f"/twins/{did}/modules/$edgeAgent").json()["properties"]["desired"]
        creds = desired["runtime"]["settings"]["registryCredentials"]["edgeregistry"]
        assert creds == {"username": "builduser", "password": PASSWORD, "address": address}
        for system in ("edgeAgent", "edgeHub"):
            assert desired["systemModules"][system]["env"]["UpstreamProtocol"] == {"value": "amqp"}
        assert ("sensor" in desired["modules"]) is (did != "n-top")
    top = hub.request("GET", "/twins/n-top/modules/$edgeAgent").json()["properties"]["desired"]
    assert top["modules"]["registry"]["env"]["REGISTRY_PROXY_PASSWORD"] == {"value": PASSWORD}
    assert hub.request("GET", "/twins/n-low/modules/sensor").json()["properties"]["desired"]["SendInterval"] == 5
    with counting(emulator) as w:
        again = run_ok(ansible, play(role))
    assert w.writes == 0 and again.changed_tasks() == []
    role["vars"]["edge_hierarchy_extra_modules"] = {3: {"sensor": SENSOR}}  # one layer only
    run_ok(ansible, play(role))
    mods = {did: hub.request("GET", f"/twins/{did}/modules/$edgeAgent").json()["properties"]["desired"]["modules"]
            for did in ("n-top", "n-mid", "n-low")}
    assert [did for did, m in mods.items() if "sensor" in m] == ["n-low"]
