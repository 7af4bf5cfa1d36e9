#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_device_bulk
short_description: Converge a whole fleet of IoT Hub devices in the fewest requests
version_added: 1.0.0
description:
  - Reconciles a declared list of device identities (and their twin tags and desired properties) with an IoT Hub.
  - Reads the current state with paged queries (a scan or C(deviceId IN [...]) lists, whichever costs fewer
    query pages), decides per device with the same plan as M(fleet.azure_iot.iothub_device), and writes only
    the devices that differ through the bulk registry API, at most 100 per call.
  - Parents are written before their children, so a new IoT Edge gateway and its leaf devices and nested edge
    devices can be declared in one task.
  - Every bulk entry is conditional on the etag that was read. A device changed by someone else in between
    (or missing from the lagging query index) is read again with GET and re-planned, not reported as a failure.
  - Devices whose identity must be rewritten are read with GET first when they use SAS keys, because a bulk
    update replaces the whole identity and keys that are not sent would be regenerated.
  - When some devices fail, the others are applied, the task fails with the list of failures, and running it
    again converges.
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot.iothub
  - fleet.azure_iot.retries
  - fleet.azure_iot.attributes
  - fleet.azure_iot.attributes.ACTIONGROUP_IOTHUB
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  devices:
    description:
      - The devices to converge. Each entry takes the options of M(fleet.azure_iot.iothub_device) (C(device_id),
        C(state), C(auth_type), C(primary_key), C(secondary_key), C(primary_thumbprint), C(secondary_thumbprint),
        C(status), C(status_reason), C(edge_enabled), C(parent)) plus C(tags) and C(desired_properties).
      - C(tags) and C(desired_properties) are dictionaries; only the keys given are managed, and a key set to
        V(null) is removed from the twin.
      - A C(parent) may be another entry of the list (it is written first) or a device that already exists.
      - Exactly one of O(devices) and O(tree) is required.
    type: list
    elements: dict
  tree:
    description:
      - The devices as a tree instead of a flat list, mutually exclusive with O(devices). It is a list of nodes,
        each a device entry as in O(devices) plus an optional C(children) list.
      - A node with children is an IoT Edge device (C(edge_enabled) defaults to V(true); V(false) with children
        is an error); its children get it as C(parent). A node without children is a leaf unless it says
        C(edge_enabled=true). At most five layers of edge devices.
    type: list
    elements: dict
  defaults:
    description:
      - Options merged into every entry of O(devices); an entry's own value wins. C(tags) and
        C(desired_properties) merge key by key.
    type: dict
    default: {}
  prune:
    description:
      - Delete the devices that match O(prune_query) but are not in O(devices).
    type: bool
    default: false
  prune_children:
    description:
      - Delete the devices whose parent is a declared IoT Edge device but which are not declared themselves
        (for example a sensor removed from a gateway's list). Devices elsewhere in the hub are never touched.
    type: bool
    default: false
  prune_query:
    description:
      - The WHERE clause of an IoT Hub query that selects the devices this task owns, for example
        C(tags.fleet = 'plant-7'). Required with O(prune=true).
    type: str
  batch_size:
    description:
      - Devices per bulk call, at most 100.
    type: int
    default: 100
  max_concurrency:
    description:
      - How many bulk calls or GETs run at the same time.
    type: int
    default: 4
seealso:
  - module: fleet.azure_iot.iothub_device
  - module: fleet.azure_iot.iothub_device_info
notes:
  - Registry operations are throttled per hub unit (100 per minute on S1, each device of a bulk call counting once;
    queries 20 pages per minute). The module retries throttled requests with back-off (see O(retry_budget_seconds)).
"""

EXAMPLES = r"""
- name: A gateway, a nested gateway and their sensors, tagged for pruning
  fleet.azure_iot.iothub_device_bulk:
    defaults:
      tags:
        fleet: plant-7
    devices:
      - device_id: plant-gw
        edge_enabled: true
      - device_id: line1-gw
        edge_enabled: true
        parent: plant-gw
      - device_id: line1-sensor-1
        parent: line1-gw
        desired_properties:
          telemetryInterval: 30
      - device_id: line1-sensor-2
        parent: line1-gw
    prune: true
    prune_query: "tags.fleet = 'plant-7'"

- name: Thousands of sensors from a variable
  fleet.azure_iot.iothub_device_bulk:
    devices: "{{ range(1, 5001) | map('string') | map('regex_replace', '^', 'sensor-') | map('community.general.dict_kv', 'device_id') | list }}"
    defaults:
      status: enabled
"""

RETURN = r"""
created:
  description: Ids of the devices created (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [line1-sensor-2]
updated:
  description: Ids of the devices whose identity or twin was updated.
  returned: always
  type: list
  elements: str
deleted:
  description: Ids of the devices deleted.
  returned: always
  type: list
  elements: str
unchanged:
  description: Ids of the declared devices that already matched.
  returned: always
  type: list
  elements: str
failed_devices:
  description:
    - The devices the hub refused, with its error. (Ansible reserves the result key C(failed) for the task
      status, so the list has this name.)
  returned: always
  type: list
  elements: dict
  contains:
    deviceId:
      description: The device id.
      type: str
    errorCode:
      description: The hub's error code, for example C(InvalidDeviceScope).
      type: str
    errorStatus:
      description: The hub's explanation.
      type: str
    operation:
      description: The bulk import mode that failed.
      type: str
edge_devices:
  description: Every declared IoT Edge device with its C(deviceScope) and its declared children.
  returned: always
  type: list
  elements: dict
  contains:
    device_id:
      description: The edge device.
      type: str
    device_scope:
      description: Its scope (V(null) in check mode for a device not created yet).
      type: str
    parent:
      description: Its parent's device id, if declared.
      type: str
    children:
      description: The device ids declared below it.
      type: list
      elements: str
requests:
  description: How many requests of each kind the task made.
  returned: always
  type: dict
  sample: {gets: 0, writes: 1, query_pages: 11, bulk_calls: 1, registry_operations: 100}
notes:
  description: Reconciliations along the way (a device that changed between read and write, an index that lagged).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk import BulkReconciler, validate_fleet
from ansible_collections.fleet.azure_iot.plugins.module_utils._deps import ValidationError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import IoTApiError
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec, format_validation_error
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import (
    IOTHUB_ARGS,
    ModuleFailure,
    build_hub_client,
    hide_plan_secrets,
    run_module,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import SECRET_FIELDS


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_specs(devices, defaults) -> list:
    """Validate every entry before any request; errors name the entry and the option."""
    if not isinstance(defaults, dict):
        raise ModuleFailure("defaults must be a dictionary of device options")
    specs, problems = [], []
    for i, entry in enumerate(devices):
        if not isinstance(entry, dict):
            problems.append(f"devices[{i}]: must be a dictionary with at least device_id")
            continue
        merged = {**defaults, **entry}
        for key in ("tags", "desired_properties"):  # dictionaries merge key by key; the entry wins
            if isinstance(defaults.get(key), dict) and isinstance(entry.get(key), dict):
                merged[key] = deep_merge(defaults[key], entry[key])
        label = f"devices[{i}] ({entry.get('device_id')})" if entry.get("device_id") else f"devices[{i}]"
        try:
            specs.append(DeviceSpec(**merged))
        except ValidationError as exc:
            problems.append(f"{label}: {format_validation_error(exc)}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ModuleFailure("Invalid input: " + "; ".join(problems[:10]) + more)
    return specs


def flatten_tree(tree) -> list:
    """Nested nodes -> flat device entries with parent and edge_enabled set; errors name the node's path."""
    out, problems = [], []

    def walk(nodes, path, parent):
        if not isinstance(nodes, list):
            problems.append(f"{path}: must be a list of device nodes")
            return
        for i, node in enumerate(nodes):
            where = f"{path}[{i}]"
            if not isinstance(node, dict):
                problems.append(f"{where}: must be a dictionary with at least device_id")
                continue
            node = dict(node)
            children = node.pop("children", None) or []
            label = f"{where} ({node.get('device_id')})"
            if children:
                if node.get("edge_enabled") is False:
                    problems.append(f"{label}: a leaf device (edge_enabled=false) cannot have children; only IoT "
                                    "Edge devices can be parents")
                node.setdefault("edge_enabled", True)
            if parent is not None:
                if node.get("parent") not in (None, parent):
                    problems.append(f"{label}: parent {node['parent']!r} contradicts its place below {parent!r}")
                node["parent"] = parent
            out.append(node)
            walk(children, f"{label}.children", node.get("device_id"))

    walk(tree, "tree", None)
    if problems:
        raise ModuleFailure("Invalid tree: " + "; ".join(problems[:10]))
    return out


def run(module: AnsibleModule) -> dict:
    p = module.params
    devices = p["devices"] if p["devices"] is not None else flatten_tree(p["tree"])
    for entry in list(devices) + [p["defaults"] or {}]:
        if isinstance(entry, dict):
            for k in SECRET_FIELDS:
                if isinstance(entry.get(k), str):
                    module.no_log_values.add(entry[k])
    specs = parse_specs(devices, p["defaults"])
    validate_fleet(specs, p["prune"], p["prune_query"], p["batch_size"], p["max_concurrency"])
    client = build_hub_client(p)
    rec = BulkReconciler(client, specs, prune=p["prune"], prune_query=p["prune_query"], batch_size=p["batch_size"],
                         max_concurrency=p["max_concurrency"], check_mode=module.check_mode,
                         prune_children=p["prune_children"])
    try:
        out = rec.run()
    except IoTApiError as exc:  # e.g. the retry budget ran out on a read: say what was applied before it
        out = rec.out
        done = set(out.created) | set(out.updated) | set(out.deleted) | set(out.unchanged)
        pending = sorted(s.device_id for s in specs if s.device_id not in done)
        raise ModuleFailure(
            f"{exc}. Applied before the failure: created {len(out.created)}, updated {len(out.updated)}, deleted "
            f"{len(out.deleted)}; not done: {len(pending)} device(s) ({', '.join(pending[:10])}"
            f"{', ...' if len(pending) > 10 else ''}). Run again to converge.",
            changed=bool(out.created or out.updated or out.deleted), created=sorted(out.created),
            updated=sorted(out.updated), deleted=sorted(out.deleted), unchanged=sorted(out.unchanged),
            failed_devices=out.failed, not_done=pending, requests=client.counters.as_dict(),
            error=exc.to_dict()) from None
    hide_plan_secrets(module, rec.plans.values())
    result = {
        "changed": bool(out.created or out.updated or out.deleted),
        "created": sorted(out.created), "updated": sorted(out.updated), "deleted": sorted(out.deleted),
        "unchanged": sorted(out.unchanged), "failed_devices": out.failed, "edge_devices": rec.edge_devices(),
        "requests": client.counters.as_dict(),
        "notes": out.notes,
    }
    if module._diff:
        result["diff"] = rec.diffs()
    if out.failed:
        first = "; ".join(f"{f['deviceId']}: {f['errorCode']} ({f['operation']})" for f in out.failed[:5])
        raise ModuleFailure(f"{len(out.failed)} device(s) failed, the others were applied (created "
                            f"{len(out.created)}, updated {len(out.updated)}, deleted {len(out.deleted)}); run again "
                            f"after fixing them: {first}", **result)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            IOTHUB_ARGS,
            devices=dict(type="list", elements="dict"),
            tree=dict(type="list", elements="dict"),
            prune_children=dict(type="bool", default=False),
            defaults=dict(type="dict", default={}),
            prune=dict(type="bool", default=False),
            prune_query=dict(type="str"),
            batch_size=dict(type="int", default=100),
            max_concurrency=dict(type="int", default=4),
        ),
        supports_check_mode=True,
        required_one_of=[("devices", "tree")],
        mutually_exclusive=[("devices", "tree")],
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
