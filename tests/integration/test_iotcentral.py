"""iotcentral_device and iotcentral_device_info: real ansible-playbook runs against the emulator's Central app."""

from __future__ import annotations

import pytest
from helpers import counting, play, run_ok, task

TEMPLATE = "dtmi:contoso:testDeviceTemplate;1"


def central(name, **args):
    return task(name, "iotcentral_device", **args)



@pytest.fixture
def app(emulator):
    import ssl

    import httpx
    c = httpx.Client(base_url=emulator.env["IOTCENTRAL_APP_URL"], timeout=30,
                     verify=ssl.create_default_context(cafile=emulator.env["IOTCENTRAL_CA_PATH"]),
                     headers={"Authorization": emulator.env["IOTCENTRAL_API_TOKEN"]}, params={"api-version": "2022-07-31"})
    yield c
    c.close()


def test_create_idempotent_and_each_field(ansible, emulator, app):
    create = central("create", device_id="thermo-1", display_name="Thermo 1", template=TEMPLATE, organizations=["seattle"])
    with counting(emulator) as w:
        r = run_ok(ansible, create)
    assert r.task("create").changed and w.delta("central_writes") == 1
    dev = app.get("/api/devices/thermo-1").json()
    assert dev["displayName"] == "Thermo 1" and dev["enabled"] is True and dev["simulated"] is False
    with counting(emulator) as w:
        again = run_ok(ansible, create)
    assert not again.task("create").changed and w.writes == 0
    for option, value, key in (("display_name", "Renamed", "displayName"), ("enabled", False, "enabled"),
                               ("simulated", True, "simulated"), ("organizations", [], "organizations")):
        with counting(emulator) as w:
            r = run_ok(ansible, central("update", device_id="thermo-1", **{option: value}))
        assert r.task("update").changed and r.task("update").result["changes"] == [option] and w.writes == 1
        assert app.get("/api/devices/thermo-1").json()[key] == value
    final = app.get("/api/devices/thermo-1").json()
    assert final["template"] == TEMPLATE and final["displayName"] == "Renamed"  # never a blind PUT


def test_check_mode_and_diff(ansible, emulator, app):
    with counting(emulator) as w:
        r = run_ok(ansible, central("c", device_id="d1", display_name="D1"), check=True, diff=True)
        run_ok(ansible, central("c", device_id="d1", state="absent"), check=True)
    assert w.writes == 0 and r.task("c").changed
    assert r.task("c").result["diff"]["after"]["display_name"] == "D1" and r.task("c").result["diff"]["before"] == {}
    assert app.get("/api/devices/d1").status_code == 404
    run_ok(ansible, central("c", device_id="d1", display_name="D1"))
    with counting(emulator) as w:
        u = run_ok(ansible, central("u", device_id="d1", enabled=False), check=True, diff=True)
    assert w.writes == 0 and u.task("u").changed
    assert u.task("u").result["diff"]["before"]["enabled"] is True and u.task("u").result["diff"]["after"]["enabled"] is False


def test_delete_twice(ansible, emulator, app):
    run_ok(ansible, central("c", device_id="gone"))
    r = run_ok(ansible, central("d", device_id="gone", state="absent"))
    assert r.task("d").changed and app.get("/api/devices/gone").status_code == 404
    with counting(emulator) as w:
        again = run_ok(ansible, central("d", device_id="gone", state="absent"))
    assert not again.task("d").changed and w.writes == 0


def test_pinned_etag_conflict_and_concurrent_change(ansible, app):
    run_ok(ansible, central("c", device_id="pin"))
    etag = app.get("/api/devices/pin").json()["etag"]
    app.patch("/api/devices/pin", json={"displayName": "changed elsewhere"})
    r = ansible.run(play(central("stale", device_id="pin", enabled=False, etag=etag)))
    assert r.rc != 0 and "changed by someone else" in r.task("stale").result["msg"]
    assert app.get("/api/devices/pin").json()["enabled"] is True
    current = app.get("/api/devices/pin").json()["etag"]
    ok = run_ok(ansible, central("fresh", device_id="pin", enabled=False, etag=current))
    assert ok.task("fresh").changed and app.get("/api/devices/pin").json()["displayName"] == "changed elsewhere"


def test_bad_token_and_unknown_template(ansible, emulator):
    with counting(emulator) as w:
        r = ansible.run(play(central("bad token", device_id="x", api_token="SharedAccessSignature sr=a&sig=b&skn=c&se=1")))
    assert r.rc != 0 and "HTTP 401" in r.task("bad token").result["msg"] and "not valid" in r.task("bad token").result["msg"]
    r = ansible.run(play(central("bad template", device_id="x", template="dtmi:nope:missing;1")))
    msg = r.task("bad template").result["msg"]
    assert r.rc != 0 and msg.startswith("template: 'dtmi:nope:missing;1' does not exist in this IoT Central application")
    for args, fragment in (({"device_id": "Has Upper"}, "device id"), ({"device_id": "x", "organizations": ["a", "b"]}, "one organization"),
                           ({"device_id": "x", "api_token": "plain"}, "api_token"), ({"device_id": "x", "app_url": "http://x"}, "https")):
        with counting(emulator) as w:
            r = ansible.run(play(central("bad", **args)))
        assert r.rc != 0 and fragment in r.task("bad").result["msg"] and w.writes == 0
    assert w.writes == 0


def test_credentials_and_info(ansible, emulator):
    run_ok(ansible, central("a", device_id="a1", template=TEMPLATE, organizations=["seattle"]),
           central("b", device_id="b1"), *[central(f"n{i}", device_id=f"n{i:02d}") for i in range(27)])
    r = run_ok(ansible, central("creds", device_id="a1", return_credentials=True),
               task("all", "iotcentral_device_info"),
               task("one", "iotcentral_device_info", device_id="a1"),
               task("tmpl", "iotcentral_device_info", template=TEMPLATE),
               task("org", "iotcentral_device_info", organization="seattle"), allow_secrets=True)
    creds = r.task("creds").result["credentials"]
    assert creds["idScope"].startswith("0ne") and creds["symmetricKey"]["primaryKey"]
    assert len(r.task("all").result["devices"]) == 29  # two pages
    assert [d["id"] for d in r.task("one").result["devices"]] == ["a1"]
    assert [d["id"] for d in r.task("tmpl").result["devices"]] == ["a1"] == [d["id"] for d in r.task("org").result["devices"]]
    token = emulator.env["IOTCENTRAL_API_TOKEN"].split("sig=")[1].split("&")[0]
    assert token not in r.output


def test_module_defaults_group(ansible, emulator):
    defaults = {"group/fleet.azure_iot.iotcentral": {"app_url": emulator.env["IOTCENTRAL_APP_URL"],
                                                    "api_token": emulator.env["IOTCENTRAL_API_TOKEN"],
                                                    "ca_path": emulator.env["IOTCENTRAL_CA_PATH"]}}
    r = ansible.run(play(central("c", device_id="md"), task("i", "iotcentral_device_info", device_id="md"),
                         module_defaults=defaults),
                    env={"IOTCENTRAL_APP_URL": "", "IOTCENTRAL_API_TOKEN": "", "IOTCENTRAL_CA_PATH": ""})
    assert r.rc == 0, r.output[-2000:]
    assert r.task("i").result["devices"][0]["id"] == "md"
