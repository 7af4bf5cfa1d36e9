"""A deliberately small IoT Hub REST client for tests: signs SAS tokens itself (iot-api.md §7.2) and shares no
code with the collection, so tests can set up and inspect state independently of the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

import ssl

import httpx

API_VERSION = "2021-04-12"


def parse_connection_string(cs: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in cs.split(";") if part)


def sas_token(host: str, key_name: str, key: str, ttl: int = 3600, expiry: int | None = None) -> str:
    sr = urllib.parse.quote_plus(host)
    se = expiry if expiry is not None else int(time.time()) + ttl
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn={key_name}"


class HubClient:
    def __init__(self, connection_string: str, ca_path: str):
        cs = parse_connection_string(connection_string)
        self.host = cs["HostName"]
        self.token = sas_token(self.host, cs["SharedAccessKeyName"], cs["SharedAccessKey"])
        self.http = httpx.Client(base_url=f"https://{self.host}", verify=ssl.create_default_context(cafile=ca_path), timeout=30)

    def request(self, method: str, path: str, json=None, headers=None, params=None, auth: str | None = "default"):
        h = {"Content-Type": "application/json; charset=utf-8"}
        if auth == "default":
            h["Authorization"] = self.token
        elif auth is not None:
            h["Authorization"] = auth
        h.update(headers or {})
        p = {"api-version": API_VERSION}
        if params is not None:
            p = params
        return self.http.request(method, path, json=json, headers=h, params=p)

    # conveniences
    def put_device(self, device_id: str, body: dict, if_match: str | None = None):
        headers = {"If-Match": if_match} if if_match is not None else {}
        return self.request("PUT", f"/devices/{urllib.parse.quote(device_id, safe='')}", json=body, headers=headers)

    def get_device(self, device_id: str):
        return self.request("GET", f"/devices/{urllib.parse.quote(device_id, safe='')}")

    def delete_device(self, device_id: str, if_match: str | None = "*"):
        headers = {"If-Match": if_match} if if_match is not None else {}
        return self.request("DELETE", f"/devices/{urllib.parse.quote(device_id, safe='')}", headers=headers)

    def bulk(self, entries: list):
        return self.request("POST", "/devices", json=entries)

    def query(self, text: str, max_items: int | None = None, continuation: str | None = None):
        headers = {}
        if max_items:
            headers["x-ms-max-item-count"] = str(max_items)
        if continuation:
            headers["x-ms-continuation"] = continuation
        return self.request("POST", "/devices/query", json={"query": text}, headers=headers)

    def query_all(self, text: str, max_items: int = 1000) -> list:
        items, token = [], None
        while True:
            r = self.query(text, max_items, token)
            r.raise_for_status()
            items += r.json()
            token = r.headers.get("x-ms-continuation")
            if not token:
                return items

    def close(self):
        self.http.close()
