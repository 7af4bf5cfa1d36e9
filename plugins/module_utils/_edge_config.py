# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: an IoT Edge host's ``/etc/aziot/config.toml`` from typed options, in one place.

``build_config(opts)`` turns the options of ``edge_host_config`` (the edge_host role's variables) into the document,
``check_config`` validates it with the product's schema (``_edge_config_schema``) and refuses unknown and pre-1.2
keys, ``render_toml`` writes it, ``config_secrets`` names what must never be shown, ``edge_stop_reasons`` says
whether ``iotedge config apply`` needs IoT Edge stopped and its containers removed first (a changed hostname or
agent; iotedge #6241, #6231). Pure but for ``file_secrets`` (reads the file to mask what a command prints about
it); runs on the gateway host with any Python 3.
"""

from __future__ import annotations

import copy
import re

from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config_schema import pre_12_keys, validate
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import REDACTED, document_secrets

PROVISIONING = ("manual", "manual_x509", "dps_symmetric_key", "dps_x509", "dps_tpm")
DPS_GLOBAL_ENDPOINT = "https://global.azure-devices-provisioning.net"
AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
UPSTREAM_AGENT_IMAGE = "$upstream:443/azureiotedge-agent:1.5"  # a lower layer pulls through its parent's proxy
# What each provisioning variant needs, and the options that belong to it alone.
NEEDS = {
    "manual": ("connection_string",),
    "manual_x509": ("iothub_hostname", "device_id", "identity_cert", "identity_pk"),
    "dps_symmetric_key": ("dps_id_scope", "dps_registration_id", "dps_symmetric_key"),
    "dps_x509": ("dps_id_scope", "identity_cert", "identity_pk"),
    "dps_tpm": ("dps_id_scope", "dps_registration_id"),
}
ALLOWED = {
    "manual": ("connection_string",),
    "manual_x509": ("iothub_hostname", "device_id", "identity_cert", "identity_pk"),
    "dps_symmetric_key": ("dps_id_scope", "dps_registration_id", "dps_symmetric_key", "dps_global_endpoint"),
    "dps_x509": ("dps_id_scope", "dps_registration_id", "identity_cert", "identity_pk", "dps_global_endpoint"),
    "dps_tpm": ("dps_id_scope", "dps_registration_id", "dps_global_endpoint"),
}
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}"
                      r"[A-Za-z0-9])?)*$")
# The keys whose change makes ``iotedge config apply`` refuse (hostname) or leave the old agent running.
EDGE_STOP_KEYS = ("hostname", "local_gateway_hostname", "agent")


def file_url(path: str, option: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InputError(f"{option}: give an absolute path on the gateway host, not {path!r}")
    return "file://" + path


def parse_device_connection_string(text: str) -> dict:
    parts = {}
    for item in (text or "").split(";"):
        k, eq, v = item.partition("=")
        if eq:
            parts[k.strip()] = v.strip()
    if "SharedAccessKeyName" in parts:
        raise InputError("connection_string: this is a hub (policy) connection string; give the gateway's device "
                         "connection string (HostName=...;DeviceId=...;SharedAccessKey=...), as the edge roles "
                         "return it in edge_gateway_device_connection_string")
    missing = [k for k in ("HostName", "DeviceId", "SharedAccessKey") if not parts.get(k)]
    if missing:
        raise InputError(f"connection_string: a device connection string needs {', '.join(missing)} "
                         "(HostName=...;DeviceId=...;SharedAccessKey=...)")
    return parts


def _check_hostname(value, option):
    if value is not None and not HOSTNAME.fullmatch(value):
        raise InputError(f"{option}: {value!r} is not a host name (letters, digits, hyphens and dots; an FQDN or "
                         "the name the child devices and lower layers use to reach this gateway)")


def build_config(opts: dict) -> dict:
    """The config.toml document for OPTS (the module's options; None = not given)."""
    prov = opts.get("provisioning")
    if prov not in PROVISIONING:
        raise InputError(f"provisioning: {prov!r} is not one of {', '.join(PROVISIONING)}")
    missing = [o for o in NEEDS[prov] if not opts.get(o)]
    if missing:
        hint = (" (the edge roles publish it as edge_gateway_device_connection_string)"
                if "connection_string" in missing else "")
        raise InputError(f"provisioning={prov} needs {', '.join(missing)}{hint}")
    foreign = sorted(o for v in ALLOWED.values() for o in v if o not in ALLOWED[prov] and opts.get(o))
    if foreign:
        raise InputError(f"{', '.join(sorted(set(foreign)))}: not used by provisioning={prov}; remove it or choose "
                         "the provisioning variant it belongs to")
    _check_hostname(opts.get("hostname"), "hostname")
    _check_hostname(opts.get("parent_hostname"), "parent_hostname")
    if opts.get("parent_hostname") and opts.get("parent_hostname") == opts.get("hostname"):
        raise InputError("parent_hostname: a gateway cannot be its own parent (it equals hostname)")

    doc: dict = {}
    if opts.get("hostname"):
        doc["hostname"] = opts["hostname"]
    if opts.get("parent_hostname"):
        doc["parent_hostname"] = opts["parent_hostname"]
    if opts.get("trust_bundle_cert"):
        doc["trust_bundle_cert"] = file_url(opts["trust_bundle_cert"], "trust_bundle_cert")
    if opts.get("auto_reprovisioning_mode"):
        doc["auto_reprovisioning_mode"] = opts["auto_reprovisioning_mode"]

    if prov == "manual":
        parse_device_connection_string(opts["connection_string"])
        p = {"source": "manual", "connection_string": opts["connection_string"]}
    elif prov == "manual_x509":
        p = {"source": "manual", "iothub_hostname": opts["iothub_hostname"], "device_id": opts["device_id"],
             "authentication": {"method": "x509",
                                "identity_cert": file_url(opts["identity_cert"], "identity_cert"),
                                "identity_pk": file_url(opts["identity_pk"], "identity_pk")}}
    else:
        p = {"source": "dps", "global_endpoint": opts.get("dps_global_endpoint") or DPS_GLOBAL_ENDPOINT,
             "id_scope": opts["dps_id_scope"]}
        if prov == "dps_symmetric_key":
            att = {"method": "symmetric_key", "registration_id": opts["dps_registration_id"],
                   "symmetric_key": {"value": opts["dps_symmetric_key"]}}
        elif prov == "dps_x509":
            att = {"method": "x509"}
            if opts.get("dps_registration_id"):
                att["registration_id"] = opts["dps_registration_id"]
            att["identity_cert"] = file_url(opts["identity_cert"], "identity_cert")
            att["identity_pk"] = file_url(opts["identity_pk"], "identity_pk")
        else:
            att = {"method": "tpm", "registration_id": opts["dps_registration_id"]}
        p["attestation"] = att
    doc["provisioning"] = p

    if bool(opts.get("edge_ca_cert")) != bool(opts.get("edge_ca_pk")):
        raise InputError("edge_ca_cert and edge_ca_pk: give both (the edge CA's full chain and its key) or neither")
    if opts.get("edge_ca_cert"):
        doc["edge_ca"] = {"cert": file_url(opts["edge_ca_cert"], "edge_ca_cert"),
                          "pk": file_url(opts["edge_ca_pk"], "edge_ca_pk")}

    image = opts.get("agent_image") or (UPSTREAM_AGENT_IMAGE if opts.get("parent_hostname") else AGENT_IMAGE)
    agent = {"name": "edgeAgent", "type": "docker", "config": {"image": image}}
    if opts.get("agent_auth"):
        auth = opts["agent_auth"]
        unknown = sorted(set(auth) - {"serveraddress", "username", "password"})
        if unknown:
            raise InputError(f"agent_auth: unknown keys {', '.join(unknown)} (serveraddress, username, password)")
        agent["config"]["auth"] = {k: auth[k] for k in ("serveraddress", "username", "password") if auth.get(k)}
    if opts.get("agent_env"):
        agent["env"] = {str(k): str(v) for k, v in opts["agent_env"].items()}
    doc["agent"] = agent
    for key, value in (opts.get("settings") or {}).items():
        if key in doc and isinstance(doc[key], dict) and isinstance(value, dict):
            doc[key] = _merge(doc[key], value)
        elif key in doc:
            raise InputError(f"settings.{key}: set it with its own option, not through settings")
        else:
            doc[key] = copy.deepcopy(value)
    check_config(doc)
    return doc


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


def check_config(doc: dict) -> None:
    """Refuse what ``iotedge config apply`` refuses, and keys it would silently ignore (unknown, pre-1.2)."""
    errors, unknown = validate(doc)
    old = pre_12_keys(unknown)
    if old:
        raise InputError("config.toml: keys of the pre-1.2 configuration, which IoT Edge 1.2 and later ignore: "
                         + "; ".join(f"{k} (use {new})" for k, new in old))
    if unknown:
        raise InputError(f"config.toml: unknown keys {', '.join(unknown)} (IoT Edge would ignore them; check the "
                         "spelling against /etc/aziot/config.toml.edge.template)")
    if errors:
        raise InputError("config.toml: " + "; ".join(errors))


# ------------------------------------------------------------------------------------------------ TOML
def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_BARE = re.compile(r"[A-Za-z0-9_\-]+")


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else _toml_str(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise InputError(f"config.toml: cannot write a value of type {type(v).__name__}")


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def render_toml(doc: dict, header: str = "") -> str:
    """TOML text for DOC: a table's plain keys first, then its sub-tables under ``[a.b]`` headers."""
    lines = [header] if header else []
    _emit(doc, [], lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def _emit(table: dict, path: list, lines: list) -> None:
    plain = [(k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)]
    for k, v in plain:
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        sub = path + [_key(k)]
        if isinstance(v, dict):
            lines.append("")
            lines.append("[" + ".".join(sub) + "]")
            _emit(v, sub, lines)
        elif _is_table_array(v):
            for item in v:
                lines.append("")
                lines.append("[[" + ".".join(sub) + "]]")
                _emit(item, sub, lines)


# ------------------------------------------------------------------------------------------------ secrets, changes
def config_secrets(doc) -> list:
    """The secrets in a config document: the document rule of ``_secrets`` (passwords, keys, connection strings)
    plus inline private keys (``*_pk = { value = ... }``); key and certificate locations (file:, pkcs11:) are not
    secrets."""
    found = [v for v in document_secrets(doc) if not v.startswith(("file:", "pkcs11:"))]

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("_pk") and isinstance(v, dict) and isinstance(v.get("value"), str) and v["value"]:
                    found.append(v["value"])
                walk(v)
    walk(doc)
    return found


def file_secrets(path: str) -> list:
    """The secrets of the config file at PATH, to mask what ``iotedge`` prints about it (a parse error can quote a
    value); when the file cannot be parsed, every ``SharedAccessKey=`` and ``value = "..."`` in it."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    try:
        import tomllib  # pylint: disable=import-outside-toplevel
        return config_secrets(tomllib.loads(text))
    except Exception:  # pylint: disable=broad-except  # no tomllib (Python < 3.11), or not TOML
        return re.findall(r"SharedAccessKey=([^;\"\s]+)", text) + re.findall(r'value\s*=\s*"([^"]+)"', text)


def mask_text(text: str, secrets) -> str:
    """TEXT (a rendered config.toml) with every secret masked, also as TOML escapes it."""
    for value in sorted(set(s for s in secrets if s), key=len, reverse=True):
        text = text.replace(_toml_str(value)[1:-1], REDACTED).replace(value, REDACTED)
    return text


def edge_stop_reasons(old, new: dict) -> list:
    """The keys whose change needs IoT Edge stopped and its containers removed before ``config apply``; OLD is
    the current document, None when unknown (unreadable: assume everything changed)."""
    if old is None:
        return list(EDGE_STOP_KEYS)

    def get(doc, key):
        if key == "local_gateway_hostname":
            return doc.get("parent_hostname", doc.get("local_gateway_hostname"))
        return doc.get(key)
    return [k for k in EDGE_STOP_KEYS if get(old, k) != get(new, k)]
