"""The fleet.azure_iot.sas_token filter signs what az iot hub generate-sas-token signs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.filter.sas_token import sas_token

KEY = base64.b64encode(b"k" * 32).decode()


def fields(token: str) -> dict:
    assert token.startswith("SharedAccessSignature ")
    return dict(p.split("=", 1) for p in token[len("SharedAccessSignature "):].split("&"))


def expected_sig(resource: str, se: str, key: str = KEY) -> str:
    sr = urllib.parse.quote_plus(resource)
    digest = hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote(base64.b64encode(digest).decode(), safe="")


def test_device_module_and_policy_tokens():
    t = fields(sas_token(f"HostName=h.azure-devices.net;DeviceId=dev 1;SharedAccessKey={KEY}", expiry=600))
    assert urllib.parse.unquote_plus(t["sr"]) == "h.azure-devices.net/devices/dev%201" and "skn" not in t
    assert t["sig"] == expected_sig("h.azure-devices.net/devices/dev%201", t["se"])
    assert abs(int(t["se"]) - (time.time() + 600)) < 60
    m = fields(sas_token(f"HostName=h;DeviceId=gw;ModuleId=filter;SharedAccessKey={KEY}"))
    assert urllib.parse.unquote_plus(m["sr"]) == "h/devices/gw/modules/filter"
    p = fields(sas_token(f"HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"))
    assert urllib.parse.unquote_plus(p["sr"]) == "h" and p["skn"] == "iothubowner"
    k = fields(sas_token(KEY, resource_uri="h/devices/x"))
    assert k["sig"] == expected_sig("h/devices/x", k["se"])


@pytest.mark.parametrize("value,kw,fragment", [
    (KEY, {}, "resource_uri is required"),
    ("HostName=h;DeviceId=x", {}, "lacks HostName or SharedAccessKey"),
    ("not a key!", {"resource_uri": "h"}, "base64"),
    (KEY, {"resource_uri": "h", "expiry": 0}, "more than 0"),
    ("", {}, "give a device"),
])
def test_bad_input_names_the_problem(value, kw, fragment):
    with pytest.raises(AnsibleFilterError, match=fragment):
        sas_token(value, **kw)
