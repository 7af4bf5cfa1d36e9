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
  - fleet.azure_iot._iothub
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_IOTHUB
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: partial
    details: Every option is idempotent except C(rotate_keys) in O(devices) entries, which rotates keys on every run that sets it (by design).
options:
  devices:
    description:
      - The devices to converge. An entry is a device id (a string), or a dictionary that takes the options of
        M(fleet.azure_iot.iothub_device) (C(device_id),
        C(state), C(auth_type), C(primary_key), C(secondary_key), C(primary_thumbprint), C(secondary_thumbprint),
        C(status), C(status_reason), C(edge_enabled), C(parent), C(rotate_keys)) plus C(tags) and
        C(desired_properties).
      - C(rotate_keys) (V(primary), V(secondary) or V(swap), in an entry or in O(defaults) for the whole fleet)
        rotates the device's SAS keys through the bulk registry, in batches, like the option of
        M(fleet.azure_iot.iothub_device) - every run rotates again, so run it as its own task (see the key rotation
        guide). Each rotation is decided once per task; after a conflict or a lost answer the module writes the
        keys it decided, never a second rotation. A device that does not exist yet is created with new keys.
      - C(tags) and C(desired_properties) are dictionaries; only the keys given are managed, and a key set to
        V(null) is removed from the twin.
      - A C(parent) may be another entry of the list (it is written first) or a device that already exists.
      - Exactly one of O(devices) and O(tree) is required.
    type: list
    elements: raw
  devices_file:
    description:
      - The fleet as a file on the host that runs the task, instead of O(devices) or O(tree) (mutually exclusive),
        for fleets from a manufacturing database or a CSV export. It is read line by line and never passes through
        Ansible's templating or the module's arguments. Each entry is merged with O(defaults).
      - JSON Lines (C(.jsonl), C(.ndjson), C(.json)) hold one entry per line with the keys of a O(devices) entry, or
        a device id string. CSV (C(.csv)) has a header row whose columns are the entry keys (C(device_id),
        C(status), C(parent), C(edge_enabled), ...) and C(tags.<name>) or C(desired_properties.<path>) for twin
        values (dots nest). An empty cell is an option not given (not managed); a twin cell that reads as JSON (a
        number, V(true), V(false), V(null) which removes the key, an object) is that value, else the text.
      - A C(.gz) file is read through gzip; a byte order mark and CRLF line ends are accepted. Every problem (a
        missing file, a bad line, an unknown column, a device declared twice) fails before any request, naming the
        file, the line and the fix.
    type: path
    version_added: 1.2.0
  report_ids_limit:
    description:
      - The most ids each of RV(created), RV(updated), RV(deleted), RV(unchanged) and RV(failed_devices) holds (the
        first in sorted order); RV(counts) counts them all. A fleet of 100,000 devices then reports in a few
        kilobytes, in every AWX job event.
    type: int
    default: 1000
    version_added: 1.2.0
  report_file:
    description:
      - A path on the host that runs the task where the full outcome is written as JSON Lines, one line per device
        (C(id), C(action) one of C(create), C(update), C(delete), C(none), C(failed), and C(error)), so that a
        pipeline can archive it. Replaced atomically.
    type: path
    version_added: 1.2.0
  progress_file:
    description:
      - A path on the host that runs the task where a small JSON document says how the task is doing, replaced
        atomically every 2 seconds while it runs (and a last time when it ends, with C(phase) V(done) or
        V(failed)) - C(phase) (V(start), V(read), V(plan), V(write), V(done), V(failed)), C(done) and C(total)
        (devices settled and to settle), C(bulk_calls), C(throttled) (429 answers met), C(waited_seconds) (for the
        hub's quota), C(eta_seconds) (from the rate since the first write; V(null) until then) and
        C(elapsed_seconds). It holds counts only, never an id or a key.
      - Modules cannot print while they run; run the task with C(async) and read this file between polls to
        watch a long run (docs/fleet-jobs.md has the play). A path that cannot be written fails the task before
        any request.
    type: path
    version_added: 1.2.0
  hub_key_filter:
    description:
      - With O(devices_file) sharded by hub (a C(hub) key on each JSON line, or a C(hub) column), the name of the hub
        this task converges - only its lines are kept (the others are skipped before any request), each without the
        C(hub) key. Every line must name a hub. Without this option, a line with a C(hub) key is an error.
      - One play then converges every hub in parallel, one host per hub (the fleet.azure_iot.iothub inventory
        plugin with C(host_type=hub)), with O(hub_key_filter) set to the host variable C(iothub_hub_name). Each hub
        has its own quota; two tasks on one hub share it (see RV(pacing) for the 429s they meet).
      - For a devices list, the fleet.azure_iot.shard filter does the same.
    type: str
    version_added: 1.2.0
  devices_file_format:
    description: The format of O(devices_file) when its name does not say it.
    type: str
    choices: [jsonl, csv]
    version_added: 1.2.0
  tree:
    description:
      - The devices as a tree instead of a flat list, mutually exclusive with O(devices). It is a list of nodes,
        each a device entry as in O(devices) plus an optional C(children) list (whose entries may also be plain
        device ids).
      - A node with a C(children) key, even an empty list, is an IoT Edge device (C(edge_enabled) defaults to
        V(true); V(false) with children is an error); its children get it as C(parent). A node without it is a
        leaf unless it says C(edge_enabled=true). At most five layers of edge devices.
      - Secrets in a node's C(deployment) (registry passwords, env values named like a password, secret, key or
        token) are masked in the result; the role applies the real values from the tree.
      - A node may carry C(deployment), a deployment manifest. This module does not apply it; it returns it in
        RV(edge_devices) for M(fleet.azure_iot.iothub_edge_modules) (the role C(fleet.azure_iot.edge_hierarchy)
        does that). A node with a deployment is an edge device.
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
      - The query index lags behind writes, so each candidate's twin is read again with GET and O(prune_query) is
        evaluated against it. A device that no longer matches (another job re-tagged it moments ago) is left alone
        with a note. The same holds in check mode, and when a delete meets a conflict (the device is re-checked,
        never deleted harder).
    type: bool
    default: false
  prune_children:
    description:
      - Delete the undeclared direct children of the declared IoT Edge devices whose children this task
        declares (for example a sensor removed from a gateway's list).
      - Which gateways that is. The roots of the declared devices (their C(parent) is not declared in this task),
        the gateways at least one declared device names as C(parent), and, with O(tree), the nodes that carry a
        C(children) list (V([]) included). A nested gateway declared without any of its children keeps them.
      - Devices elsewhere in the hub, and grandchildren, are never touched; see O(prune_descendants).
      - Each candidate is confirmed with a GET of its twin before it is deleted; one that another task has moved
        to another gateway (even within the query index lag) is left alone.
    type: bool
    default: false
  prune_descendants:
    description:
      - With O(prune_children), an undeclared IoT Edge device that is pruned takes its whole subtree with it
        (children are deleted before their parents). This is what the role C(fleet.azure_iot.edge_hierarchy) does when a
        gateway is removed from its tree.
      - Without it, pruning a gateway that still has children fails, as O(orphan_children) describes.
    type: bool
    default: false
    version_added: 1.1.0
  orphan_children:
    description:
      - Delete IoT Edge devices even when devices that this task neither deletes nor moves still name them as
        their parent.
      - By default such a run fails before any write and names the children, because they would be left pointing
        at a C(deviceScope) that no longer exists.
      - What the check cannot see. A gateway's children are found with a query, and the query index lags (seconds,
        up to minutes), and nothing strongly consistent lists them. A child attached within that lag is invisible
        before the delete. After deleting gateways the module queries their children once more and fails,
        naming every child it finds then; a child the index still does not show is not found.
    type: bool
    default: false
    version_added: 1.1.0
  max_deletes:
    description:
      - The most devices this run may delete (declared C(state=absent) and pruned together). A run that would
        delete more fails before any write and says how many, with the first ids.
      - When not set, a prune that would delete every device its selector matches (O(prune_query), or all the
        children O(prune_children) looks at) is refused; that is the mark of an empty or wrong device list.
        So is a prune of more than 10 devices that is also more than 10 % of what the selectors match (a device
        list that a failed lookup cut short); the message names both counts and the first ids.
        Set O(max_deletes) to the number you mean to delete to allow it.
    type: int
    version_added: 1.1.0
  prune_query:
    description:
      - The WHERE clause of an IoT Hub query that selects the devices this task owns, for example
        C(tags.fleet = 'plant-7'). Required with O(prune=true), and an error without it.
      - It is read before any request, and evaluated again against each candidate's twin. It may use comparisons, C(IN),
        C(AND), C(OR), C(NOT), and the functions C(IS_DEFINED), C(IS_NULL), C(ARRAY_CONTAINS), C(STARTS_WITH) and
        C(ENDS_WITH). A quote inside a string is written C(\'), a reserved word used as a name C([[name]]).
    type: str
  diff_detail:
    description:
      - With C(--diff), V(summary) shows every changed device in full up to 50 of them; above that, a summary (how
        many are created, updated and deleted) and the first 50 in full. V(full) always shows every device.
      - V(full) holds every changed device's plan until the task ends, about 2.4 KB each (240 MB more for a first
        apply of 100,000 devices); V(summary) holds at most 2,000.
    type: str
    choices: [summary, full]
    default: summary
    version_added: 1.1.0
  hub_sku:
    description:
      - The hub's tier, for pacing. Bulk calls and query pages are spread under its per-minute quotas (registry
        operations, each device of a bulk call counting once; query pages) instead of running into 429s and
        sleeping. F1, B1, B2, S1 and S2 allow 100 registry operations and 20 query pages per minute per unit;
        B3 and S3 allow 5,000 and 1,000.
      - Without it the quota is learnt from the first 429 (what went through in the minute before it, at least
        one S1 unit's quota), and the rest of the run is paced under it; each minute without a 429 lets the learnt
        quota grow back by half, until a grown quota meets a 429 and stays. With it, the stated quota stands, and a 429 (another job sharing the hub) is retried
        with the usual backoff. Jobs that share a hub should each state their share through O(hub_units).
    type: str
    choices: [F1, B1, B2, B3, S1, S2, S3]
    version_added: 1.1.0
  hub_units:
    description:
      - The number of units of the hub (the quotas scale with it), with O(hub_sku).
    type: int
    default: 1
    version_added: 1.1.0
  storage_container_uri:
    description:
      - A SAS URL of an Azure Blob Storage container that IoT Hub can reach, with read, write, list and delete
        rights (C(sp=rwdl)). With it, large fleets are read through an export job and written through an import
        job (IoT Hub's own engine for fleets of 100,000 devices and more) instead of query pages and bulk calls.
      - The export blob may hold the devices' keys (they are exported when an identity may be rewritten, so
        that it keeps them); this module deletes its blobs after reading them. Without this option nothing
        changes. Needs the C(azure-storage-blob) Python package (imported only on this path).
    type: str
    version_added: 1.1.0
  job_mode:
    description:
      - V(auto) reads through an export job when O(job_threshold_devices) devices or more are declared, and writes
        through an import job when O(job_threshold_writes) devices or more change. V(always) uses jobs for every
        read and write; V(never) ignores O(storage_container_uri).
      - Only one import or export job runs per hub; a job already running is waited for (up to
        O(retry_budget_seconds)), never cancelled.
    type: str
    choices: [auto, always, never]
    default: auto
    version_added: 1.1.0
  job_threshold_devices:
    description:
      - With O(job_mode=auto), read through an export job from this many declared devices on.
    type: int
    default: 20000
    version_added: 1.1.0
  job_threshold_writes:
    description:
      - With O(job_mode=auto), write through an import job from this many changed devices on (fewer go in bulk
        calls of 100).
    type: int
    default: 5000
    version_added: 1.1.0
  job_timeout_seconds:
    description:
      - How long to wait for one job to end (IoT Hub documents about a minute per 100 devices imported).
    type: float
    default: 3600
    version_added: 1.1.0
  return_secrets:
    description:
      - Return the connection strings of the devices whose keys this task rotated, in RV(secrets). Without it,
        every key is masked in the output.
    type: bool
    default: false
    version_added: 1.2.0
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
  - 'Rights: queries need C(ServiceConnect) (the security doc; an SDK sample says C(RegistryRead)), GETs of
    identities C(RegistryRead), bulk calls C(RegistryWrite), and bulk entries or PATCHes that carry tags or desired
    properties C(ServiceConnect) too. Use C(iothubowner) or a policy with C(RegistryWrite) and C(ServiceConnect);
    Entra roles C(IoT Hub Registry Contributor) and C(IoT Hub Twin Contributor). A call refused for a missing right
    stops the run and names the right.'
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
    max_deletes: 10           # the most this nightly run may delete; more fails before any write

- name: Thousands of sensors, given by id (an entry may be a device id instead of a dictionary)
  fleet.azure_iot.iothub_device_bulk:
    devices: "{{ range(1, 5001) | map('string') | map('regex_replace', '^', 'sensor-') | list }}"
    defaults:
      status: enabled
      tags:
        batch: sensors-2026
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
counts:
  description: How many devices each list holds in full (the lists stop at O(report_ids_limit) ids).
  returned: always
  type: dict
  version_added: 1.2.0
  sample: {created: 0, updated: 12, deleted: 0, unchanged: 99988, failed_devices: 0}
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
    layer:
      description:
        - Its real layer in the hub once the task is done (1 for a top-layer gateway). A declared gateway below an
          existing gateway that the task does not declare counts that gateway's chain, so a run over a subtree gets
          the layers right. The list is sorted by it.
      type: int
      version_added: 1.1.0
    deployment:
      description: The deployment manifest its tree node carries, or V(null).
      type: dict
      version_added: 1.1.0
requests:
  description: How many requests of each kind the task made.
  returned: always
  type: dict
  sample: {gets: 0, writes: 1, query_pages: 11, bulk_calls: 1, registry_operations: 100}
pacing:
  description:
    - How the task paced itself under the hub's quotas. The per-minute quotas it used (stated by O(hub_sku) and
      O(hub_units), learnt from a 429, or V(null) when unknown and never met), the wall-clock seconds during
      which a call waited for them (concurrent waits count once), and how many 429 answers it met.
  returned: always
  type: dict
  version_added: 1.1.0
  sample: {registry_operations_per_minute: 1000, query_pages_per_minute: 200, waited_seconds: 58.2, throttled_responses: 0}
timings:
  description:
    - Where the task's time went, in seconds - C(read) (the declaration and O(devices_file), queries, GETs and export
      jobs), C(plan) (planning and the guard rails), C(write) (bulk calls, twin PATCHes and import jobs), each
      without C(wait) (waiting for the hub's quota, as in RV(pacing)), and C(total) (the module's wall time; the
      rest is setup and the result).
  returned: always
  type: dict
  version_added: 1.2.0
  sample: {read: 12.4, plan: 3.1, write: 40.2, wait: 122.0, total: 178.3}
jobs:
  description:
    - The import and export jobs the task ran (with O(storage_container_uri)) - id, type, status, seconds (from
      creation to its end, as polled) and devices (what the job processed - an export the whole registry, an
      import the lines given to it).
  returned: always
  type: list
  elements: dict
  version_added: 1.1.0
  sample: [{id: 0a1b..., type: export, status: completed, seconds: 3.2, devices: 100000}]
secrets:
  description:
    - With O(return_secrets=true), the devices whose keys this task rotated, with the connection strings of the keys
      the hub now holds. A device whose rotation failed is listed with the keys read back from the hub (its write
      may have landed unanswered), so the caller never loses the live key.
  returned: when O(return_secrets=true) and not in check mode
  type: list
  elements: dict
  version_added: 1.2.0
  contains:
    device_id:
      description: The device.
      type: str
    connection_string:
      description: The connection string with its primary key.
      type: str
    secondary_connection_string:
      description: The connection string with its secondary key.
      type: str
notes:
  description: Reconciliations along the way (a device that changed between read and write, an index that lagged).
  returned: always
  type: list
  elements: str
"""

import json
import os
import sys
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.reconcile import BulkReconciler
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.input import (
    BulkOptions,
    parse_devices_file,
    parse_fleet,
    validate_fleet,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import IoTApiError, ModuleFailure
from ansible_collections.fleet.azure_iot.plugins.module_utils._jobs import FleetJobs
from ansible_collections.fleet.azure_iot.plugins.module_utils._pacing import Pacer
from ansible_collections.fleet.azure_iot.plugins.module_utils._progress import RunProgress
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import (
    connection_strings,
    device_secrets,
    hide_document_secrets,
    secret_mask,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS, run_module


def rotated_secrets(module: AnsibleModule, client, rec: BulkReconciler) -> dict:
    """``secrets``: the connection strings of the rotated devices (with return_secrets), unmasked; {} otherwise."""
    if not module.params["return_secrets"] or module.check_mode:
        return {}
    out = []
    for ident in rec.rotated_identities():
        for key in device_secrets(ident):
            secret_mask(module).reveal(key)  # asked for: every other key stays masked
        out.append({"device_id": ident["deviceId"], **connection_strings(client.host, ident)})
    return {"secrets": out}


def outcome_lists(out, limit: int) -> dict:
    """The result's id lists, each the first LIMIT ids in sorted order, and ``counts`` of them all: one refused
    device in a fleet of 100,000 does not print every unchanged id."""
    failed = sorted(out.failed, key=lambda f: f["deviceId"])
    return {"created": sorted(out.created)[:limit], "updated": sorted(out.updated)[:limit],
            "deleted": sorted(out.deleted)[:limit], "unchanged": sorted(out.unchanged)[:limit],
            "failed_devices": failed[:limit],
            "counts": {"created": len(out.created), "updated": len(out.updated), "deleted": len(out.deleted),
                       "unchanged": len(out.unchanged), "failed_devices": len(out.failed)}}


def write_report(path: str, specs, out) -> None:
    """``report_file``: the full per-device outcome as JSON Lines (id, action, error), replaced atomically."""
    failed = {f["deviceId"]: f for f in out.failed}
    ids = sorted({s.device_id for s in specs} | out.created | out.updated | out.deleted | set(failed))
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for did in ids:
                action = ("failed" if did in failed else "create" if did in out.created else "update"
                          if did in out.updated else "delete" if did in out.deleted else "none")
                err = failed.get(did)
                fh.write(json.dumps({"id": did, "action": action,
                                     "error": f"{err['errorCode']}: {err.get('errorStatus') or ''}" if err else None})
                         + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ModuleFailure(f"report_file: cannot write {path!r}: {exc.strerror or exc}") from None


def run(module: AnsibleModule) -> dict:
    p = module.params
    live: dict = {}  # the reconciler and the client once they exist: the progress file's live figures
    progress = RunProgress(p["progress_file"], snapshot=lambda: figures(live))
    try:
        progress.start()  # the first write of the file, before anything else: a bad path fails here
    except OSError as exc:
        raise ModuleFailure(f"progress_file: cannot write {p['progress_file']!r}: {exc.strerror or exc}; give a path "
                            "in a writable folder on the host that runs the task") from None
    try:
        return prepare(module, progress, live)
    finally:  # the last document says done or failed (bad input included), so a watcher knows when to stop
        progress.finish(failed=sys.exc_info()[0] is not None)


def figures(live: dict) -> dict:
    """The live figures of the progress file."""
    rec, client = live.get("rec"), live.get("client")
    if rec is None or client is None:
        return {}
    pacer = client.pacer
    done = rec.settled_count()
    return {"done": done, "total": rec.total, "bulk_calls": client.counters.bulk_calls,
            "throttled": pacer.registry.throttled + pacer.query.throttled, "waited_seconds": pacer.registry.waited,
            "quota_eta": pacer.registry.eta(rec.total - done)}


def prepare(module: AnsibleModule, progress: RunProgress, live: dict) -> dict:
    p = module.params
    if p["report_ids_limit"] < 0:
        raise ModuleFailure("report_ids_limit must be 0 or more")
    if p["hub_key_filter"] is not None and p["devices_file"] is None:
        raise ModuleFailure("hub_key_filter keeps the lines of one hub from devices_file; for a devices list use the "
                            "fleet.azure_iot.shard filter (devices: \"{{ fleet | fleet.azure_iot.shard(iothub_hub_name) }}\")")
    hide_document_secrets(module, p["tree"])  # the deployments of tree nodes: registry passwords, secret env values
    with progress.measure("read"):  # the declaration is read and checked: part of the read phase
        if p["devices_file"] is not None:  # read line by line here, never through Ansible's templating
            specs = parse_devices_file(p["devices_file"], p["devices_file_format"], p["defaults"],
                                       secret_mask(module).add, p["hub_key_filter"])
            declares_children, deployments = set(), {}
        else:
            specs, declares_children, deployments = parse_fleet(p["devices"], p["tree"], p["defaults"],
                                                                secret_mask(module).add)
        options = BulkOptions.from_params(p, module.check_mode, module._diff)
        validate_fleet(specs, options, f"devices_file {p['devices_file']!r}" if p["devices_file"] is not None
                       else "tree" if p["tree"] is not None else "devices")
    client = build_hub_client(p, module.warn)
    if p["hub_units"] < 1:
        raise ModuleFailure("hub_units must be 1 or more")
    client.pacer = Pacer(p["hub_sku"], p["hub_units"])
    jobs = None
    if p["storage_container_uri"]:
        if p["job_mode"] != "never":
            jobs = FleetJobs(client, p["storage_container_uri"], p["job_mode"], p["job_threshold_devices"],
                             p["job_threshold_writes"], p["retry_budget_seconds"], p["job_timeout_seconds"],
                             uuid.uuid4().hex[:12])
    elif p["job_mode"] == "always":
        raise ModuleFailure("job_mode=always needs storage_container_uri (a SAS URL of a blob container)")
    rec = BulkReconciler(client, specs, options, declares_children=declares_children, deployments=deployments,
                         jobs=jobs, hide=secret_mask(module).add, progress=progress)
    live.update(rec=rec, client=client)
    return converge(module, client, rec, jobs, specs)


def converge(module: AnsibleModule, client, rec: BulkReconciler, jobs, specs) -> dict:
    p = module.params
    try:
        out = rec.run()
    except IoTApiError as exc:  # e.g. the retry budget ran out on a read: say what was applied before it
        out = rec.out
        done = out.created | out.updated | out.deleted | out.unchanged
        pending = sorted(s.device_id for s in specs if s.device_id not in done)
        raise ModuleFailure(
            f"{exc}. Applied before the failure: created {len(out.created)}, updated {len(out.updated)}, deleted "
            f"{len(out.deleted)}; not done: {len(pending)} device(s) ({', '.join(pending[:10])}"
            f"{', ...' if len(pending) > 10 else ''}). Run again to converge.",
            changed=out.changed, **outcome_lists(out, p["report_ids_limit"]), not_done=pending[:p["report_ids_limit"]],
            requests=client.counters.as_dict(), timings=rec.progress.timings(), pacing=client.pacer.report(),
            jobs=jobs.runner.records if jobs is not None else [],
            error=exc.to_dict(), **rotated_secrets(module, client, rec)) from None
    for warning in sorted(set(out.warnings)):
        module.warn(warning)
    if p["report_file"]:
        write_report(p["report_file"], specs, out)
    result = {
        "changed": out.changed, **outcome_lists(out, p["report_ids_limit"]), "edge_devices": rec.edge_devices(),
        "requests": client.counters.as_dict(),
        "notes": out.notes,
        "jobs": jobs.runner.records if jobs is not None else [],
        "pacing": client.pacer.report(),
        "timings": rec.progress.timings(),
    }
    result.update(rotated_secrets(module, client, rec))
    if module._diff:
        result["diff"] = rec.diffs()
    if out.failed:
        first = "; ".join(f"{f['deviceId']}: {f['errorCode']} ({f['operation']})"
                          for f in sorted(out.failed, key=lambda f: f["deviceId"])[:5])
        raise ModuleFailure(f"{len(out.failed)} device(s) failed, the others were applied (created "
                            f"{len(out.created)}, updated {len(out.updated)}, deleted {len(out.deleted)}); run again "
                            f"after fixing them: {first}", **result)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            IOTHUB_ARGS,
            devices=dict(type="list", elements="raw"),
            tree=dict(type="list", elements="dict"),
            devices_file=dict(type="path"),
            devices_file_format=dict(type="str", choices=["jsonl", "csv"]),
            report_ids_limit=dict(type="int", default=1000),
            report_file=dict(type="path"),
            progress_file=dict(type="path"),
            hub_key_filter=dict(type="str", no_log=False),  # a hub name, not a secret
            prune_children=dict(type="bool", default=False),
            prune_descendants=dict(type="bool", default=False),
            orphan_children=dict(type="bool", default=False),
            max_deletes=dict(type="int"),
            diff_detail=dict(type="str", choices=["summary", "full"], default="summary"),
            storage_container_uri=dict(type="str", no_log=True),
            job_mode=dict(type="str", choices=["auto", "always", "never"], default="auto"),
            job_threshold_devices=dict(type="int", default=20000),
            job_threshold_writes=dict(type="int", default=5000),
            job_timeout_seconds=dict(type="float", default=3600),
            hub_sku=dict(type="str", choices=["F1", "B1", "B2", "B3", "S1", "S2", "S3"]),
            hub_units=dict(type="int", default=1),
            defaults=dict(type="dict", default={}),
            prune=dict(type="bool", default=False),
            prune_query=dict(type="str"),
            batch_size=dict(type="int", default=100),
            max_concurrency=dict(type="int", default=4),
            return_secrets=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        required_one_of=[("devices", "tree", "devices_file")],
        mutually_exclusive=[("devices", "tree", "devices_file")],
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
