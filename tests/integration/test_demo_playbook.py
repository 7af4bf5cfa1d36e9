"""The playbook behind `make demo` converges and is idempotent."""

from __future__ import annotations

from pathlib import Path

from helpers import counting

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "demo_edge_gateway.yml"


def test_demo_playbook_twice(ansible, emulator, hub):
    first = ansible.run(PLAYBOOK)
    assert first.rc == 0, first.output[-3000:]
    assert "Ensure the IoT Edge gateway" in first.changed_tasks()
    gw = hub.get_device("plant-gw").json()
    for sensor in ("line1-sensor-1", "line1-sensor-2"):
        assert hub.get_device(sensor).json()["deviceScope"] == gw["deviceScope"]
    with counting(emulator) as w:
        second = ansible.run(PLAYBOOK)
    assert second.rc == 0 and second.changed_tasks() == [] and w.writes == 0
    tree = second.task("Show the hierarchy").result["msg"]
    assert tree[0].startswith("plant-gw") and len(tree) == 3
    assert tree[1].startswith("├── ") and tree[2].startswith("└── ")  # only the last child is └──


HIERARCHY = PLAYBOOK.parent / "demo_hierarchy.yml"


def test_demo_hierarchy_playbook_twice(ansible, emulator, hub):
    first = ansible.run(HIERARCHY)
    assert first.rc == 0, first.output[-3000:]
    plant = hub.get_device("plant-gw").json()["deviceScope"]
    assert hub.get_device("line1-gw").json()["parentScopes"] == [plant]
    assert hub.request("GET", "/twins/line1-sensor-1").json()["tags"] == {"site": "plant-7"}
    line1_agent = hub.request("GET", "/twins/line1-gw/modules/$edgeAgent").json()["properties"]["desired"]
    assert line1_agent["systemModules"]["edgeHub"]["settings"]["image"].startswith("$upstream:443/")
    with counting(emulator) as w:
        second = ansible.run(HIERARCHY)
    assert second.rc == 0 and second.changed_tasks() == [] and w.writes == 0
    tree = second.task("Print the tree").result["msg"]
    assert tree[0].startswith("plant-gw  [edge] ms-azure-iot-edge://plant-gw-")
    assert tree[1].startswith("├── line1-gw") and tree[2:4] == ["│   ├── line1-sensor-1", "│   └── line1-sensor-2"]
    assert tree[-1] == "└── plant-meter"
