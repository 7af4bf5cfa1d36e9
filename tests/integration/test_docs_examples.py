"""Documentation that runs: every EXAMPLES block of every module, and every YAML example in README.md, docs/ and
the role READMEs, run as written (in the order a reader meets them) against the emulator.  What cannot run here
is listed in NOT_RUNNABLE with the reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MARKDOWN = ["README.md", "docs/edge-hierarchy.md", "docs/edge-deployments.md", "docs/key-rotation.md",
            "docs/fleet-jobs.md", "docs/fleet-of-hubs.md", "docs/dps.md",
            "roles/edge_gateway/README.md",
            "roles/edge_hierarchy/README.md", "docs/edge-hosts.md", "roles/edge_pki/README.md",
            "roles/edge_host/README.md",
            "docs/awx.md", "docs/emulator.md", "docs/reliability.md", "docs/benchmarks.md", "docs/architecture.md"]
MODULE_ORDER = ["iothub_device", "iothub_device_bulk", "iothub_device_info", "iothub_module", "iothub_module_info",
                "iothub_edge_modules", "iothub_configuration", "iothub_configuration_info", "iothub_registry_export",
                "iotcentral_device", "iotcentral_device_info", "dps_enrollment", "dps_enrollment_info",
                "dps_enrollment_group", "dps_enrollment_group_info", "dps_enrollment_bulk", "dps_registration_info",
                "edge_host_config"]
# Modules whose examples run on an IoT Edge gateway host (root, aziot installed), not here.
HOST_EXAMPLES = {
    "edge_host_apply": "it runs iotedge and update-ca-certificates on a gateway host: test_edge_host.py runs it as the "
                       "edge_host role's handler on Debian hosts with stand-in aziot packages",
    "edge_host_check": "it runs iotedge check on a gateway host: test_edge_host.py runs it through the edge_host role",
}

# (source, block index or task name) -> why it is not run against the emulator.
NOT_RUNNABLE = {
    ("docs/awx.md", 0): "an execution-environment definition for ansible-builder, not a playbook; "
                        "tests/packaging runs ansible-builder create on it, from a tarball of the collection",
    ("docs/key-rotation.md", 0): "it needs -e step=N, one step per run: test_intent.py runs it step by step as a "
                                 "user would, checking after each step that the devices' key is still valid",
    ("docs/fleet-jobs.md", 1): "the core of playbooks/fleet_from_file_watched.yml (a line a minute while the task "
                               "runs): test_pacing_progress.py runs that play as shipped against a throttled emulator",
    ("docs/fleet-of-hubs.md", 0): "an inventory file (host_type hub): test_inventory.py runs ansible-inventory on it",
    ("docs/fleet-of-hubs.md", 1): "a play on the hubs of that inventory: test_inventory.py runs it as "
                                  "playbooks/fleet_of_hubs.yml on three emulated hubs",
    ("docs/fleet-of-hubs.md", 2): "an inventory file (gateways as hosts): test_inventory.py runs ansible-inventory on "
                                  "the same options",
    ("docs/edge-hosts.md", 0): "an inventory of gateway hosts: test_edge_host.py runs playbooks/edge_fleet.yml with "
                               "the same groups and host variables on three debootstrap'd Debian hosts",
    ("docs/edge-hosts.md", 1): "the tree for that inventory: test_edge_host.py runs the same three-layer tree",
    ("roles/edge_pki/README.md", 0): "test_edge_host.py runs edge_pki with these variables (and checks the chain "
                                     "with openssl verify); it writes to /srv",
    ("roles/edge_host/README.md", 0): "a play on gateway hosts: test_edge_host.py runs the role on Debian hosts",
    ("iotcentral_device", "Name the application once for every IoT Central task of a play"):
        "it names a real application host (contoso-store.azureiotcentral.com), which cannot be reached here; "
        "the same module_defaults mechanism is tested against the emulator in test_iotcentral.py",
}


def markdown_blocks(rel: str) -> list[str]:
    text = (REPO / rel).read_text()
    return re.findall(r"```ya?ml\n(.*?)```", text, flags=re.S)


def module_examples(name: str) -> str:
    tree = ast.parse((REPO / "plugins" / "modules" / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "EXAMPLES":
            return node.value.value
    raise AssertionError(f"{name} has no EXAMPLES")


def test_every_documented_yaml_block_is_accounted_for():
    """A new YAML block in the docs must be run below or listed in NOT_RUNNABLE: this fails when one is neither."""
    found = {(rel, i) for rel in MARKDOWN for i, _ in enumerate(markdown_blocks(rel))}
    for rel in [str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")] + ["README.md"]:
        assert rel in MARKDOWN, f"{rel} is not in MARKDOWN"
    runnable = {k for k in found if k not in NOT_RUNNABLE}
    assert all(isinstance(yaml.safe_load(markdown_blocks(rel)[i]), list) for rel, i in runnable)


def _run_block(ansible, text: str, extra_vars: dict, label: str):
    data = yaml.safe_load(text)
    assert isinstance(data, list) and data, label
    if "hosts" not in data[0]:  # a task list (module EXAMPLES): one play around it
        data = [{"name": label, "hosts": "localhost", "gather_facts": False, "tasks": data}]
    r = ansible.run(yaml.safe_dump(data, sort_keys=False), extra_vars=extra_vars)
    assert r.rc == 0, f"{label} failed:\n{r.output[-4000:]}"
    return r


def fleet_csv(tmp_path: Path, hub) -> Path:
    """The CSV of docs/fleet-jobs.md's example as written (with CRLF line ends, as a spreadsheet exports it); the
    gateway it names exists."""
    text = re.findall(r"```csv\n(.*?)```", (REPO / "docs/fleet-jobs.md").read_text(), flags=re.S)[0]
    gateway = text.splitlines()[1].split(",")[2]
    assert hub.put_device(gateway, {"deviceId": gateway, "capabilities": {"iotEdge": True}}).status_code == 200
    path = tmp_path / "fleet.csv"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    return path


def test_markdown_examples_run_as_written_in_order(ansible, emulator, hub, azurite, tmp_path):
    extra = {"vault_iothub_connection_string": emulator.connection_string,
             "sensors": [{"device_id": f"sensor-{i}"} for i in range(1, 4)],
             "line1_sensors": ["line1-sensor-1", "line1-sensor-2"],
             "fleet_container_sas_url": azurite.container_uri("docs-fleet"),
             "migration_container_sas_url": azurite.container_uri("docs-migration"),
             "fleet_file": str(fleet_csv(tmp_path, hub))}
    ran = 0
    for rel in MARKDOWN:
        for i, block in enumerate(markdown_blocks(rel)):
            if (rel, i) in NOT_RUNNABLE:
                continue
            _run_block(ansible, block, extra, f"{rel} block {i}")
            ran += 1
    assert ran >= 5
    ids = {t["deviceId"] for t in hub.query_all("SELECT deviceId FROM devices")}
    assert {"plant-gw", "line1-gw", "line1-sensor-1", "line1-sensor-2", "plant-meter", "sensor-1"} <= ids


def test_the_trials_order_hierarchy_then_gateway_deletes_nothing(ansible, hub):
    """The new-user trial of 1.0.0: the edge_hierarchy example, then the edge_gateway example of
    docs/edge-hierarchy.md; the gateway's prune must not delete line1-gw's sensors."""
    gateway, hierarchy = markdown_blocks("docs/edge-hierarchy.md")[:2]
    assert "edge_hierarchy_tree" in hierarchy and "edge_gateway_prune_children: true" in gateway
    _run_block(ansible, hierarchy, {}, "hierarchy example")
    _run_block(ansible, gateway, {}, "gateway example")
    ids = {t["deviceId"] for t in hub.query_all("SELECT deviceId FROM devices")}
    assert {"line1-sensor-1", "line1-sensor-2", "plant-meter", "line1-gw", "plant-gw"} <= ids


def test_module_examples_run_as_written_in_order(ansible, emulator, azurite, tmp_path):
    extra = {"vault_iothub_connection_string": emulator.connection_string,
             "vault_backup_container_sas_url": azurite.container_uri("docs-backup"),
             "plant1_hub_hostname": emulator.hostname, "plant1_hub_hostnames": [emulator.hostname],
             "bundle_dir": str(tmp_path / "bundle")}
    modules = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))
    assert sorted(MODULE_ORDER + list(HOST_EXAMPLES)) == modules, "a module's EXAMPLES are neither run nor excused"
    for name in MODULE_ORDER:
        tasks = yaml.safe_load(module_examples(name))
        skipped = [t for t in tasks if (name, t["name"]) in NOT_RUNNABLE]
        tasks = [t for t in tasks if (name, t["name"]) not in NOT_RUNNABLE]
        assert len(skipped) == sum(1 for k in NOT_RUNNABLE if k[0] == name)
        assert tasks, name
        _run_block(ansible, yaml.safe_dump(tasks, sort_keys=False), extra, f"{name} EXAMPLES")


@pytest.mark.parametrize("rel", ["docs/awx/job_template.yml"])
def test_awx_example_is_a_valid_playbook(rel):
    """Not runnable here (it drives an AWX server through awx.awx): checked to be a playbook with FQCN tasks."""
    plays = yaml.safe_load((REPO / rel).read_text())
    assert plays and all("hosts" in p for p in plays)
    assert all(any(k.startswith("awx.awx.") for k in t) for p in plays for t in p["tasks"])
