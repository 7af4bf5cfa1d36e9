# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: what every IoT Hub module shares: connection options, client construction,
secret redaction and turning errors into ``fail_json``."""

from __future__ import annotations

import copy
import re
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import (
    IOTHUB_SCOPE,
    AuthError,
    EntraCredential,
    SasCredential,
    parse_connection_string,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._deps import check_requirements
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import HttpClient, IoTApiError, RetryPolicy, tls_verify
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import API_VERSION, IoTHubClient
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import format_validation_error, input_error_types
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import (
    REDACTED,
    PlanError,
    option_names,
    plan_diff,
    plan_secrets,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import EtagConflict

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


class ModuleFailure(Exception):
    """A failure to report with fail_json: a message plus structured details."""

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.details = details


def retry_policy(params: dict) -> RetryPolicy:
    for opt in ("max_retries", "retry_budget_seconds", "retry_backoff_seconds", "timeout"):
        value = params.get(opt)
        if value is not None and value < 0:
            raise ModuleFailure(f"{opt} must not be negative")
    if params.get("timeout") is not None and params["timeout"] <= 0:
        raise ModuleFailure(f"timeout must be greater than 0 (seconds a request may take), not {params['timeout']}")
    return RetryPolicy(max_retries=params["max_retries"], budget_seconds=params["retry_budget_seconds"],
                       backoff_seconds=params.get("retry_backoff_seconds"))


HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]+\])"
                     r"(?::[0-9]{1,5})?$")


def check_host(host: str, option: str) -> str:
    """A host name with an optional :port, nothing else: refused before any request otherwise."""
    host = (host or "").strip()
    if "://" in host:
        raise ModuleFailure(f"{option}: {host!r} must be a host name such as myhub.azure-devices.net, not a URL; "
                            "drop the scheme (https://)")
    if not HOST_RE.match(host):
        raise ModuleFailure(f"{option}: {host!r} is not a host name (letters, digits, '-' and '.', with an optional "
                            ":port, and no path), for example myhub.azure-devices.net")
    return host


def build_hub_client(params: dict, warn=None) -> IoTHubClient:
    """Validate the connection options (before any request) and build the client."""
    cs, hostname, mode = params.get("connection_string"), params.get("hostname"), params.get("auth_mode")
    if mode is None:
        mode = "sas" if cs else ("entra" if hostname else None)
    if mode is None:
        raise ModuleFailure("No IoT Hub connection: set connection_string (or IOTHUB_CONNECTION_STRING) for SAS, "
                            "or hostname (or IOTHUB_HOSTNAME) with auth_mode=entra for Entra ID")
    if mode == "sas":
        if not cs:
            raise ModuleFailure("auth_mode=sas needs connection_string (or IOTHUB_CONNECTION_STRING)")
        parts = parse_connection_string(cs)
        origin = "the HostName of connection_string (or IOTHUB_CONNECTION_STRING)"
        host = check_host(parts["HostName"], origin)
        if hostname and params.get("auth_mode") == "sas" and hostname.lower() != host.lower():
            raise ModuleFailure(f"hostname {hostname!r} differs from the HostName of connection_string; drop one")
        credential = SasCredential(host, parts["SharedAccessKeyName"], parts["SharedAccessKey"])
    else:
        if not hostname:
            raise ModuleFailure("auth_mode=entra needs hostname (or IOTHUB_HOSTNAME), e.g. myhub.azure-devices.net")
        origin = "hostname (or IOTHUB_HOSTNAME)"
        host = check_host(hostname.rstrip("/"), origin)
        credential = EntraCredential(IOTHUB_SCOPE)
    verify = tls_verify(params["validate_certs"], params.get("ca_path"), "ca_path (or IOTHUB_CA_PATH)", warn)
    http = HttpClient(f"https://{host}", credential, api_version=API_VERSION, verify=verify,
                      timeout=params["timeout"], policy=retry_policy(params), origin=origin)
    return IoTHubClient(http, host)


def redact_device(device, keep_secrets: bool):
    """A copy of a device identity with its symmetric keys replaced, unless secrets were asked for."""
    if device is None or keep_secrets:
        return device
    out = copy.deepcopy(device)
    keys = (out.get("authentication") or {}).get("symmetricKey")
    if isinstance(keys, dict):
        for k in ("primaryKey", "secondaryKey"):
            if keys.get(k):
                keys[k] = REDACTED
    return out


def device_secrets(device) -> list:
    keys = ((device or {}).get("authentication") or {}).get("symmetricKey") or {}
    return [v for v in (keys.get("primaryKey"), keys.get("secondaryKey")) if v]


NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"  # what Ansible shows for a whole no_log value


class SecretMask:
    """The secrets a task's output must never show (keys the hub returned, keys the user declared), masked in
    time linear in the output's size, the way Ansible masks ``no_log`` values (a whole value becomes
    NO_LOG_PLACEHOLDER, a value inside a string ``********``).

    Ansible's own masking (``module.no_log_values``) tests every string of the result against every secret: with
    the keys of a 100,000-device fleet (200,000 secrets against 100,000 device ids) exit_json ran for hours.
    Here each substring of an output string whose length is that of some secret is one set lookup, and keys
    come in few lengths."""

    def __init__(self):
        self.values: set = set()
        self.lengths: set = set()

    def add(self, value) -> None:
        if isinstance(value, str) and value:
            self.values.add(value)
            self.lengths.add(len(value))

    def reveal(self, value) -> None:
        """VALUE is no longer masked (a key the task was asked to return)."""
        self.values.discard(value)

    def text(self, text: str) -> str:
        if text in self.values:
            return NO_LOG_PLACEHOLDER
        values = self.values
        hits = {piece for n in self.lengths for piece in (text[i:i + n] for i in range(len(text) - n + 1))
                if piece in values}  # one substring at a time: a long text is never copied per position
        for hit in sorted(hits, key=len, reverse=True):
            text = text.replace(hit, REDACTED)
        return text

    def apply(self, data):
        """DATA with every secret masked (a new structure; DATA is left alone)."""
        if not self.values:
            return data
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {self.apply(k): self.apply(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.apply(v) for v in data]
        return data


def secret_mask(module: AnsibleModule) -> SecretMask:
    """The task's SecretMask, applied by run_module to the result, the failure and the echoed arguments."""
    mask = getattr(module, "fleet_azure_iot_secrets", None)
    if mask is None:
        mask = SecretMask()
        setattr(module, "fleet_azure_iot_secrets", mask)
    return mask


def hide_secrets(module: AnsibleModule, device, keep_secrets: bool) -> None:
    """Defence in depth: mask the service-generated keys anywhere in the output (kubernetes.core pattern)."""
    if not keep_secrets:
        for value in device_secrets(device):
            secret_mask(module).add(value)


def hide_plan_secrets(module: AnsibleModule, plans, keep_secrets: bool = False) -> None:
    """Mask the keys that plans saw (before and after views) anywhere in the output."""
    if keep_secrets:
        return
    mask = secret_mask(module)
    for plan in plans:
        for key in plan_secrets(plan):
            mask.add(key)


def device_connection_string(host: str, identity) -> str | None:
    """The connection string of a device or module identity (with its primary key), or None without SAS keys."""
    keys = ((identity or {}).get("authentication") or {}).get("symmetricKey") or {}
    if not keys.get("primaryKey"):
        return None
    module = f";ModuleId={identity['moduleId']}" if identity.get("moduleId") else ""
    return f"HostName={host};DeviceId={identity['deviceId']}{module};SharedAccessKey={keys['primaryKey']}"


def connection_strings(host: str, identity) -> dict:
    """``connection_string`` (primary key) and ``secondary_connection_string`` of a SAS identity; {} without keys."""
    keys = ((identity or {}).get("authentication") or {}).get("symmetricKey") or {}
    out = {}
    for option, key in (("connection_string", "primaryKey"), ("secondary_connection_string", "secondaryKey")):
        if keys.get(key):
            out[option] = device_connection_string(host, {**identity, "authentication": {"symmetricKey": {
                "primaryKey": keys[key]}}})
    return out


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
    if keep:
        result.update(connection_strings(client.host, res.obj))
    if module._diff:
        result["diff"] = plan_diff(acted, header, fields)
    return result


TWIN_FIELDS = ("tags", "properties", "version", "etag")


def twin_of(doc) -> dict:
    """The twin part of a query result or twin document: tags, desired and reported properties, version, etag."""
    return {k: doc[k] for k in TWIN_FIELDS if k in doc} if isinstance(doc, dict) else {}


def run_module(module: AnsibleModule, body) -> None:
    """Run ``body(module) -> result dict`` and turn every known failure into a clear fail_json.

    fail_json is called outside the ``except`` blocks: ansible-core >= 2.19 attaches the exception being
    handled to the result, which would print a traceback for a plain input error.  Warnings are held until the
    end and masked like the result: a key the task learns after a warning is still hidden in it."""
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
    except (AuthError, PlanError) as exc:
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
