# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: DPS enrollments (individual, and groups) as declared state: the options checked
before any request (``EnrollmentSpec``), the service's record seen under option names (``enrollment_view``), and
the one pure plan (``plan_enrollment``) that dps_enrollment, dps_enrollment_group and dps_enrollment_bulk share.

Rules that live here and nowhere else:
- an option that is not given is not managed: an update is the record as read, with the declared options put in
  (a PUT replaces the enrollment, so everything else is echoed back);
- symmetric keys are compared only when declared, and an update of a symmetric-key enrollment carries the keys it
  has (read through the attestation mechanism, since GET hides them): a PUT never regenerates them by accident;
  ``rotate_keys`` is the deliberate way to change them;
- an X.509 enrollment's certificates are compared by their SHA-256 thumbprint (what the service returns of them);
  an update that must send them again needs them declared, since the service does not return the PEM.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import (
    REQUIRED,
    OptionSpec,
    check_key,
    check_twin_section,
)

# "up to 128 characters ... alphanumeric characters plus certain special characters : . _ -. No special characters
# allowed at start or end." (iot-api-2.md §4.3)
REGISTRATION_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9:._-]{0,126}[A-Za-z0-9])?$")
ATTESTATIONS = {"symmetric_key": "symmetricKey", "x509": "x509", "tpm": "tpm"}
ATTESTATIONS_BACK = {v: k for k, v in ATTESTATIONS.items()}
REPROVISION = {"reprovision_and_migrate_data": (True, True), "reprovision_and_reset_data": (True, False),
               "never": (False, False)}  # (updateHubAssignment, migrateDeviceData), the CLI's mapping (§4.3)
REPROVISION_BACK = {v: k for k, v in REPROVISION.items()}
ALLOCATION_POLICIES = ("hashed", "geoLatency", "static", "custom")
READ_ONLY = ("etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "registrationState")
SECRET_OPTIONS = ("primary_key", "secondary_key")
MANAGED = ("attestation", "x509_certificate", "x509_secondary_certificate", "x509_ca_reference",
           "x509_secondary_ca_reference", "tpm_endorsement_key", "tpm_storage_root_key", "device_id",
           "provisioning_status", "iot_hub_host_name", "iot_hubs", "allocation_policy", "custom_allocation",
           "reprovision_policy", "iot_edge", "initial_twin", "optional_device_information")


KIND_OPTIONS = {"symmetric_key": ("primary_key", "secondary_key", "rotate_keys"),
                "x509": ("x509_certificate", "x509_secondary_certificate", "x509_ca_reference",
                         "x509_secondary_ca_reference"),
                "tpm": ("tpm_endorsement_key", "tpm_storage_root_key")}


def check_registration_id(value: str, option: str = "registration_id") -> str:
    if not isinstance(value, str) or not REGISTRATION_ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid {option}: up to 128 letters, digits and ':', '.', '_', '-', "
                         "starting and ending with a letter or digit")
    return value


def pem_thumbprint(pem: str) -> str:
    """SHA-256 of the certificate's DER, upper-case hex, as the service reports ``sha256Thumbprint``."""
    body = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem or "", re.S)
    if not body:
        raise ValueError("must be a PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)")
    try:
        der = base64.b64decode("".join(body.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not a valid PEM certificate (its body is not base64)") from None
    return hashlib.sha256(der).hexdigest().upper()


def _check_pem(value: str) -> str:
    pem_thumbprint(value)
    return value


def _check_b64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (as tpm2 tools print the endorsement key)") from None
    return value


def _check_initial_twin(value: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(value) - {"tags", "desired_properties"}
    if unknown:
        raise ValueError(f"takes tags and desired_properties, not {', '.join(sorted(unknown))}")
    for section in ("tags", "desired_properties"):
        if value.get(section) is not None:
            if not isinstance(value[section], dict):
                raise ValueError(f"{section} must be a dictionary")
            try:
                check_twin_section(value[section], section)
            except ValueError as exc:
                raise ValueError(f"{section}: {exc}") from None
    return value


def _check_custom_allocation(value: Dict[str, Any]) -> Dict[str, Any]:
    if set(value) != {"webhook_url", "api_version"} or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError("takes webhook_url (the Azure Function's URL, with its key) and api_version "
                         "(for example 2019-03-31)")
    if not value["webhook_url"].startswith("https://"):
        raise ValueError("webhook_url must be an https:// URL")
    return value


class EnrollmentSpec(OptionSpec):
    """One individual enrollment (``registration_id``) or enrollment group (``enrollment_group_id``) as declared.
    ``None``: not managed."""

    __slots__ = ("registration_id", "enrollment_group_id", "state", "attestation", "primary_key", "secondary_key",
                 "rotate_keys", "x509_certificate", "x509_secondary_certificate", "x509_ca_reference",
                 "x509_secondary_ca_reference", "tpm_endorsement_key", "tpm_storage_root_key", "device_id",
                 "provisioning_status", "iot_hub_host_name", "iot_hubs", "allocation_policy", "custom_allocation",
                 "reprovision_policy", "iot_edge", "initial_twin", "optional_device_information")
    GROUP = False
    ID_OPTION = "registration_id"
    OPTIONS: Dict[str, Tuple[Any, Any]] = {
        "registration_id": (str, REQUIRED),
        "state": (("present", "absent"), "present"),
        "attestation": (tuple(ATTESTATIONS), None),
        "primary_key": (str, None),
        "secondary_key": (str, None),
        "rotate_keys": (("primary", "secondary", "swap"), None),
        "x509_certificate": (str, None),
        "x509_secondary_certificate": (str, None),
        "tpm_endorsement_key": (str, None),
        "tpm_storage_root_key": (str, None),
        "device_id": (str, None),
        "provisioning_status": (("enabled", "disabled"), None),
        "iot_hub_host_name": (str, None),
        "iot_hubs": (list, None),
        "allocation_policy": (ALLOCATION_POLICIES, None),
        "custom_allocation": (dict, None),
        "reprovision_policy": (tuple(REPROVISION), None),
        "iot_edge": (bool, None),
        "initial_twin": (dict, None),
        "optional_device_information": (dict, None),
    }
    CHECKS: Dict[str, Any] = {
        "registration_id": check_registration_id,
        "primary_key": check_key,
        "secondary_key": check_key,
        "x509_certificate": _check_pem,
        "x509_secondary_certificate": _check_pem,
        "tpm_endorsement_key": _check_b64,
        "tpm_storage_root_key": _check_b64,
        "initial_twin": _check_initial_twin,
        "custom_allocation": _check_custom_allocation,
    }

    @property
    def item_id(self) -> str:
        return getattr(self, self.ID_OPTION)

    @property
    def label(self) -> str:
        return f"{'enrollment group' if self.GROUP else 'enrollment'} {self.item_id!r}"

    def declared(self, name: str) -> bool:
        return name in self.OPTIONS and getattr(self, name) is not None

    def _rules(self) -> List[str]:
        problems = []
        given = [o for o in MANAGED + SECRET_OPTIONS + ("rotate_keys",) if self.declared(o)]
        if self.state == "absent":
            if given:
                return [f"state=absent takes only {self.ID_OPTION}, not {', '.join(given)}"]
            return []
        for kind, options in KIND_OPTIONS.items():
            used = [o for o in options if self.declared(o)]
            if used and self.attestation not in (None, kind):
                problems.append(f"{', '.join(used)} belong to attestation={kind}; set attestation: {kind}"
                                + (f" (not {self.attestation})" if self.attestation else ""))
        if self.rotate_keys and (self.declared("primary_key") or self.declared("secondary_key")):
            problems.append("rotate_keys generates new keys: it cannot be combined with primary_key or secondary_key")
        if self.attestation == "x509":
            certs = self.declared("x509_certificate")
            refs = self.declared("x509_ca_reference")
            if self.declared("x509_secondary_certificate") and not certs:
                problems.append("x509_secondary_certificate needs x509_certificate (the primary)")
            if self.declared("x509_secondary_ca_reference") and not refs:
                problems.append("x509_secondary_ca_reference needs x509_ca_reference (the primary)")
            if certs and refs:
                problems.append("x509_certificate and x509_ca_reference are mutually exclusive")
            if not certs and not refs:
                problems.append("attestation=x509 needs x509_certificate"
                                + (" or x509_ca_reference" if self.GROUP else ""))
        if self.attestation == "tpm" and not self.declared("tpm_endorsement_key"):
            problems.append("attestation=tpm needs tpm_endorsement_key")
        policy = self.allocation_policy
        if self.iot_hubs is not None and not self.iot_hubs:
            problems.append("iot_hubs must name at least one linked IoT hub")
        if policy == "static" and self.iot_hubs is not None and len(self.iot_hubs) != 1:
            problems.append("allocation_policy=static takes exactly one hub in iot_hubs")
        if policy == "custom" and not self.declared("custom_allocation"):
            problems.append("allocation_policy=custom needs custom_allocation (webhook_url and api_version)")
        if self.declared("custom_allocation") and policy != "custom":
            problems.append("custom_allocation is used only with allocation_policy=custom")
        return problems


class EnrollmentGroupSpec(EnrollmentSpec):
    """An enrollment group: no TPM, no device id, no device information; X.509 by signing certificate or CA
    reference."""

    __slots__ = ()
    GROUP = True
    ID_OPTION = "enrollment_group_id"
    OPTIONS = {("enrollment_group_id" if k == "registration_id" else k): v
               for k, v in EnrollmentSpec.OPTIONS.items()
               if k not in ("tpm_endorsement_key", "tpm_storage_root_key", "device_id", "optional_device_information")}
    OPTIONS["attestation"] = (("symmetric_key", "x509"), None)
    OPTIONS["x509_ca_reference"] = (str, None)
    OPTIONS["x509_secondary_ca_reference"] = (str, None)
    CHECKS = dict(EnrollmentSpec.CHECKS, enrollment_group_id=lambda v: check_registration_id(v, "enrollment_group_id"))


# ----------------------------------------------------------------------------------------------- the view
def _certs_of(x509: Dict[str, Any], group: bool) -> Dict[str, Any]:
    return (x509.get("signingCertificates") if group else x509.get("clientCertificates")) or {}


def enrollment_view(rec: Optional[Dict[str, Any]], group: bool) -> Optional[Dict[str, Any]]:
    """The service's record under option names, with the service's defaults made explicit (a status never set is
    enabled, a reprovision policy never set migrates, no capabilities is no IoT Edge).  Keys are not in it."""
    if rec is None:
        return None
    att = rec.get("attestation") or {}
    kind = ATTESTATIONS_BACK.get(att.get("type"), att.get("type"))
    x509 = att.get("x509") or {}
    certs = _certs_of(x509, group)
    refs = x509.get("caReferences") or {}
    tpm = att.get("tpm") or {}
    rp = rec.get("reprovisionPolicy") or {}
    twin = rec.get("initialTwin")
    cad = rec.get("customAllocationDefinition")

    def thumb(slot: str) -> Optional[str]:
        info = (certs.get(slot) or {}).get("info") or {}
        if info.get("sha256Thumbprint"):
            return info["sha256Thumbprint"].upper()
        pem = (certs.get(slot) or {}).get("certificate")
        return pem_thumbprint(pem) if pem else None

    view = {
        "attestation": kind,
        "x509_certificate": thumb("primary"),
        "x509_secondary_certificate": thumb("secondary"),
        "x509_ca_reference": refs.get("primary"),
        "x509_secondary_ca_reference": refs.get("secondary"),
        "tpm_endorsement_key": tpm.get("endorsementKey"),
        "tpm_storage_root_key": tpm.get("storageRootKey"),
        "device_id": rec.get("deviceId"),
        "provisioning_status": rec.get("provisioningStatus") or "enabled",
        "iot_hub_host_name": rec.get("iotHubHostName"),
        "iot_hubs": sorted(rec.get("iotHubs") or []) or None,
        "allocation_policy": rec.get("allocationPolicy"),
        "custom_allocation": {"webhook_url": cad.get("webhookUrl"), "api_version": cad.get("apiVersion")}
        if cad else None,
        "reprovision_policy": REPROVISION_BACK.get(
            (rp.get("updateHubAssignment", True), rp.get("migrateDeviceData", True)), "reprovision_and_migrate_data"),
        "iot_edge": bool((rec.get("capabilities") or {}).get("iotEdge", False)),
        "initial_twin": {"tags": (twin or {}).get("tags") or {},
                         "desired_properties": ((twin or {}).get("properties") or {}).get("desired") or {}}
        if twin else None,
        "optional_device_information": rec.get("optionalDeviceInformation"),
    }
    if group:
        for name in ("tpm_endorsement_key", "tpm_storage_root_key", "device_id", "optional_device_information"):
            view.pop(name)
    return view


def _declared_view(spec: EnrollmentSpec) -> Dict[str, Any]:
    """The declared options as they appear in a view (certificates as thumbprints, lists sorted)."""
    out = {}
    for name in MANAGED:
        if not spec.declared(name):
            continue
        value = getattr(spec, name)
        if name in ("x509_certificate", "x509_secondary_certificate"):
            value = pem_thumbprint(value)
        elif name == "iot_hubs":
            value = sorted(value)
        elif name == "initial_twin":
            value = {"tags": value.get("tags") or {}, "desired_properties": value.get("desired_properties") or {}}
        out[name] = value
    return out


# ----------------------------------------------------------------------------------------------- the plan
@dataclass
class EnrollmentPlan:
    item_id: str
    action: str  # create | update | delete | none
    changes: Dict[str, tuple] = field(default_factory=dict)
    body: Optional[Dict[str, Any]] = None
    etag: Optional[str] = None
    before: Optional[Dict[str, Any]] = None
    after: Optional[Dict[str, Any]] = None
    keys: Optional[Tuple[Optional[str], Optional[str]]] = None  # the keys the write carries (None: the service's)
    needs_keys: bool = False  # the plan cannot be made without the current keys (read them and plan again)

    @property
    def changed(self) -> bool:
        return self.action != "none"


def rotated(keys: Tuple[str, str], how: str, fresh) -> Tuple[str, str]:
    primary, secondary = keys
    if how == "primary":
        return fresh(), secondary
    if how == "secondary":
        return primary, fresh()
    return secondary, primary


def body_of(spec: EnrollmentSpec, base: Optional[Dict[str, Any]], keys: Optional[Tuple]) -> Dict[str, Any]:
    """The PUT body: BASE (the record as read, for an update) with the declared options put in."""
    group = spec.GROUP
    body = {k: copy.deepcopy(v) for k, v in (base or {}).items() if k not in READ_ONLY and v is not None}
    body["enrollmentGroupId" if group else "registrationId"] = spec.item_id
    kind = spec.attestation or ATTESTATIONS_BACK.get((body.get("attestation") or {}).get("type"))
    if spec.attestation is not None or kind == "symmetric_key":
        att: Dict[str, Any] = {"type": ATTESTATIONS[kind]}
        if kind == "symmetric_key":
            att["symmetricKey"] = {"primaryKey": keys[0], "secondaryKey": keys[1]} if keys else {}
        elif kind == "tpm":
            att["tpm"] = {"endorsementKey": spec.tpm_endorsement_key}
            if spec.tpm_storage_root_key:
                att["tpm"]["storageRootKey"] = spec.tpm_storage_root_key
        else:
            if spec.x509_certificate:
                certs = {"primary": {"certificate": spec.x509_certificate}}
                if spec.x509_secondary_certificate:
                    certs["secondary"] = {"certificate": spec.x509_secondary_certificate}
                att["x509"] = {"signingCertificates" if group else "clientCertificates": certs}
            else:
                refs = {"primary": spec.x509_ca_reference}
                if spec.x509_secondary_ca_reference:
                    refs["secondary"] = spec.x509_secondary_ca_reference
                att["x509"] = {"caReferences": refs}
        body["attestation"] = att
    simple = {"device_id": "deviceId", "provisioning_status": "provisioningStatus",
              "iot_hub_host_name": "iotHubHostName", "allocation_policy": "allocationPolicy",
              "optional_device_information": "optionalDeviceInformation"}
    for option, name in simple.items():
        if spec.declared(option):
            body[name] = copy.deepcopy(getattr(spec, option))
    if spec.declared("iot_hubs"):
        body["iotHubs"] = list(spec.iot_hubs)
    if spec.declared("custom_allocation"):
        body["customAllocationDefinition"] = {"webhookUrl": spec.custom_allocation["webhook_url"],
                                              "apiVersion": spec.custom_allocation["api_version"]}
    elif spec.declared("allocation_policy"):
        body.pop("customAllocationDefinition", None)
    if spec.declared("reprovision_policy"):
        update, migrate = REPROVISION[spec.reprovision_policy]
        body["reprovisionPolicy"] = {"updateHubAssignment": update, "migrateDeviceData": migrate}
    if spec.declared("iot_edge"):
        body["capabilities"] = {"iotEdge": spec.iot_edge}
    if spec.declared("initial_twin"):
        twin: Dict[str, Any] = {}
        if spec.initial_twin.get("tags"):
            twin["tags"] = copy.deepcopy(spec.initial_twin["tags"])
        if spec.initial_twin.get("desired_properties"):
            twin["properties"] = {"desired": copy.deepcopy(spec.initial_twin["desired_properties"])}
        body["initialTwin"] = twin
    return body


def plan_enrollment(spec: EnrollmentSpec, current: Optional[Dict[str, Any]],
                    current_keys: Optional[Tuple[str, str]] = None,
                    intended_keys: Optional[Tuple[str, str]] = None, fresh=None) -> EnrollmentPlan:
    """The pure plan.  CURRENT is the record as GET returns it (keys hidden); CURRENT_KEYS the keys from the
    attestation mechanism when they were read; INTENDED_KEYS the keys a rotation decided earlier in this task
    (re-plans carry them, never rotate again); FRESH makes a new key."""
    group = spec.GROUP
    before = enrollment_view(current, group)
    if spec.state == "absent":
        if current is None:
            return EnrollmentPlan(spec.item_id, "none")
        return EnrollmentPlan(spec.item_id, "delete", {"state": ("present", "absent")}, None, current.get("etag"),
                              before, None)
    declared = _declared_view(spec)
    declared_keys = (spec.primary_key, spec.secondary_key)
    if current is None:
        if spec.attestation is None:
            raise PlanError(f"attestation: {spec.label} does not exist; creating it needs attestation "
                            "(symmetric_key, x509 or tpm) and its options")
        keys = None
        if spec.attestation == "symmetric_key" and any(declared_keys):
            if not all(declared_keys):
                raise PlanError("primary_key and secondary_key: declare both or neither (the service generates "
                                "both when neither is given)")
            keys = declared_keys
        body = body_of(spec, None, keys)
        after = enrollment_view(body, group)
        changes = {k: (None, v) for k, v in after.items() if v is not None and k in declared}
        changes["state"] = ("absent", "present")
        return EnrollmentPlan(spec.item_id, "create", changes, body, None, None, after, keys)
    after = dict(before)
    changes = {}
    for name, value in declared.items():
        if before.get(name) != value:
            changes[name] = (before.get(name), value)
            after[name] = value
    if after.get("allocation_policy") != "custom" and after.get("custom_allocation") is not None \
            and "allocation_policy" in changes:
        changes["custom_allocation"] = (after["custom_allocation"], None)
        after["custom_allocation"] = None
    kind_after = after["attestation"]
    for kind, options in KIND_OPTIONS.items():
        used = [o for o in options if spec.declared(o)]
        if used and kind != kind_after:
            raise PlanError(f"{', '.join(used)}: {spec.label} uses attestation {kind_after}, not {kind}; set "
                            f"attestation: {kind} to change it")
    keys: Optional[Tuple] = None
    if kind_after == "symmetric_key":
        wants_keys = any(declared_keys) or spec.rotate_keys is not None or intended_keys is not None
        if current_keys is None and (wants_keys or changes):
            return EnrollmentPlan(spec.item_id, "update", changes, None, current.get("etag"), before, after,
                                  needs_keys=True)
        if current_keys is not None:
            keys = tuple(current_keys) if before["attestation"] == "symmetric_key" else (None, None)
            if intended_keys is not None:
                wanted = tuple(intended_keys)
            elif spec.rotate_keys is not None:
                wanted = rotated(keys, spec.rotate_keys, fresh)
            else:
                wanted = (spec.primary_key or keys[0], spec.secondary_key or keys[1])
            for i, name in enumerate(SECRET_OPTIONS):
                if wanted[i] != keys[i]:
                    changes[name] = ("(current)", "(new)")
            keys = wanted
    if not changes:
        return EnrollmentPlan(spec.item_id, "none", {}, None, current.get("etag"), before, before)
    if kind_after == "x509" and not spec.declared("x509_certificate") and before.get("x509_certificate"):
        raise PlanError(f"x509_certificate: updating {spec.label} sends its X.509 certificates again, and the "
                        "service does not return them: declare x509_certificate (and x509_secondary_certificate "
                        "if it has one)")
    body = body_of(spec, current, keys)
    return EnrollmentPlan(spec.item_id, "update", changes, body, current.get("etag"), before, after, keys)
