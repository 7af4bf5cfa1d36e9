# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet.azure_iot.x509_chain_problems filter (documentation: x509_chain_problems.yml)."""

from __future__ import annotations

import datetime

from ansible.errors import AnsibleFilterError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
except ImportError:  # pragma: no cover - reported when the filter is used
    x509 = None


def _certs(pem, what):
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise AnsibleFilterError(f"x509_chain_problems: {what} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise AnsibleFilterError(f"x509_chain_problems: {what} is not valid PEM ({exc})") from None


def _name(cert) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def x509_chain_problems(chain_pem, trust_pem, renew_before_days=0):
    """What is wrong with CHAIN_PEM (a leaf or edge CA first, then its issuers) as a chain up to one of the roots
    in TRUST_PEM: each certificate must be signed by the next, the last by a trusted root, none may be expired
    (or end within RENEW_BEFORE_DAYS), and an edge CA must be a CA. An empty list when nothing is wrong."""
    if x509 is None:
        raise AnsibleFilterError("x509_chain_problems needs the Python package cryptography on the controller")
    chain = _certs(chain_pem, "the certificate chain")
    roots = _certs(trust_pem, "the trust bundle")
    problems = []
    now = datetime.datetime.now(datetime.timezone.utc)
    horizon = now + datetime.timedelta(days=int(renew_before_days))
    for cert in chain:
        if cert.not_valid_after_utc <= now:
            problems.append(f"{_name(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        elif cert.not_valid_after_utc <= horizon:
            problems.append(f"{_name(cert)} ends on {cert.not_valid_after_utc:%Y-%m-%d}, within {renew_before_days} days")
    for cert, issuer in zip(chain, chain[1:]):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            problems.append(f"{_name(cert)} is not signed by the next certificate of the chain, {_name(issuer)}")
    top = chain[-1]
    anchored = False
    for root in roots:
        if top.fingerprint(top.signature_hash_algorithm) == root.fingerprint(top.signature_hash_algorithm):
            anchored = True
            break
        try:
            top.verify_directly_issued_by(root)
            anchored = True
            break
        except (ValueError, TypeError, InvalidSignature):
            continue
    if not anchored:
        problems.append(f"the chain ends at {_name(top)}, which no certificate of the trust bundle signed "
                        f"(trust bundle: {', '.join(_name(r) for r in roots)})")
    try:
        bc = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            problems.append(f"{_name(chain[0])} is not a CA (an edge CA must be one: basicConstraints CA:TRUE)")
    except x509.ExtensionNotFound:
        problems.append(f"{_name(chain[0])} has no basicConstraints (an edge CA needs CA:TRUE)")
    return problems


class FilterModule:
    def filters(self):
        return {"x509_chain_problems": x509_chain_problems}
