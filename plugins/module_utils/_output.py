# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the result of an identity task (a device or a module): action, changes, the
identity with its keys masked, the diff, and the connection strings when asked for."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import IoTApiError, ModuleFailure
from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import option_names, plan_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import (
    connection_strings,
    hide_document_secrets,
    hide_plan_secrets,
    hide_secrets,
    redact_device,
)


def identity_result(module: AnsibleModule, client, ensure, read_back, name: str, header: str, fields) -> dict:
    """Run ENSURE (the converge of a device or module identity) and build the task's result under NAME.

    ``action``, ``changes`` and the diff come from the plan this task wrote, not from a re-plan that found its own
    write applied after a lost answer.  When the task fails after a write of it may have landed, and the keys were
    asked for (``return_secrets``), the failure carries the connection strings of the keys the hub holds now
    (READ_BACK reads them): a rotation that landed unanswered must not leave the caller without the live key."""
    keep = module.params["return_secrets"]
    try:
        res = ensure()
    except IoTApiError as exc:
        if not (keep and getattr(exc, "changed", False)):
            raise
        try:
            live = read_back()
        except IoTApiError:
            live = None
        raise ModuleFailure(str(exc), error=exc.to_dict(), changed=True,
                            **connection_strings(client.host, live)) from None
    acted = res.acted
    hide_plan_secrets(module, [res.plan, acted], keep)
    hide_secrets(module, res.obj, keep)
    result = {"changed": res.changed, "action": acted.action, "changes": option_names(acted.changes),
              name: redact_device(res.obj, keep), "notes": res.notes}
    if res.twin is not None:  # the task manages tags or desired properties: what the twin holds now
        hide_document_secrets(module, res.twin)
        result["twin"] = twin_of(res.twin)
    if keep:
        result.update(connection_strings(client.host, res.obj))
    if module._diff:
        result["diff"] = plan_diff(acted, header, fields)
    return result


TWIN_FIELDS = ("tags", "properties", "version", "etag")


def twin_of(doc) -> dict:
    """The twin part of a query result or twin document: tags, desired and reported properties, version, etag."""
    return {k: doc[k] for k in TWIN_FIELDS if k in doc} if isinstance(doc, dict) else {}
