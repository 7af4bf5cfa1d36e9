# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory plugin fleet.azure_iot.iothub: IoT Hub devices (the gateways, by default) or hubs as Ansible hosts."""

from __future__ import annotations

DOCUMENTATION = r"""
name: iothub
short_description: IoT Hub devices (IoT Edge gateways by default) or whole hubs as Ansible hosts
version_added: 1.2.0
description:
  - With O(host_type=device) (the default), the devices of one IoT Hub become hosts, by default its IoT Edge devices
    (the gateways a play configures), read with paged queries. Each host carries the device's real place in the hub -
    its parent and its layer are computed from the hub's scopes, never from a declaration - in the groups
    C(edge_layer_1) to C(edge_layer_5) and C(children_of_<gateway>) (every gateway with at least one child among the
    hosts, the name sanitised as Ansible does).
  - "Host variables - C(iothub_device_id), C(iothub_device_scope), C(iothub_parent) (the parent's device id, V(null)
    for a top-layer gateway), C(iothub_layer), C(iothub_tags), C(iothub_status), C(iothub_connection_state), C(iothub_edge)
    and, with O(host_tag), C(ansible_host)."
  - With O(host_type=hub), each hub listed in O(hubs) becomes a host of the group C(iothub_hubs), so that a play runs
    one host per hub with C(forks) (and AWX job slicing) - the unit of parallel work, as IoT Hub's quotas are per hub.
    Host variables - C(iothub_hub_name), C(iothub_hostname), and C(iothub_connection_string_env) or
    C(iothub_connection_string) (kept vaulted), and C(iothub_ca_path) when the hub names one.
  - The inventory file's name must end in C(.iothub.yml) or C(.iothub.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin.
    type: str
    required: true
    choices: [fleet.azure_iot.iothub]
  host_type:
    description: V(device) - the devices of one hub are the hosts; V(hub) - the hubs of O(hubs) are the hosts.
    type: str
    choices: [device, hub]
    default: device
  filter:
    description:
      - The WHERE clause of the device query that selects the hosts (O(host_type=device)), for example
        C(capabilities.iotEdge = true AND tags.site = 'plant-7'). The layers and parents are computed from every
        IoT Edge device of the hub, whatever the filter.
    type: str
    default: capabilities.iotEdge = true
  host_tag:
    description:
      - The twin path whose value becomes C(ansible_host), for example V(tags.host). A device without it gets no
        C(ansible_host). A path that no host has is an error (a typo would otherwise leave every host unreachable
        without a word).
    type: str
  hubs:
    description:
      - With O(host_type=hub), the hubs - each C(name) (the host name in the inventory) and either
        C(connection_string_env) (the name of the environment variable holding that hub's connection string) or
        C(connection_string), which must be vaulted (C(!vault)) - a plain secret in the file is refused; and
        optionally C(ca_path), the certificate authorities to trust for that hub (an emulator's C(ca.pem)).
    type: list
    elements: dict
    default: []
  connection_string:
    description:
      - Connection string of a shared access policy with C(RegistryRead) and C(ServiceConnect) (queries), for
        O(host_type=device). Vault it, or leave it unset and use the environment.
    type: str
    env:
      - name: IOTHUB_CONNECTION_STRING
  hostname:
    description: Host name of the hub, with O(auth_mode=entra).
    type: str
    env:
      - name: IOTHUB_HOSTNAME
  auth_mode:
    description: V(sas) (from O(connection_string)) or V(entra) (azure-identity's C(DefaultAzureCredential)).
    type: str
    choices: [sas, entra]
  ca_path:
    description: A PEM file of certificate authorities to trust, for example the emulator's C(ca.pem).
    type: path
    env:
      - name: IOTHUB_CA_PATH
  validate_certs:
    description: Whether to verify the TLS certificate of the service.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each HTTP request.
    type: float
    default: 30
  max_retries:
    description: How many times a throttled (429) or failed query page is retried, with backoff.
    type: int
    default: 8
  retry_budget_seconds:
    description: The most seconds spent waiting between retries.
    type: float
    default: 300
notes:
  - Query pages count against the hub's query quota (20 pages a minute per S1 unit); turn on the inventory cache
    (O(cache=true)) for inventories refreshed often.
  - The plugin runs on the controller and needs the collection's Python requirements there (httpx).
"""

EXAMPLES = r"""
# gateways.iothub.yml: the IoT Edge gateways of one hub, by layer, reachable at the address in their twin tag
plugin: fleet.azure_iot.iothub
host_tag: tags.host
keyed_groups:
  - key: iothub_tags.site | default('none')
    prefix: site
compose:
  ansible_user: "'azureuser'"

# hubs.iothub.yml: one host per hub, for a play that converges each hub's share of the fleet in parallel
plugin: fleet.azure_iot.iothub
host_type: hub
hubs:
  - name: hub-eu-1
    connection_string_env: HUB_EU_1_CONNECTION_STRING
  - name: hub-us-1
    connection_string: !vault |
      $ANSIBLE_VAULT;1.1;AES256
      ...
"""

import os
import re

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import FleetError
from ansible_collections.fleet.azure_iot.plugins.module_utils._topology import (
    MAX_EDGE_DEPTH,
    chain_above,
    edge_scope,
    hub_parent,
)

VAULTED_TYPES = ("EncryptedString", "AnsibleVaultEncryptedUnicode")  # ansible-core >= 2.19, and before
EDGE_QUERY = "SELECT * FROM devices WHERE capabilities.iotEdge = true"
HOST_NAME_RE = re.compile(r"HostName=([^;]+)", re.IGNORECASE)
display = Display()


def hub_layers(edges, hosts):
    """{device id: (parent id or None, layer)} of HOSTS (query twins), from EDGES (every IoT Edge twin of the hub):
    the parent is the edge device that owns the host's parent scope; the layer counts the gateways above, plus
    one.  A chain that loops or runs deeper than the hub allows is cut where it does."""
    by_id = {t["deviceId"]: t for t in edges}
    for t in hosts:
        by_id.setdefault(t["deviceId"], t)

    def parent_of(did):
        return hub_parent(by_id.get(did), by_id.get)
    out = {}
    for t in hosts:
        chain, _cycle = chain_above(t["deviceId"], parent_of)
        out[t["deviceId"]] = (chain[0] if chain else None, min(len(chain), MAX_EDGE_DEPTH + 1) + 1)
    return out


def twin_path(twin, path):
    cur = twin
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "fleet.azure_iot.iothub"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".iothub.yml", ".iothub.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        config = self._read_config_data(path)
        unknown = sorted(set(config) - set(self._options))
        if unknown:
            raise AnsibleParserError(f"{path}: unknown option(s) {', '.join(unknown)}; the options are "
                                     f"{', '.join(sorted(self._options))} (ansible-doc -t inventory "
                                     "fleet.azure_iot.iothub)")
        if self.get_option("host_type") == "hub":
            self._hubs(self.get_option("hubs"))
            return
        key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        data = None
        if use_cache:
            try:
                data = self._cache[key]
            except KeyError:
                data = None
        if data is None:
            data = self._read_hub()
            if self.get_option("cache"):
                self._cache[key] = data
        self._devices(data["edges"], data["hosts"])

    # ------------------------------------------------------------------ hubs
    def _hubs(self, hubs):
        self.inventory.add_group("iothub_hubs")
        for i, hub in enumerate(hubs or []):
            where = f"hubs[{i}]"
            if not isinstance(hub, dict) or not hub.get("name"):
                raise AnsibleParserError(f"{where}: each hub needs a name (the host name) and connection_string_env "
                                         "or a vaulted connection_string")
            unknown = sorted(set(hub) - {"name", "connection_string_env", "connection_string", "ca_path"})
            if unknown:
                raise AnsibleParserError(f"{where}: unknown key(s) {', '.join(unknown)}; a hub takes name, "
                                         "connection_string_env or connection_string, and ca_path")
            env_name, vaulted = hub.get("connection_string_env"), hub.get("connection_string")
            if bool(env_name) == (vaulted is not None):
                raise AnsibleParserError(f"{where} ({hub['name']}): give exactly one of connection_string_env (the "
                                         "name of an environment variable) and a vaulted connection_string")
            if vaulted is not None and type(vaulted).__name__ not in VAULTED_TYPES:
                raise AnsibleParserError(f"{where} ({hub['name']}): connection_string is a plain secret in the "
                                         "inventory file; vault it (ansible-vault encrypt_string) or use "
                                         "connection_string_env")
            text = os.environ.get(env_name, "") if env_name else str(vaulted)
            if env_name and not text.strip():
                raise AnsibleParserError(f"{where} ({hub['name']}): the environment variable {env_name} is not set "
                                         "(or empty); export that hub's connection string in it")
            found = HOST_NAME_RE.search(text)
            if not found:
                raise AnsibleParserError(f"{where} ({hub['name']}): the connection string has no HostName=...")
            name = hub["name"]
            self.inventory.add_host(name, group="iothub_hubs")
            self.inventory.set_variable(name, "iothub_hub_name", name)
            self.inventory.set_variable(name, "iothub_hostname", found.group(1))
            if hub.get("ca_path"):
                self.inventory.set_variable(name, "iothub_ca_path", hub["ca_path"])
            if env_name:
                self.inventory.set_variable(name, "iothub_connection_string_env", env_name)
            else:
                self.inventory.set_variable(name, "iothub_connection_string", vaulted)  # stays vaulted

    # ------------------------------------------------------------------ devices
    def _read_hub(self):
        """Every IoT Edge twin (the layers) and the hosts' twins, by paged queries."""
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client  # needs httpx

        params = {name: self.get_option(name) for name in ("connection_string", "hostname", "auth_mode", "ca_path",
                                                           "validate_certs", "timeout", "max_retries",
                                                           "retry_budget_seconds")}
        params["retry_backoff_seconds"] = None
        if params["connection_string"] is not None and not isinstance(params["connection_string"], str):
            params["connection_string"] = str(params["connection_string"])  # a vaulted value, decrypted here
        where = (self.get_option("filter") or "").strip()
        if not where:
            raise AnsibleParserError("filter is empty; leave it out for the IoT Edge devices, or give a WHERE clause")
        try:
            client = build_hub_client(params, display.warning)
            edges = list(client.query(EDGE_QUERY))
            query = "SELECT * FROM devices WHERE " + where
            hosts = edges if query == EDGE_QUERY else list(client.query(query))
        except FleetError as exc:
            raise AnsibleError(f"fleet.azure_iot.iothub inventory: {exc}") from None
        keep = ("deviceId", "deviceScope", "parentScopes", "capabilities", "tags", "status", "connectionState")
        tag = self.get_option("host_tag")
        slim = [{k: t.get(k) for k in keep} | ({"_host": twin_path(t, tag)} if tag else {}) for t in hosts]
        return {"edges": [{k: t.get(k) for k in keep} for t in edges], "hosts": slim}

    def _devices(self, edges, hosts):
        tag = self.get_option("host_tag")
        strict = self.get_option("strict")
        places = hub_layers(edges, hosts)
        if tag and hosts and not any(t.get("_host") for t in hosts):
            raise AnsibleParserError(f"host_tag {tag!r}: none of the {len(hosts)} host(s) has it, so no host would "
                                     "get an ansible_host; check the path (for example tags.host) against a twin")
        for t in sorted(hosts, key=lambda x: x["deviceId"]):
            did = t["deviceId"]
            parent, layer = places[did]
            edge = bool((t.get("capabilities") or {}).get("iotEdge"))
            self.inventory.add_host(did)
            hostvars = {
                "iothub_device_id": did, "iothub_device_scope": t.get("deviceScope") or None, "iothub_parent": parent,
                "iothub_layer": layer, "iothub_tags": t.get("tags") or {}, "iothub_status": t.get("status"),
                "iothub_connection_state": t.get("connectionState"), "iothub_edge": edge,
            }
            if tag and t.get("_host"):
                hostvars["ansible_host"] = t["_host"]
            for name, value in hostvars.items():
                self.inventory.set_variable(did, name, value)
            if edge and edge_scope(t) and layer <= MAX_EDGE_DEPTH:
                group = self.inventory.add_group(f"edge_layer_{layer}")
                self.inventory.add_child(group, did)
            if parent:
                group = self.inventory.add_group(to_safe_group_name(f"children_of_{parent}", force=True, silent=True))
                self.inventory.add_child(group, did)
            self._set_composite_vars(self.get_option("compose"), hostvars, did, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, did, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, did, strict=strict)
