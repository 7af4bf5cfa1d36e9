# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: a declared edge tree whose nodes may provision through DPS (``provisioning: dps``).

A DPS node is enrolled, not created: its identity appears in the hub when the device registers.  Until then the
node is *pending*, and so is everything below it (a child needs its parent's scope).  ``split_tree`` gives the
roles what they need, from the tree and the ids that exist in the hub (read one by one, never from the index):

- ``enrollments``: one individual enrollment per DPS node (IoT Edge when the node is a gateway or declares
  ``edge_enabled``, the node's tags as the initial twin);
- ``tree``: the tree to converge now, without the ``provisioning`` keys and without pending subtrees, and with no
  keys or authentication on DPS nodes (an adopted identity keeps the keys the registration gave it);
- ``pending``: the ids of DPS nodes that have not registered yet, and ``waiting``: the ids held back below them.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List

KEY_OPTIONS = ("auth_type", "primary_key", "secondary_key", "primary_thumbprint", "secondary_thumbprint")
PROVISIONING = ("manual", "dps")


def _id(node: Any) -> str:
    return node if isinstance(node, str) else str(node.get("device_id"))


def split_tree(tree: List[Any], registered: Iterable[str]) -> Dict[str, Any]:
    exists = {r.lower() for r in registered or []}
    out = {"enrollments": [], "tree": [], "pending": [], "waiting": [], "dps_ids": []}

    def below(node: Any) -> Iterable[str]:
        for child in (node.get("children") or []) if isinstance(node, dict) else []:
            yield _id(child)
            yield from below(child)

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        how = node.get("provisioning", "manual")
        if how not in PROVISIONING:
            raise ValueError(f"{_id(node)}: provisioning must be manual or dps, not {how!r}")
        clean = {k: copy.deepcopy(v) for k, v in node.items() if k not in ("provisioning", "children")}
        if how == "dps":
            if any(k in node for k in KEY_OPTIONS):
                raise ValueError(f"{_id(node)}: provisioning dps takes no {'/'.join(KEY_OPTIONS)}: the device's keys "
                                 "come from its enrollment (the hub gets them when the device registers)")
            edge = bool(node.get("children")) or bool(node.get("edge_enabled"))
            entry = {"registration_id": _id(node), "device_id": _id(node), "attestation": "symmetric_key",
                     "capabilities": {"iot_edge": edge}}
            if node.get("tags"):
                entry["initial_twin"] = {"tags": copy.deepcopy(node["tags"])}
            out["enrollments"].append(entry)
            out["dps_ids"].append(_id(node))
            if _id(node).lower() not in exists:
                out["pending"].append(_id(node))
                out["waiting"] += list(below(node))
                return None
        kids = [walk(c) for c in node.get("children") or []]
        if node.get("children") is not None:
            clean["children"] = [k for k in kids if k is not None]
        return clean

    out["tree"] = [n for n in (walk(node) for node in tree or []) if n is not None]
    return out
