# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: what every module shares: the connection and retry options (argument specs) and
``run_module``, which runs a module's body and turns every known failure into a masked ``fail_json``."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.fleet.azure_iot.plugins.module_utils._deps import check_requirements
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import (
    EtagConflict,
    InputError,
    IoTApiError,
    ModuleFailure,
    format_validation_error,
    input_error_types,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import secret_mask

# Shared by every module of the fleet.azure_iot.iothub action group (doc fragment: fleet.azure_iot.iothub).
RETRY_ARGS = dict(
    timeout=dict(type="float", default=30.0),
    max_retries=dict(type="int", default=8),
    retry_budget_seconds=dict(type="float", default=300.0),
    retry_backoff_seconds=dict(type="float"),
)
IOTHUB_ARGS = dict(
    connection_string=dict(type="str", no_log=True, fallback=(env_fallback, ["IOTHUB_CONNECTION_STRING"])),
    hostname=dict(type="str", fallback=(env_fallback, ["IOTHUB_HOSTNAME"])),
    auth_mode=dict(type="str", choices=["sas", "entra"]),
    ca_path=dict(type="path", fallback=(env_fallback, ["IOTHUB_CA_PATH"])),
    validate_certs=dict(type="bool", default=True),
    **RETRY_ARGS,
)


def run_module(module: AnsibleModule, body, service: bool = True) -> None:
    """Run ``body(module) -> result dict`` and turn every known failure into a clear fail_json.

    fail_json is called outside the ``except`` blocks: ansible-core >= 2.19 attaches the exception being
    handled to the result, which would print a traceback for a plain input error.  Warnings are held until the
    end and masked like the result: a key the task learns after a warning is still hidden in it.  SERVICE false:
    a module that runs on a gateway host and calls no service API (no httpx, pydantic there)."""
    if service:
        check_requirements(module)
    warnings: list = []
    warn, module.warn = module.warn, warnings.append
    failure = None
    try:
        result = body(module)
    except ModuleFailure as exc:
        failure = dict(msg=str(exc), **exc.details)
    except input_error_types() as exc:  # SpecError, and pydantic's ValidationError where pydantic is used
        failure = dict(msg=f"Invalid input: {format_validation_error(exc)}")
    except InputError as exc:  # PlanError, ManifestError, QueryError, AuthError, connection options
        failure = dict(msg=str(exc))
    except EtagConflict as exc:
        failure = dict(msg=str(exc), changed=getattr(exc, "changed", False))
    except IoTApiError as exc:
        # A write whose answer was lost may have landed: the failed task says changed (never hide a write).
        failure = dict(msg=str(exc), error=exc.to_dict(),
                       changed=bool(getattr(exc, "changed", False) or getattr(exc, "final", False)))
    except Exception as exc:  # pylint: disable=broad-except
        failure = dict(msg=f"Unexpected error: {type(exc).__name__}: {exc}", exception=traceback.format_exc())
    mask = secret_mask(module)
    if mask.values:  # the arguments are echoed as the result's invocation: mask declared keys there too
        module.params = mask.apply(module.params)
    module.warn = warn
    for text in warnings:
        warn(mask.apply(text))
    if failure is not None:
        module.fail_json(**mask.apply(failure))
    module.exit_json(**mask.apply(result))
