# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the schema of IoT Edge's ``/etc/aziot/config.toml`` (the "super config"), checked
the way ``iotedge config apply`` checks it: serde typing of aziotctl's ``super_config.rs`` (Azure/iot-identity-service,
``aziotctl/aziotctl-common/src/config/super_config.rs``) flattened into iotedge's (Azure/iotedge,
``edgelet/iotedge/src/config/super_config.rs``); shared/reference/iot-api-2.md section 5.1.

``validate(doc)`` takes the parsed document (a dict, as ``tomllib`` gives it) and returns ``(errors, unknown)``:
errors are what the product refuses (a missing ``[provisioning]``, an unknown ``source`` or ``method``, a value of
the wrong type, a URL without a scheme, a symmetric key that is not base64); ``unknown`` are the keys the schema does
not know. The product ignores unknown keys (its structs have no ``deny_unknown_fields``); the edge_host role refuses
them, as it refuses the keys of the pre-1.2 configuration (``PRE_12_KEYS``), which 1.2 and later silently ignore.

Where a sub-structure is defined in a crate this schema does not model field by field (certificate issuance
options, ``createOptions``, ``[tpm]``, ``[localid]``), any table is accepted. The schema is tested against every
``super-config.toml`` of the iotedge CLI's own tests and the iotedge_config_cli templates (../shared/corpus).
"""

from __future__ import annotations

import base64
import binascii
import re

# Keys of the pre-1.2 config.yaml (iotedged) that have no meaning in config.toml, and what replaces them.
PRE_12_KEYS = {
    "certificates": "[edge_ca] cert/pk and trust_bundle_cert",
    "homedir": "nothing (1.2 and later keep their state under /var/lib/aziot)",
    "provisioning.device_connection_string": "provisioning.connection_string",
    "provisioning.dynamic_reprovisioning": "auto_reprovisioning_mode",
    "provisioning.always_reprovision_on_startup": "auto_reprovisioning_mode",
    "provisioning.attestation.symmetric_key.key": "provisioning.attestation.symmetric_key.value",
}

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class _Ctx:
    def __init__(self):
        self.errors: list = []
        self.unknown: list = []


def _where(path: str) -> str:
    return path or "the document"


# ------------------------------------------------------------------------------------------------ scalar types
def _str(value, path, ctx):
    if not isinstance(value, str):
        ctx.errors.append(f"{_where(path)}: expected a string, got {type(value).__name__}")


def _bool(value, path, ctx):
    if not isinstance(value, bool):
        ctx.errors.append(f"{_where(path)}: expected true or false, got {type(value).__name__}")


def _uint(value, path, ctx):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 0xFFFFFFFF:
        ctx.errors.append(f"{_where(path)}: expected a non-negative integer, got {value!r}")


def _url(value, path, ctx):
    if not isinstance(value, str):
        ctx.errors.append(f"{_where(path)}: expected a URL string, got {type(value).__name__}")
    elif not _SCHEME.match(value):
        ctx.errors.append(f"{_where(path)}: {value!r} is not a URL (relative URL without a base); "
                          "a file is written as file:///path")


def _key_location(value, path, ctx):
    """aziot_keys_common::PreloadedKeyLocation: a file: or pkcs11: URI."""
    _url(value, path, ctx)
    if isinstance(value, str) and _SCHEME.match(value) and not value.lower().startswith(("file:", "pkcs11:")):
        ctx.errors.append(f"{_where(path)}: a key location is a file:// or pkcs11: URI, not {value.split(':')[0]}:")


def _b64(value, path, ctx):
    """serde ``with = "base64"``: the base64 crate's standard alphabet; the padding may be left out."""
    if not isinstance(value, str):
        ctx.errors.append(f"{_where(path)}: expected a base64-encoded byte array, got {type(value).__name__}")
        return
    text = value.rstrip("=")
    try:
        base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        ctx.errors.append(f"{_where(path)}: expected a base64-encoded byte array ({exc})")
        return
    if len(text) % 4 == 1 or len(value) - len(text) > 2:
        ctx.errors.append(f"{_where(path)}: expected a base64-encoded byte array (invalid length)")


def _table_any(value, path, ctx):
    if not isinstance(value, dict):
        ctx.errors.append(f"{_where(path)}: expected a table, got {type(value).__name__}")


def _enum(*choices):
    def check(value, path, ctx):
        if value not in choices:
            ctx.errors.append(f"{_where(path)}: {value!r} is not one of {', '.join(choices)}")
    return check


def _map(item):
    def check(value, path, ctx):
        if not isinstance(value, dict):
            ctx.errors.append(f"{_where(path)}: expected a table, got {type(value).__name__}")
            return
        for k, v in value.items():
            item(v, f"{path}.{k}", ctx)
    return check


def _list(item):
    def check(value, path, ctx):
        if not isinstance(value, list):
            ctx.errors.append(f"{_where(path)}: expected an array, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            item(v, f"{path}[{i}]", ctx)
    return check


def _one_of(*checks):
    def check(value, path, ctx):
        trials = []
        for c in checks:
            sub = _Ctx()
            c(value, path, sub)
            if not sub.errors:
                ctx.unknown.extend(sub.unknown)
                return
            overlap = len(set(value) & getattr(c, "claims", set())) if isinstance(value, dict) else 0
            trials.append((-overlap, len(sub.errors), sub.errors))
        # Explain the variant the value looks most like (the most known keys), as the closest miss.
        closest = min(trials, key=lambda t: t[:2])[2]
        ctx.errors.append(f"{_where(path)}: data did not match any variant ({'; '.join(closest)})")
    return check


# ------------------------------------------------------------------------------------------------ tables
def _table(fields: dict, required=(), aliases=None, flatten=()):
    """A struct: FIELDS name -> check; REQUIRED names; ALIASES alias -> field; FLATTEN: checks of flattened
    sub-structs (each sees the whole table and claims the keys it knows through ``_claims``)."""
    aliases = aliases or {}

    def check(value, path, ctx):
        if not isinstance(value, dict):
            ctx.errors.append(f"{_where(path)}: expected a table, got {type(value).__name__}")
            return
        for name in required:
            if name not in value and not any(a in value for a, f in aliases.items() if f == name):
                ctx.errors.append(f"{_where(path)}: missing field `{name}`")
        for k, v in value.items():
            p = f"{path}.{k}" if path else k
            f = fields.get(aliases.get(k, k))
            if f is not None:
                f(v, p, ctx)
            elif not any(k in getattr(fl, "claims", ()) for fl in flatten):
                ctx.unknown.append(p)
        for fl in flatten:
            fl(value, path, ctx)
    check.claims = set(fields) | set(aliases)
    return check


def _tagged(tag: str, variants: dict, base_fields=None):
    """An internally tagged enum (``#[serde(tag = TAG)]``): TAG picks the variant, whose fields are checked with
    BASE_FIELDS (the fields every variant shares here, such as the DPS endpoint)."""
    def check(value, path, ctx):
        if not isinstance(value, dict):
            ctx.errors.append(f"{_where(path)}: expected a table, got {type(value).__name__}")
            return
        t = value.get(tag)
        where = f"{path}.{tag}" if path else tag
        if t is None:
            ctx.errors.append(f"{where}: missing field `{tag}` (one of {', '.join(variants)})")
            return
        if t not in variants:
            ctx.errors.append(f"{where}: unknown variant {t!r}, expected one of {', '.join(variants)}")
            return
        rest = {k: v for k, v in value.items() if k != tag}
        variants[t](rest, path, ctx)
    return check


_SYMMETRIC_KEY = _one_of(_table({"value": _b64}, required=("value",)),
                         _table({"uri": _key_location}, required=("uri",)))
_X509_IDENTITY_FIELDS = {"identity_cert": _one_of(_url, _table_any), "identity_pk": _key_location}


def _x509_identity(value, path, ctx):
    cert = value.get("identity_cert")
    if isinstance(cert, dict):  # Issued: the certificate is issued by certd (EST, local CA), no key location
        return
    for name in ("identity_cert", "identity_pk"):
        if name not in value:
            ctx.errors.append(f"{_where(path)}: missing field `{name}`")


_x509_identity.claims = {"identity_cert", "identity_pk"}


_MANUAL = _one_of(
    _table({"connection_string": _str}, required=("connection_string",)),
    _table({"iothub_hostname": _str, "device_id": _str,
            "authentication": _tagged("method", {
                "sas": _table({"device_id_pk": _SYMMETRIC_KEY}, required=("device_id_pk",)),
                "x509": _table(_X509_IDENTITY_FIELDS, flatten=(_x509_identity,)),
            })}, required=("iothub_hostname", "device_id", "authentication")),
)
_DPS_COMMON = {"global_endpoint": _url, "id_scope": _str, "payload": _table({"uri": _url}, required=("uri",))}
_ATTESTATION = _tagged("method", {
    "symmetric_key": _table({"registration_id": _str, "symmetric_key": _SYMMETRIC_KEY},
                            required=("registration_id", "symmetric_key")),
    # registration_id is optional for X.509 (the certificate's common name is used): the iotedge CLI's own
    # dps-x509 test config has none, although the aziotctl source read for the reference declares it.
    "x509": _table({"registration_id": _str, "auto_renew": _table_any, **_X509_IDENTITY_FIELDS},
                   flatten=(_x509_identity,)),
    "tpm": _table({"registration_id": _str}, required=("registration_id",)),
})
_PROVISIONING = _tagged("source", {
    "manual": _MANUAL,
    "dps": _table({**_DPS_COMMON, "attestation": _ATTESTATION}, required=("global_endpoint", "id_scope", "attestation")),
    "none": _table({}),
})

_AGENT = _table({
    "name": _str, "type": _str, "imagePullPolicy": _enum("on-create", "never"),
    "config": _table({"image": _str, "createOptions": _table_any, "digest": _str,
                      "auth": _table({"serveraddress": _str, "username": _str, "password": _str,
                                      "identitytoken": _str, "registrytoken": _str})}, required=("image",)),
    "env": _map(_str),
}, required=("name", "type", "config"))

_EDGE_CA = _one_of(
    _table({"cert": _url, "pk": _url}, required=("cert", "pk")),
    _table({"auto_generated_edge_ca_expiry_days": _uint}, required=("auto_generated_edge_ca_expiry_days",)),
    _table({"method": _enum("est", "local_ca", "self_signed"), "common_name": _str, "expiry_days": _uint,
            "subject": _one_of(_str, _map(_str)), "auto_renew": _table_any, "url": _url, "username": _str,
            "password": _str, "bootstrap_identity_cert": _url, "bootstrap_identity_pk": _key_location,
            "identity_cert": _url, "identity_pk": _key_location}, required=("method",)),
)

_NETWORK = _one_of(_str, _table({"name": _str, "ipv6": _bool, "ipam": _table({"config": _list(_table({
    "gateway": _str, "subnet": _str, "ip_range": _str}))})}, required=("name",)))

_TOP = _table({
    # iotedge super_config.rs
    "trust_bundle_cert": _url,
    "manifest_trust_bundle_cert": _url,
    "auto_reprovisioning_mode": _enum("Dynamic", "AlwaysOnStartup", "OnErrorOnly"),
    "imported_master_encryption_key": _str,
    "allow_elevated_docker_permissions": _bool,
    "agent": _AGENT,
    "connect": _table({"workload_uri": _url, "management_uri": _url}, required=("workload_uri", "management_uri")),
    "listen": _table({"workload_uri": _url, "management_uri": _url, "min_tls_version": _str},
                     required=("workload_uri", "management_uri")),
    "watchdog": _table({"max_retries": _one_of(_enum("infinite"), _uint)}),
    "edge_ca": _EDGE_CA,
    "moby_runtime": _table({"uri": _url, "network": _NETWORK, "content_trust": _table({"ca_certs": _map(_url)})},
                           required=("uri", "network")),
    "iotedge_max_requests": _map(_uint),
    "image_garbage_collection": _table_any,
    "prefer_module_identity_cache": _bool,
    "additional_info": _url,
    # aziotctl super_config.rs (flattened into the above)
    "hostname": _str,
    "local_gateway_hostname": _str,
    "provisioning": _PROVISIONING,
    "localid": _table_any,
    "cloud_timeout_sec": _uint,
    "cloud_retries": _uint,
    "aziot_keys": _map(_str),
    "preloaded_keys": _map(_key_location),
    "cert_issuance": _table({"est": _table({"trusted_certs": _list(_url), "auth": _table_any, "urls": _map(_url)},
                                           required=("auth", "urls")),
                             "local_ca": _one_of(_table({"cert": _table_any}, required=("cert",)),
                                                 _table({"cert": _url, "pk": _key_location}, required=("cert", "pk")))}),
    "preloaded_certs": _map(_one_of(_url, _list(_url))),
    "tpm": _table_any,
    "aziot_max_requests": _map(_uint),
    "endpoints": _table_any,
}, required=("provisioning",), aliases={"parent_hostname": "local_gateway_hostname"})


def validate(doc) -> tuple:
    """``(errors, unknown)`` for a parsed config.toml: errors the product refuses, keys it does not know."""
    ctx = _Ctx()
    _TOP(doc, "", ctx)
    return ctx.errors, ctx.unknown


def pre_12_keys(unknown) -> list:
    """The unknown keys that belong to the pre-1.2 configuration, with what replaces each."""
    found = []
    for key in unknown:
        for old, new in PRE_12_KEYS.items():
            if key == old or key.startswith(old + "."):
                found.append((key, new))
                break
    return found
