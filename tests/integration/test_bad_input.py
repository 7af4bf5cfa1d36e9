"""Bad input across every module and role: a clear message naming the field, no write, no traceback."""

from __future__ import annotations

import base64

import yaml
from helpers import counting

K = base64.b64encode(b"k" * 32).decode()
SHORT = base64.b64encode(b"k" * 8).decode()
LONG = base64.b64encode(b"k" * 65).decode()
TP = "A" * 40
HUB_BAD_CS = "HostName=h;SharedAccessKeyName=p;SharedAccessKey=not*base64"
DEEP = [{"device_id": f"e{i}", "edge_enabled": True, **({"parent": f"e{i - 1}"} if i else {})} for i in range(6)]

# (module, args, fragment the message must contain): all refused before the first request.
BEFORE_ANY_REQUEST = [
    ("iothub_device", {"device_id": "bad id"}, "device_id"),
    ("iothub_device", {"device_id": "x" * 129}, "device_id"),
    ("iothub_device", {"device_id": "ünï"}, "device_id"),
    ("iothub_device", {"device_id": "d", "status_reason": "r" * 129}, "status_reason"),
    ("iothub_device", {"device_id": "d", "primary_key": "not base64!"}, "primary_key"),
    ("iothub_device", {"device_id": "d", "primary_key": SHORT}, "primary_key"),
    ("iothub_device", {"device_id": "d", "secondary_key": LONG}, "secondary_key"),
    ("iothub_device", {"device_id": "d", "primary_thumbprint": "XYZ"}, "primary_thumbprint"),
    ("iothub_device", {"device_id": "d", "primary_thumbprint": "A" * 39}, "primary_thumbprint"),
    ("iothub_device", {"device_id": "d", "primary_key": K, "primary_thumbprint": TP}, "mutually exclusive"),
    ("iothub_device", {"device_id": "d", "auth_type": "certificate_authority", "primary_key": K}, "auth_type"),
    ("iothub_device", {"device_id": "d", "auth_type": "sas", "primary_thumbprint": TP}, "auth_type"),
    ("iothub_device", {"device_id": "d", "parent": "d"}, "parent"),
    ("iothub_device", {"device_id": "d", "parent": "bad parent"}, "parent"),
    ("iothub_device", {"device_id": "d", "connection_string": "garbage"}, "connection_string"),
    ("iothub_device", {"device_id": "d", "connection_string": "HostName=h;SharedAccessKeyName=p"}, "connection_string"),
    ("iothub_device", {"device_id": "d", "connection_string": HUB_BAD_CS}, "connection_string"),
    ("iothub_device", {"device_id": "d", "connection_string": f"HostName=h;DeviceId=d;SharedAccessKey={K}"}, "connection_string"),
    ("iothub_device", {"device_id": "d", "connection_string": "", "hostname": ""}, "connection_string"),
    ("iothub_device", {"device_id": "d", "auth_mode": "entra", "hostname": "https://myhub"}, "hostname"),
    ("iothub_device", {"device_id": "d", "retry_budget_seconds": -1}, "retry_budget_seconds"),
    ("iothub_device", {"device_id": "d", "status": "on"}, "status"),
    ("iothub_device_info", {"device_id": "bad id"}, "device_id"),
    ("iothub_device_info", {"query": "SELECT * FROM devices", "return_secrets": True}, "return_secrets"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a"}, {"device_id": "a"}]}, "declared more than once"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a", "parent": "b"}, {"device_id": "b", "edge_enabled": True, "parent": "a"}]}, "cycle"),
    ("iothub_device_bulk", {"devices": DEEP}, "at most 5"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a"}], "prune": True}, "prune_query"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a"}], "batch_size": 101}, "batch_size"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a"}], "max_concurrency": 0}, "max_concurrency"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a", "tags": {"bad.key": 1}}]}, "tags"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a", "desired_properties": {"$version": 1}}]}, "desired_properties"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a", "colour": "red"}]}, "colour"),
    ("iothub_device_bulk", {"devices": [{"device_id": "k", "edge_enabled": False}, {"device_id": "c", "parent": "k"}]}, "edge_enabled=false"),
    ("iothub_device_bulk", {"devices": [42]}, "devices[0]: must be a device id or a dictionary"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a", "primary_key": SHORT}]}, "primary_key"),
    ("iothub_device_bulk", {"tree": [{"device_id": "gw", "edge_enabled": False, "children": [{"device_id": "x"}]}]}, "cannot have children"),
    ("iothub_device_bulk", {"tree": [{"device_id": "gw", "children": [{"device_id": "c", "parent": "z"}]}]}, "contradicts"),
    ("iotcentral_device", {"device_id": "Upper Case"}, "device id"),
    ("iotcentral_device", {"device_id": "d", "organizations": ["a", "b"]}, "organization"),
    ("iotcentral_device", {"device_id": "d", "api_token": "plain-token"}, "api_token"),
    ("iotcentral_device", {"device_id": "d", "app_url": "http://insecure"}, "app_url"),
    ("iotcentral_device", {"device_id": "d", "app_url": "", "app_subdomain": ""}, "app_subdomain"),
    ("iotcentral_device_info", {"device_id": "Bad"}, "device id"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a"}], "prune_query": "deviceId = 'a'"}, "prune_query"),
    ("iothub_device_bulk", {"devices": [{"device_id": "a"}], "max_deletes": -1}, "max_deletes"),
]

# Refused by the service or by a read: requests are made, but no write.
NO_WRITE = [
    ("iothub_device", {"device_id": "d", "connection_string": "WRONG_KEY"}, "HTTP 401 IotHubUnauthorizedAccess"),
    ("iothub_device", {"device_id": "d", "ca_path": "/etc/ssl/certs/ca-certificates.crt"}, "TLS certificate verification failed"),
    ("iothub_device", {"device_id": "d", "parent": "no-such-gw"}, "parent: device 'no-such-gw' does not exist"),
    ("iothub_device", {"device_id": "d", "parent": "plain"}, "is not an IoT Edge device"),
    ("iothub_device", {"device_id": "new-cam", "auth_type": "self_signed"}, "primary_thumbprint"),
    ("iothub_device", {"device_id": "new-cam2", "secondary_thumbprint": TP}, "primary_thumbprint"),
    ("iothub_device_bulk", {"devices": [], "prune": True, "prune_query": "deviceId = 'plain'"}, "max_deletes"),
    ("iothub_device_info", {"parent": "plain"}, "is not an IoT Edge device"),
    ("iothub_device_bulk", {"devices": [{"device_id": "c", "parent": "no-such-gw"}]}, "does not exist"),
    ("iotcentral_device", {"device_id": "d", "api_token": "SharedAccessSignature sr=a&sig=b&skn=c&se=1"}, "HTTP 401"),
    ("iotcentral_device", {"device_id": "d", "template": "dtmi:unknown:template;1"}, "dtmi:unknown:template;1"),
    ("iotcentral_device", {"device_id": "d", "organizations": ["atlantis"]}, "atlantis"),
]


def cases_play(cases, emulator) -> str:
    """Secrets go in extra vars, as they would come from a vault: Ansible shows a failing task's source lines."""
    tasks, play_vars = [], {}
    for i, (module, args, _) in enumerate(cases):
        args = dict(args)
        if args.get("connection_string") == "WRONG_KEY":
            args["connection_string"] = emulator.connection_string.split("SharedAccessKey=")[0] + f"SharedAccessKey={K}"
        for key in ("connection_string", "api_token"):
            if isinstance(args.get(key), str) and args[key]:
                play_vars[f"case_{i}_{key}"] = args[key]
                args[key] = "{{ case_%d_%s }}" % (i, key)
        tasks.append({"name": f"case {i}", f"fleet.azure_iot.{module}": args, "ignore_errors": True})
    return yaml.safe_dump([{"name": "bad input", "hosts": "localhost", "gather_facts": False, "tasks": tasks}],
                          sort_keys=False), play_vars


def check_cases(run, cases):
    for i, (module, args, fragment) in enumerate(cases):
        res = run.task(f"case {i}").result
        assert run.task(f"case {i}").failed, (module, args)
        assert fragment in res["msg"], (module, args, res["msg"])
        assert "Traceback (most recent call last)" not in str(res.get("exception", "")), (module, args)
    assert "Traceback (most recent call last)" not in run.output


def test_refused_before_any_request(ansible, emulator):
    assert len(BEFORE_ANY_REQUEST) + len(NO_WRITE) >= 40
    with counting(emulator) as w:
        text, secrets = cases_play(BEFORE_ANY_REQUEST, emulator)
        r = ansible.run(text, extra_vars=secrets)
    check_cases(r, BEFORE_ANY_REQUEST)
    assert w.delta("requests") == 0


def test_refused_without_writes(ansible, emulator, hub):
    hub.put_device("plain", {"deviceId": "plain"})
    with counting(emulator) as w:
        text, secrets = cases_play(NO_WRITE, emulator)
        r = ansible.run(text, extra_vars=secrets)
    check_cases(r, NO_WRITE)
    assert w.writes == 0 and w.delta("registry_writes") == 0 and w.delta("central_writes") == 0


def role_play(role, vars) -> str:
    return yaml.safe_dump([{"name": "role", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "apply", "ansible.builtin.include_role": {"name": f"fleet.azure_iot.{role}"}, "vars": vars}]}],
        sort_keys=False)


def test_roles_refuse_bad_variables(ansible, emulator):
    cases = [
        ("edge_hierarchy", {"edge_hierarchy_tree": "not a list"}, "edge_hierarchy_tree"),
        ("edge_gateway", {"edge_gateway_children": []}, "edge_gateway_id"),
        ("edge_gateway", {"edge_gateway_id": "gw", "edge_gateway_children": [{"device_id": "bad id"}]}, "bad id"),
        ("edge_hierarchy", {"edge_hierarchy_tree": [{"device_id": "gw", "edge_enabled": False, "children": [{"device_id": "x"}]}]},
         "cannot have children"),
        ("edge_gateway", {"edge_gateway_id": "gw", "edge_gateway_primary_key": SHORT}, "primary_key"),
    ]
    for role, vars, fragment in cases:
        with counting(emulator) as w:
            r = ansible.run(role_play(role, vars))
        assert r.rc != 0 and fragment in r.output, (role, vars, r.output[-2000:])
        assert "Traceback (most recent call last)" not in r.output and w.writes == 0
