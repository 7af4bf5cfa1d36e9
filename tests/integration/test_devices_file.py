"""iothub_device_bulk ``devices_file`` (#25 item 1): a fleet read from a JSON Lines or CSV file (optionally .gz),
line by line, merged with defaults; bad files fail before any request naming the file and the line."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from helpers import counting, play, run_ok, task

N = 300


def write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)


def write_csv(path, header, rows, bom=False):
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.writer(fh, lineterminator="\r\n")  # CRLF, as a spreadsheet exports it
        w.writerow(header)
        w.writerows(rows)


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "csv"])
def test_a_fleet_file_applies_then_is_a_no_op_then_drift_is_written(ansible, emulator, hub, tmp_path, kind):
    path = tmp_path / f"fleet.{kind}"
    rows = [{"device_id": f"{kind[:3]}-{i:04d}", "tags": {"line": i % 3}, "desired_properties": {"rate": 5}}
            for i in range(N)]
    if kind == "csv":
        write_csv(path, ["device_id", "tags.line", "desired_properties.rate", "status"],
                  [[r["device_id"], r["tags"]["line"], 5, ""] for r in rows], bom=True)
    else:
        write_jsonl(path, rows, gz=kind.endswith(".gz"))
    args = dict(devices_file=str(path), defaults={"tags": {"site": "plant-7"}})
    first = run_ok(ansible, play(task("f", "iothub_device_bulk", **args)))
    assert len(first.task("f").result["created"]) == N
    twin = hub.request("GET", f"/twins/{kind[:3]}-0004").json()
    assert twin["tags"] == {"site": "plant-7", "line": 1} and twin["properties"]["desired"]["rate"] == 5
    with counting(emulator) as w:
        again = run_ok(ansible, play(task("f", "iothub_device_bulk", **args)))
    assert w.writes == 0 and not again.task("f").changed
    hub.request("PATCH", f"/twins/{kind[:3]}-0007", json={"tags": {"line": 9}}, headers={"If-Match": "*"})
    drift = run_ok(ansible, play(task("f", "iothub_device_bulk", **args)))
    assert drift.task("f").result["updated"] == [f"{kind[:3]}-0007"]


@pytest.mark.parametrize("content,name,fragment", [
    (None, "missing.jsonl", "does not exist"),
    ("DIR", "folder.jsonl", "is a directory"),
    ('{"device_id": "a"}\n{"device_id": \n', "broken.jsonl", "broken.jsonl:2: not a JSON object"),
    ('{"device_id": "a"}\n{"device_id": "a"}\n', "twice.jsonl", "twice.jsonl:2: device 'a' is declared again (first at"),
    ('{"device_id": "a", "colour": "red"}\n', "unknown.jsonl", "unknown.jsonl:1: colour: is not a known option"),
    ("device_id,colour\na,red\n", "columns.csv", "columns.csv:1: unknown column 'colour'"),
    ("device_id,status\na,enabled,extra\n", "count.csv", "count.csv:2: 3 cells for 2 columns"),
    ("device_id,edge_enabled\na,maybe\n", "bool.csv", "bool.csv:2: edge_enabled is 'maybe'"),
    ('{"device_id": "a"}\n', "fleet.txt", "ends neither in .jsonl nor .csv"),
])
def test_bad_fleet_files_fail_before_any_request(ansible, emulator, tmp_path, content, name, fragment):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with counting(emulator) as w:
        r = ansible.run(play(task("f", "iothub_device_bulk", devices_file=str(path))))
    msg = r.task("f").result["msg"]
    assert r.rc != 0 and fragment in msg, msg
    assert w.delta("requests") == 0  # before any request


def test_an_empty_file_with_prune_is_refused_before_any_request(ansible, emulator, hub, tmp_path):
    """An empty export must not empty the fleet: refused like an empty list, unless max_deletes says so."""
    hub.bulk([{"id": f"e{i}", "importMode": "create", "tags": {"fleet": "f7"}} for i in range(3)])
    path = tmp_path / "empty.csv"
    path.write_text("device_id,status\r\n")  # a header and nothing else
    args = dict(devices_file=str(path), prune=True, prune_query="tags.fleet = 'f7'")
    with counting(emulator) as w:
        r = ansible.run(play(task("f", "iothub_device_bulk", **args)))
    msg = r.task("f").result["msg"]
    assert r.rc != 0 and "empty.csv' declares no device" in msg and "max_deletes" in msg, msg
    assert w.delta("requests") == 0
    r = run_ok(ansible, play(task("f", "iothub_device_bulk", max_deletes=3, **args)))
    assert r.task("f").result["deleted"] == ["e0", "e1", "e2"]


def test_results_stay_small_and_the_full_outcome_goes_to_report_file(ansible, emulator, hub, tmp_path):
    """#25 item 2: id lists stop at report_ids_limit (the first ids in sorted order), counts count them all, and
    report_file holds every device's outcome."""
    path = tmp_path / "fleet.jsonl"
    write_jsonl(path, [{"device_id": f"small-{i:03d}"} for i in range(30)])
    report = tmp_path / "report.jsonl"
    emulator.refuse("small-017", code="ArgumentInvalid")
    r = ansible.run(play(task("f", "iothub_device_bulk", devices_file=str(path), report_ids_limit=5,
                              report_file=str(report))))
    res = r.task("f").result
    assert r.rc != 0 and "1 device(s) failed" in res["msg"] and "small-017" in res["msg"]
    assert res["created"] == [f"small-{i:03d}" for i in range(5)]
    assert res["counts"] == {"created": 29, "updated": 0, "deleted": 0, "unchanged": 0, "failed_devices": 1}
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) == 30 and {x["action"] for x in lines} == {"create", "failed"}
    assert [x["id"] for x in lines if x["action"] == "failed"] == ["small-017"] and lines[17]["error"]
    again = run_ok(ansible, play(task("f", "iothub_device_bulk", devices_file=str(path), report_ids_limit=5,
                                      report_file=str(report))))
    assert again.task("f").result["counts"]["unchanged"] == 29 and len(again.task("f").result["unchanged"]) == 5
    assert sum(1 for line in report.read_text().splitlines() if '"action": "none"' in line) == 29
