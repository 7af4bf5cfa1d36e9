# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet.azure_iot.dps_tree filter (documentation: dps_tree.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_tree import split_tree


def dps_tree(tree, registered=None):
    """The enrollments, the tree to converge now, and the pending DPS nodes of an edge tree."""
    if not isinstance(tree, list):
        raise AnsibleFilterError("dps_tree: the tree must be a list of nodes (edge_hierarchy_tree)")
    try:
        return split_tree(tree, registered or [])
    except ValueError as exc:
        raise AnsibleFilterError(f"dps_tree: {exc}") from None


class FilterModule:
    def filters(self):
        return {"dps_tree": dps_tree}
