"""After deleting gateways, the children are queried once more (the guard before the delete saw a lagging index):
a child found then is a failure that names it, and says changed.  Pure logic over a stand-in client; the index lag
that makes this happen is a wall-clock window the emulator cannot open mid-task (see docs/reliability.md)."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.reconcile import BulkReconciler
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.state import Outcome
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import IoTApiError
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_device import _check_no_orphans

SCOPE = "ms-azure-iot-edge://gw-1"


class Index:
    """Answers children queries with what the index shows after the delete."""

    def __init__(self, children):
        self.children = children
        self.asked = []

    def children_of(self, scope):
        self.asked.append(scope)
        return [{"deviceId": c} for c in self.children]

    def children_of_scopes(self, scopes):
        self.asked.extend(scopes)
        return {s: [{"deviceId": c} for c in self.children] for s in scopes}


def test_single_device_delete_reports_a_child_found_after_it():
    with pytest.raises(IoTApiError) as err:
        _check_no_orphans(Index(["late-child"]), "gw", {"edge_enabled": True}, SCOPE)
    assert "late-child" in str(err.value) and err.value.changed is True
    quiet = Index([])
    _check_no_orphans(quiet, "gw", {"edge_enabled": True}, SCOPE)
    assert quiet.asked == [SCOPE]
    leaf = Index(["x"])
    _check_no_orphans(leaf, "leaf", {"edge_enabled": False}, None)  # a leaf has no children to look for
    assert leaf.asked == []


def test_bulk_reports_a_child_found_after_the_gateway_delete_and_only_for_deleted_gateways():
    rec = BulkReconciler.__new__(BulkReconciler)
    rec.out = Outcome(deleted={"gw", "kid-deleted-too"})
    rec.deleting_scopes = {SCOPE: "gw", "ms-azure-iot-edge://kept-2": "kept"}
    rec.client = Index(["late-child", "kid-deleted-too"])
    rec.check_no_orphans()
    assert rec.client.asked == [SCOPE]  # a gateway whose delete did not happen is not asked about
    assert [f["deviceId"] for f in rec.out.failed] == ["late-child"]
    assert rec.out.failed[0]["errorCode"] == "OrphanedChild" and "'gw'" in rec.out.failed[0]["errorStatus"]
