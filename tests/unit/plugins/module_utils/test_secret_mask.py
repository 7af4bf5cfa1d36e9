# -*- coding: utf-8 -*-
"""SecretMask: the same output as Ansible's own no_log masking, in time linear in the output."""
from __future__ import annotations

import base64
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible.module_utils.common.parameters import remove_values

from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import NO_LOG_PLACEHOLDER, SecretMask

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 16).decode()


def mask_of(*secrets) -> SecretMask:
    mask = SecretMask()
    for s in secrets:
        mask.add(s)
    return mask


def test_whole_values_inner_values_and_keys_are_masked_like_ansible():
    data = {"key": KEY_A, "cs": f"HostName=h;DeviceId=d;SharedAccessKey={KEY_A}", "list": [KEY_B, 1, None, True],
            "nested": [{"both": f"{KEY_B}/{KEY_A}"}], "other": "sensor-1"}
    masked = mask_of(KEY_A, KEY_B).apply(data)
    assert masked == remove_values(data, {KEY_A, KEY_B})
    assert masked["key"] == NO_LOG_PLACEHOLDER
    assert masked["cs"] == "HostName=h;DeviceId=d;SharedAccessKey=********"
    assert masked["other"] == "sensor-1"
    assert KEY_A not in repr(masked) and KEY_B not in repr(masked)
    assert data["key"] == KEY_A  # the input is left alone


def test_dict_keys_are_masked_too():
    """Stricter than Ansible, which leaves a secret used as a dictionary key as it is."""
    masked = mask_of(KEY_B).apply({KEY_B: 1, f"x{KEY_B}": 2})
    assert masked == {NO_LOG_PLACEHOLDER: 1, "x********": 2}


def test_an_empty_mask_returns_the_data_itself():
    data = {"a": ["b"]}
    assert SecretMask().apply(data) is data


def test_empty_and_non_string_secrets_are_ignored():
    mask = mask_of("", None, 5)
    assert not mask.values


def test_a_fleet_of_keys_is_masked_in_linear_time():
    """200,000 keys against 100,000 device ids: Ansible's masking makes 2e10 substring tests (hours); this one
    a lookup per id.  Asserted by the work it does, not by a timing threshold: the result is right, and the
    mask only looks at strings at least as long as a key."""
    keys = [base64.b64encode(i.to_bytes(32, "big")).decode() for i in range(200_000)]
    mask = mask_of(*keys)
    assert mask.lengths == {44}
    ids = [f"sensor-{i:07d}" for i in range(100_000)]
    result = {"unchanged": ids, "leak": f"key={keys[123_456]}"}
    t0 = time.monotonic()
    masked = mask.apply(result)
    elapsed = time.monotonic() - t0
    assert masked["unchanged"] == ids
    assert masked["leak"] == "key=********"
    print(f"masked 100,000 ids against 200,000 keys in {elapsed:.2f} s")


_text = st.text(alphabet="ab=/+;xy", max_size=40)


@settings(max_examples=300, deadline=None)
@given(secrets=st.lists(st.text(alphabet="ab=/+", min_size=1, max_size=6), max_size=4),
       data=st.recursive(_text, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(_text, inner, max_size=3), max_leaves=8))
def test_no_secret_survives(secrets, data):
    """Whatever the secrets and the data, no secret is left in any string of the output (Ansible replaces one
    secret after another, in an order of its own, so the exact text can differ where secrets overlap)."""
    mask = mask_of(*secrets)
    out = mask.apply(data)

    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)

    for s in strings(out):
        if s in (NO_LOG_PLACEHOLDER,):
            continue
        assert not any(secret in s for secret in secrets), (s, secrets)


class _Module:
    """What run_module uses of an AnsibleModule."""

    def __init__(self):
        self.params, self.warned, self.exited = {}, [], None

    def warn(self, text):
        self.warned.append(text)

    def exit_json(self, **result):
        self.exited = result

    fail_json = exit_json


def test_a_warning_is_masked_with_the_keys_the_task_learns_after_it():
    from ansible_collections.fleet.azure_iot.plugins.module_utils._module import run_module, secret_mask

    def body(module):
        module.warn(f"device d1: the hub answered with {KEY_A} (a warning before the key was known)")
        secret_mask(module).add(KEY_A)
        module.warn(f"and after: {KEY_A}")
        return {"changed": False}

    module = _Module()
    run_module(module, body)
    assert module.warned == ["device d1: the hub answered with ******** (a warning before the key was known)",
                             "and after: ********"]
    assert module.exited == {"changed": False}
