"""#28: the inventory plugin fleet.azure_iot.iothub, run by ansible-inventory against the emulator.

The expectations are written by hand from the tree below (not captured from a run):

    plant-gw (edge, layer 1; tags.host 10.0.0.1, tags.site p7)
    ├── line1-gw (edge, layer 2; tags.host 10.0.1.1, tags.site p7)
    │   └── cell1-gw (edge, layer 3; no host tag)
    │       └── sensor-a (leaf)
    ├── line2-gw (edge, layer 2; tags.site p8)
    └── meter (leaf)
    lonely-gw (edge, layer 1)
    free-sensor (leaf, no parent)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.emulator import env_without_proxies
from support.hub import HubClient

EDGE = {"iotEdge": True}
PLAIN = "HostName=h.azure-devices.net;SharedAccessKeyName=x;SharedAccessKey=c2VjcmV0"


def make_tree(hub: HubClient) -> None:
    def put(did, edge=False, parent=None, tags=None):
        body = {"deviceId": did, "capabilities": {"iotEdge": edge}}
        if parent:
            pscope = hub.get_device(parent).json()["deviceScope"]
            body["parentScopes" if edge else "deviceScope"] = [pscope] if edge else pscope
        r = hub.put_device(did, body)
        assert r.status_code == 200, r.text
        if tags:
            r = hub.request("PATCH", f"/twins/{did}", json={"tags": tags}, headers={"If-Match": "*"})
            assert r.status_code == 200, r.text
    put("plant-gw", True, tags={"host": "10.0.0.1", "site": "p7"})
    put("line1-gw", True, "plant-gw", tags={"host": "10.0.1.1", "site": "p7"})
    put("cell1-gw", True, "line1-gw")
    put("sensor-a", False, "cell1-gw")
    put("line2-gw", True, "plant-gw", tags={"site": "p8"})
    put("meter", False, "plant-gw")
    put("lonely-gw", True)
    put("free-sensor", False)


@pytest.fixture
def inventory(collections_root, tmp_path, emulator):
    """Run ansible-inventory on an inventory file (CONFIG: a dict, or the file's text); returns (rc, parsed --list
    or the --graph text, stderr)."""
    def run(config, *, mode: str = "--list", env: dict | None = None, name: str = "hub.iothub.yml",
            vault_password_file: Path | None = None):
        path = tmp_path / name
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
        e = env_without_proxies()
        e.update(emulator.ansible_env())
        e.update({"ANSIBLE_COLLECTIONS_PATH": str(collections_root), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
                  "ANSIBLE_HOME": str(tmp_path / "ansible_home"), "ANSIBLE_NOCOLOR": "1",
                  "ANSIBLE_DEPRECATION_WARNINGS": "0"})
        if vault_password_file is not None:
            e["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file)
        e.update(env or {})
        p = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(path), mode],
                           env=e, capture_output=True, text=True, timeout=300)
        out = plain(json.loads(p.stdout)) if (mode == "--list" and p.returncode == 0) else p.stdout
        return p.returncode, out, p.stderr
    return run


def plain(value):
    """ansible-inventory --list marks the values a plugin set as unsafe (never templated): read them as values."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def members(listing: dict, group: str) -> list:
    return sorted(listing.get(group, {}).get("hosts", []))


def test_gateways_as_hosts_with_their_real_layers_parents_and_groups(inventory, emulator, hub):
    make_tree(hub)
    rc, inv, err = inventory({"plugin": "fleet.azure_iot.iothub", "host_tag": "tags.host"})
    assert rc == 0, err
    hostvars = inv["_meta"]["hostvars"]
    assert sorted(hostvars) == ["cell1-gw", "line1-gw", "line2-gw", "lonely-gw", "plant-gw"]  # edge devices only
    assert members(inv, "edge_layer_1") == ["lonely-gw", "plant-gw"]
    assert members(inv, "edge_layer_2") == ["line1-gw", "line2-gw"]
    assert members(inv, "edge_layer_3") == ["cell1-gw"]
    assert members(inv, "children_of_plant_gw") == ["line1-gw", "line2-gw"]
    assert members(inv, "children_of_line1_gw") == ["cell1-gw"]
    assert "children_of_cell1_gw" not in inv  # its only child is not a host
    plant, cell = hostvars["plant-gw"], hostvars["cell1-gw"]
    assert plant["iothub_parent"] is None and plant["iothub_layer"] == 1 and plant["ansible_host"] == "10.0.0.1"
    assert plant["iothub_tags"] == {"host": "10.0.0.1", "site": "p7"} and plant["iothub_status"] == "enabled"
    assert plant["iothub_device_scope"] == hub.get_device("plant-gw").json()["deviceScope"]
    assert plant["iothub_connection_state"] == "Disconnected" and plant["iothub_device_id"] == "plant-gw"
    assert cell["iothub_parent"] == "line1-gw" and cell["iothub_layer"] == 3 and "ansible_host" not in cell
    rc, graph, err = inventory({"plugin": "fleet.azure_iot.iothub"}, mode="--graph")
    assert rc == 0, err
    assert "@edge_layer_3:\n  |  |--cell1-gw" in graph.replace("\r", "")


def test_filter_selects_leaves_too_and_their_layer_counts_the_gateways_above(inventory, hub):
    make_tree(hub)
    rc, inv, err = inventory({"plugin": "fleet.azure_iot.iothub", "filter": "status = 'enabled'"})
    assert rc == 0, err
    hostvars = inv["_meta"]["hostvars"]
    assert len(hostvars) == 8
    assert hostvars["sensor-a"]["iothub_parent"] == "cell1-gw" and hostvars["sensor-a"]["iothub_layer"] == 4
    assert hostvars["meter"]["iothub_parent"] == "plant-gw" and hostvars["meter"]["iothub_layer"] == 2
    assert hostvars["free-sensor"]["iothub_parent"] is None and hostvars["free-sensor"]["iothub_edge"] is False
    assert members(inv, "children_of_cell1_gw") == ["sensor-a"]
    assert members(inv, "children_of_plant_gw") == ["line1-gw", "line2-gw", "meter"]
    assert members(inv, "edge_layer_1") == ["lonely-gw", "plant-gw"]  # leaves are in no edge layer


def test_constructed_options(inventory, hub):
    make_tree(hub)
    rc, inv, err = inventory({
        "plugin": "fleet.azure_iot.iothub",
        "keyed_groups": [{"key": "iothub_tags.site | default('none')", "prefix": "site"}],
        "groups": {"deep": "iothub_layer > 1"},
        "compose": {"ansible_user": "'edgeadmin'"},
    })
    assert rc == 0, err
    assert members(inv, "site_p7") == ["line1-gw", "plant-gw"] and members(inv, "site_p8") == ["line2-gw"]
    assert members(inv, "site_none") == ["cell1-gw", "lonely-gw"]
    assert members(inv, "deep") == ["cell1-gw", "line1-gw", "line2-gw"]
    assert inv["_meta"]["hostvars"]["lonely-gw"]["ansible_user"] == "edgeadmin"


def test_the_cache_spares_the_hub_a_second_round_of_queries(inventory, emulator, hub, tmp_path):
    make_tree(hub)
    config = {"plugin": "fleet.azure_iot.iothub", "cache": True, "cache_plugin": "ansible.builtin.jsonfile",
              "cache_connection": str(tmp_path / "cache"), "cache_timeout": 3600}
    before = emulator.stats()["query_pages"]
    rc, first, err = inventory(config)
    assert rc == 0, err
    middle = emulator.stats()["query_pages"]
    assert middle > before  # the first run queried the hub
    rc, second, err = inventory(config)
    assert rc == 0, err
    assert emulator.stats()["query_pages"] == middle  # the second made no query
    assert second["_meta"]["hostvars"] == first["_meta"]["hostvars"]
    assert not any("SharedAccessKey" in p.read_text() for p in (tmp_path / "cache").iterdir())


def test_2500_gateways_come_through_paged_queries(inventory, emulator, hub):
    for start in range(0, 2500, 100):
        r = hub.bulk([{"id": f"gw-{i:04d}", "importMode": "create", "capabilities": EDGE}
                      for i in range(start, start + 100)])
        assert r.status_code == 200, r.text
    before = emulator.stats()["query_pages"]
    rc, inv, err = inventory({"plugin": "fleet.azure_iot.iothub"})
    assert rc == 0, err
    assert len(inv["_meta"]["hostvars"]) == 2500 and len(members(inv, "edge_layer_1")) == 2500
    assert emulator.stats()["query_pages"] - before >= 25  # 100 a page


@pytest.mark.parametrize("config,env,fragment", [
    ({"plugin": "fleet.azure_iot.iothub", "colour": "red"}, {}, "colour"),
    ({"plugin": "fleet.azure_iot.iothub"}, {"IOTHUB_CONNECTION_STRING": "", "IOTHUB_HOSTNAME": ""},
     "No IoT Hub connection"),
    ({"plugin": "fleet.azure_iot.iothub", "host_tag": "tags.hostname"}, {}, "host_tag 'tags.hostname': none of"),
    ({"plugin": "fleet.azure_iot.iothub", "host_type": "hub",
      "hubs": [{"name": "h1", "connection_string": PLAIN}]}, {}, "plain secret"),
    ({"plugin": "fleet.azure_iot.iothub", "host_type": "hub", "hubs": [{"name": "h1"}]}, {},
     "exactly one of connection_string_env"),
    ({"plugin": "fleet.azure_iot.iothub", "host_type": "hub", "hubs": [{"name": "h1", "connection_string_env": "NOPE_CS"}]},
     {}, "NOPE_CS is not set"),
])
def test_bad_input_is_refused_with_the_option_named(inventory, hub, config, env, fragment):
    make_tree(hub)
    rc, _out, err = inventory(config, env=env)
    assert rc != 0 and fragment in err, err
    assert "c2VjcmV0" not in err  # a refused plain secret is not echoed


def test_hubs_as_hosts(inventory, emulator, tmp_path):
    cs = emulator.connection_string
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("s3cret-pass\n")
    vaulted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string", "--vault-password-file", str(vault_pass),
         cs, "--name", "connection_string"], capture_output=True, text=True, check=True,
        env={**env_without_proxies(), "ANSIBLE_HOME": str(tmp_path / "ansible_home")}).stdout
    text = ("plugin: fleet.azure_iot.iothub\nhost_type: hub\nhubs:\n  - name: hub-a\n    connection_string_env: HUB_A_CS\n"
            "  - name: hub-b\n    " + vaulted.strip().replace("\n", "\n    ") + "\n")
    rc, inv, err = inventory(text, name="hubs.iothub.yml", env={"HUB_A_CS": cs}, vault_password_file=vault_pass)
    assert rc == 0, err
    host = cs.split("HostName=")[1].split(";")[0]
    assert members(inv, "iothub_hubs") == ["hub-a", "hub-b"]
    hv = inv["_meta"]["hostvars"]
    assert hv["hub-a"] == {"iothub_hub_name": "hub-a", "iothub_hostname": host, "iothub_connection_string_env": "HUB_A_CS"}
    assert hv["hub-b"]["iothub_hub_name"] == "hub-b" and hv["hub-b"]["iothub_hostname"] == host
    assert cs.split("SharedAccessKey=")[1] not in json.dumps(hv) + err  # the vaulted value stays vaulted


def test_a_fleet_of_hubs_converges_each_hub_to_exactly_its_shard(collections_root, emulator_factory, tmp_path):
    """playbooks/fleet_of_hubs.yml with 3 hubs x 300 devices: one host per hub, forks 3, each hub converging the
    lines of the file that name it; afterwards each hub holds exactly its shard, and a re-run changes nothing."""
    emus = [emulator_factory(name=f"hub{i}") for i in range(3)]
    fleet = tmp_path / "fleet.jsonl"
    fleet.write_text("".join(json.dumps({"device_id": f"d-{i:04d}", "hub": f"hub-{i % 3}", "tags": {"n": i}}) + "\n"
                             for i in range(900)))
    hubs = [{"name": f"hub-{i}", "connection_string_env": f"HUB_{i}_CS", "ca_path": str(e.ca_path)}
            for i, e in enumerate(emus)]
    inv = tmp_path / "hubs.iothub.yml"
    inv.write_text(yaml.safe_dump({"plugin": "fleet.azure_iot.iothub", "host_type": "hub", "hubs": hubs}))
    e = env_without_proxies()
    e.update({f"HUB_{i}_CS": em.connection_string for i, em in enumerate(emus)})
    e.update({"ANSIBLE_COLLECTIONS_PATH": str(collections_root), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
              "ANSIBLE_HOME": str(tmp_path / "ansible_home"), "ANSIBLE_NOCOLOR": "1"})
    repo = Path(__file__).resolve().parents[2]

    def play():
        p = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), "-f", "3",
                            str(repo / "playbooks" / "fleet_of_hubs.yml"), "-e", f"fleet_devices_file={fleet}",
                            "-e", f"ansible_python_interpreter={sys.executable}"],
                           env=e, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
        return p.stdout
    out = play()
    assert out.count("'created': 300") == 3, out[-3000:]
    for i, em in enumerate(emus):
        hub = HubClient(em.connection_string, em.ca_path)
        ids = sorted(t["deviceId"] for t in hub.query_all("SELECT deviceId FROM devices"))
        hub.close()
        assert ids == [f"d-{n:04d}" for n in range(900) if n % 3 == i]
    again = play()
    assert again.count("'unchanged': 300") == 3 and "changed=1" not in again
