# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: secrets in one place: new keys, the keys an identity or a plan holds, masking them
in every output (``SecretMask``, applied by ``run_module`` to the result, failures, warnings and echoed
arguments), and the connection strings a task returns when asked (``return_secrets``)."""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
from typing import Iterator, Optional

from ansible.module_utils.basic import AnsibleModule

REDACTED = "********"
NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"  # what Ansible shows for a whole no_log value
SECRET_FIELDS = ("primary_key", "secondary_key")  # the option names of an identity's keys


def fresh_key() -> str:
    """A new symmetric key (32 random bytes, base64), as the hub generates them: for deliberate key rotation."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sas_keys(identity) -> tuple:
    """(primary, secondary) SAS keys of a device or module identity (None where it has none)."""
    keys = ((identity or {}).get("authentication") or {}).get("symmetricKey") or {}
    return keys.get("primaryKey") or None, keys.get("secondaryKey") or None


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
    """The SAS keys a device or module identity holds (none for X.509 or a query twin)."""
    return [v for v in sas_keys(device) if v]


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


def device_connection_string(host: str, identity) -> Optional[str]:
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


def plan_secrets(plan) -> Iterator[str]:
    """The keys a plan saw: those of its before and after views (to be masked in any output)."""
    for view in (plan.before, plan.after):
        for f in SECRET_FIELDS:
            if view and view.get(f):
                yield view[f]


# ------------------------------------------------------------------------------ secrets inside documents
SECRET_WORDS = frozenset({"password", "passwd", "pwd", "secret", "secrets", "token", "tokens", "key", "keys", "sas",
                          "credential", "credentials", "passphrase"})
SECRET_MARKERS = ("SharedAccessKey=", "SharedAccessSignature", "sig=")  # a connection string or SAS inside a value
MIN_SECRET_CHARS = 4  # shorter values would mask common words everywhere (Ansible's no_log has the same limit)


def _words(name: str) -> set:
    return {w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)}


def secret_name(name) -> bool:
    """Whether a key or variable name says it holds a secret (password, secret, key, token, ...), word by word:
    ``REGISTRY_PROXY_PASSWORD``, ``registryCredentials``, ``sasToken`` do; ``monkey``, ``keyboard`` do not."""
    return isinstance(name, str) and bool(_words(name) & SECRET_WORDS)


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def document_secrets(doc) -> Iterator[str]:
    """The secrets inside a document (a deployment manifest, configuration content, a module's settings): every
    string under a name that says it is secret (``registryCredentials.*.password``; an ``env`` entry such as
    ``REGISTRY_PROXY_PASSWORD: {value: ...}``; an ``Env`` line ``NAME=value`` of createOptions, also when
    createOptions is a JSON string), and every string that carries a SAS key or signature."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if secret_name(k):
                if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_CHARS:
                    yield v
                elif isinstance(v, dict) and isinstance(v.get("value"), str) and len(v["value"]) >= MIN_SECRET_CHARS:
                    yield v["value"]  # an env entry of a module: {NAME: {value: ...}}
            yield from document_secrets(v)
    elif isinstance(doc, (list, tuple)):
        for v in doc:
            yield from document_secrets(v)
    elif isinstance(doc, str):
        if any(m in doc for m in SECRET_MARKERS):
            yield doc
        text = doc.strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                inner = json.loads(text)
            except ValueError:
                inner = None
            if inner is not None:
                yield from document_secrets(inner)
        name, eq, value = doc.partition("=")
        if eq and ENV_NAME.match(name) and secret_name(name) and len(value) >= MIN_SECRET_CHARS:
            yield value  # an Env line of createOptions: NAME=value


def hide_document_secrets(module: AnsibleModule, *docs) -> None:
    """Mask the secrets inside DOCS (declared content, content read from the hub) in every output of the task;
    comparisons still see the real values."""
    mask = secret_mask(module)
    for doc in docs:
        for value in document_secrets(doc):
            mask.add(value)
