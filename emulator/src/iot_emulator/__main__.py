"""``python -m iot_emulator --host 127.0.0.1 --port PORT --data-dir DIR [options]``

Serves HTTPS with a certificate from a local CA written to ``DIR/ca.pem``; once it accepts connections it
writes ``DIR/emulator.env`` (shell-sourceable); stops cleanly on SIGTERM.  See docs/emulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import sys
import uuid
from pathlib import Path

from .app import Emulator, Settings
from .faults import DEFAULT_FAULT_KINDS, FAULT_KINDS, parse_throttle
from .auth import DEFAULT_POLICIES, Authorizer, Policy
from .certs import issue_server_cert

log = logging.getLogger("iot_emulator")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m iot_emulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    p.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    p.add_argument("--data-dir", required=True, type=Path, help="folder for ca.pem, keys and emulator.env")
    p.add_argument("--hostname", action="append", default=[],
                   help="extra hub host name to serve (certificate SAN and SAS audience); repeatable or comma-separated")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every service request")
    p.add_argument("--fault-rate", type=float, default=0.0,
                   help="share of service requests answered with an injected fault (0..1)")
    p.add_argument("--fault-seed", type=int, default=None, help="seed of the fault generator, for repeatable runs")
    p.add_argument("--fault-kinds", default=",".join(DEFAULT_FAULT_KINDS),
                   help=f"comma-separated faults to inject, from {','.join(FAULT_KINDS)} (drop: the connection drops "
                        "before or after the request is applied; drop_after / drop_before: always after / before)")
    p.add_argument("--query-lag-s", type=float, default=0.0,
                   help="seconds before a registry write shows in query results (the index is eventually consistent)")
    p.add_argument("--throttle", default=None, metavar="SKU:UNITS",
                   help="enforce the registry and query quotas of a tier, e.g. S1:1")
    p.add_argument("--state-file", type=Path, default=None, help="persist the registry here across restarts")
    p.add_argument("--bulk-twin-mode", choices=["replace", "merge"], default="replace",
                   help="how a bulk or import updateTwin applies the tags and desired properties it carries: replace "
                        "the sections given (default) or merge them like a twin PATCH; the docs do not say which")
    p.add_argument("--max-page-size", type=int, default=100,
                   help="the most items a query page holds (default 100, the newest documented maximum)")
    p.add_argument("--query-right", choices=["ServiceConnect", "RegistryRead"], default="ServiceConnect",
                   help="the policy right a query needs: ServiceConnect (the security doc, default) or RegistryRead "
                        "(an SDK sample's comment); the sources disagree")
    p.add_argument("--adm-delay-s", type=float, default=0.2,
                   help="seconds after a configuration is created or its target or priority changes before automatic "
                        "device management applies it to the twins it targets (default 0.2)")
    p.add_argument("--entra-test-mode", action="store_true",
                   help="accept Entra ID bearer tokens (audience and expiry checked, signature not)")
    p.add_argument("--central-app", default="emulator",
                   help="name of the IoT Central application served under /api (its URL is the emulator's)")
    p.add_argument("--central-token", action="append", default=[],
                   help="an IoT Central API token to accept (exact match); by default one is generated and kept")
    p.add_argument("--central-template", action="append", default=[],
                   help="a device template id the app knows (default: dtmi:contoso:testDeviceTemplate;1)")
    p.add_argument("--central-organization", action="append", default=[],
                   help="an organization id the app knows (default: seattle)")
    p.add_argument("--dps-port", type=int, default=0,
                   help="port the Device Provisioning Service listens on (its own host name); 0 picks a free one")
    p.add_argument("--dps-linked-hub", action="append", default=[], metavar="CONNECTION_STRING",
                   help="another IoT hub (an emulator's owner connection string) linked to the DPS besides this "
                        "emulator's own hub; repeatable")
    p.add_argument("--dps-linked-hub-ca", action="append", default=[], type=Path, metavar="PEM",
                   help="a CA to trust when the DPS calls a linked hub (another emulator's ca.pem); repeatable")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    return p


def load_policies(data_dir: Path) -> dict[str, Policy]:
    """Shared access policies, kept in DIR/policies.json so that keys survive a restart."""
    path = data_dir / "policies.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for name in DEFAULT_POLICIES:
        if name not in stored:
            stored[name] = base64.b64encode(secrets.token_bytes(32)).decode()
            changed = True
    if changed:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh, indent=2)
        os.replace(tmp, path)
    return {name: Policy(name, stored[name], set(DEFAULT_POLICIES[name])) for name in DEFAULT_POLICIES}


def load_central(data_dir: Path, args) -> "CentralApp":
    """The Central app's id, id scope and API tokens, kept in DIR/central.json so that they survive a restart."""
    from .central import CentralApp, new_token
    path = data_dir / "central.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored.get("name") != args.central_app:
        stored = {"name": args.central_app, "app_id": str(uuid.uuid4()),
                  "id_scope": "0ne" + secrets.token_hex(4).upper()}
    if not stored.get("tokens"):
        stored["tokens"] = [new_token(stored["app_id"])]
    write_atomic(path, json.dumps(stored, indent=2))
    tokens = list(args.central_token) or stored["tokens"]
    templates = set(args.central_template or ["dtmi:contoso:testDeviceTemplate;1"])
    orgs = set(args.central_organization or ["seattle"])
    return CentralApp(stored["name"], stored["app_id"], tokens, templates, orgs, stored["id_scope"])


def load_dps(data_dir: Path) -> dict:
    """The DPS instance's id scope and policy keys, kept in DIR/dps.json so that they survive a restart."""
    from .dps import DPS_POLICIES
    path = data_dir / "dps.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.setdefault("id_scope", "0ne" + secrets.token_hex(4).upper())
    keys = stored.setdefault("keys", {})
    for name in DPS_POLICIES:
        keys.setdefault(name, base64.b64encode(secrets.token_bytes(32)).decode())
    write_atomic(path, json.dumps(stored, indent=2))
    return stored


def linked_hub_host(cs: str) -> str:
    fields = dict(p.split("=", 1) for p in cs.split(";") if "=" in p)
    if not fields.get("HostName"):
        raise ValueError(f"--dps-linked-hub takes a connection string with HostName=, got {cs[:20]!r}...")
    return fields["HostName"]


def connection_string(host: str, policy: Policy) -> str:
    return f"HostName={host};SharedAccessKeyName={policy.name};SharedAccessKey={policy.key}"


def env_lines(host_port: str, port: int, data_dir: Path, policies: dict[str, Policy], names: list[str],
              extra: dict[str, str]) -> list[str]:
    values = {
        "IOTHUB_CONNECTION_STRING": connection_string(host_port, policies["iothubowner"]),
        "IOTHUB_HOSTNAME": host_port,
        "IOTHUB_CA_PATH": str((data_dir / "ca.pem").resolve()),
        "IOTHUB_REGISTRY_READ_CONNECTION_STRING": connection_string(host_port, policies["registryRead"]),
        "IOTHUB_SERVICE_CONNECTION_STRING": connection_string(host_port, policies["service"]),
        "IOT_EMULATOR_URL": f"https://{host_port}",
        "IOT_EMULATOR_PORT": str(port),
        "IOT_EMULATOR_PID": str(os.getpid()),
    }
    if names:
        named = names[0] if port == 443 else f"{names[0]}:{port}"
        values["IOTHUB_CONNECTION_STRING_NAMED"] = connection_string(named, policies["iothubowner"])
        values["IOTHUB_HOSTNAME_NAMED"] = named
    values.update(extra)
    return [f"{k}={shlex.quote(v)}" for k, v in values.items()]


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s iot_emulator %(levelname)s %(message)s")
    import uvicorn  # imported here so that --help stays fast

    names = [n.strip() for item in args.hostname for n in item.split(",") if n.strip()]
    try:
        parse_throttle(args.throttle)
        kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
        if not kinds or any(k not in FAULT_KINDS for k in kinds):
            raise ValueError(f"--fault-kinds takes {','.join(FAULT_KINDS)}")
        if not 0 <= args.fault_rate <= 1:
            raise ValueError("--fault-rate must be between 0 and 1")
        if args.max_page_size < 1:
            raise ValueError("--max-page-size must be at least 1")
        for cs in args.dps_linked_hub:
            linked_hub_host(cs)
    except ValueError as exc:
        print(f"iot_emulator: {exc}", file=sys.stderr)
        return 2

    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    env_path = data_dir / "emulator.env"
    env_path.unlink(missing_ok=True)  # a stale file must never be mistaken for a running emulator
    policies = load_policies(data_dir)
    _, server_pem, server_key = issue_server_cert(data_dir, names)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY.  Without it every answer waited about 40 ms for the client's
    # delayed ACK (asyncio sets it only on sockets whose proto is IPPROTO_TCP, and a listening socket's is 0),
    # which the service does not do and which made every request look 40 ms slower than it is.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"iot_emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    dps_sock = socket.socket(family, socket.SOCK_STREAM)
    dps_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dps_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        dps_sock.bind((args.host, args.dps_port))
    except OSError as exc:
        print(f"iot_emulator: cannot listen on {args.host}:{args.dps_port} for the DPS: {exc}", file=sys.stderr)
        return 1
    dps_port = dps_sock.getsockname()[1]
    display_host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    host_port = f"{display_host}:{port}"

    hosts = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", host_port]
    for n in names:
        hosts += [f"{n}:{port}"] + ([n] if port == 443 else [])
    if port == 443:
        hosts += ["127.0.0.1", "localhost"]
    settings = Settings(latency_ms=args.latency_ms, fault_rate=args.fault_rate, fault_seed=args.fault_seed,
                        fault_kinds=kinds, query_lag_s=args.query_lag_s, throttle=args.throttle,
                        state_file=args.state_file, entra_test_mode=args.entra_test_mode,
                        bulk_twin_mode=args.bulk_twin_mode, max_page_size=args.max_page_size,
                        query_right=args.query_right, adm_delay_s=args.adm_delay_s)
    central_app = load_central(data_dir, args)
    from .dps import DPS_AUDIENCES, DPS_POLICIES
    dps_state = load_dps(data_dir)
    dps_policies = {n: Policy(n, dps_state["keys"][n], set(DPS_POLICIES[n])) for n in DPS_POLICIES}
    dps_host = f"{display_host}:{dps_port}"
    dps_hosts = [f"127.0.0.1:{dps_port}", f"localhost:{dps_port}", f"[::1]:{dps_port}", dps_host]
    dps_auth = Authorizer(dps_policies, dps_hosts, entra_test_mode=args.entra_test_mode, audiences=DPS_AUDIENCES)
    import ssl
    linked_verify = ssl.create_default_context(cafile=str(data_dir / "ca.pem"))
    for ca in args.dps_linked_hub_ca:
        linked_verify.load_verify_locations(cafile=str(ca))
    own = connection_string(host_port, policies["iothubowner"])
    emulator = Emulator(settings, Authorizer(policies, hosts, entra_test_mode=args.entra_test_mode), central_app,
                        dps_authorizer=dps_auth, linked_hubs=[own] + list(args.dps_linked_hub),
                        dps_id_scope=dps_state["id_scope"], linked_verify=linked_verify)
    emulator.dps_ports.add(dps_port)

    config = uvicorn.Config(emulator.build(), ssl_certfile=str(server_pem), ssl_keyfile=str(server_key),
                            log_level=args.log_level, lifespan="off", server_header=False,
                            access_log=args.log_level in ("info", "debug"), timeout_graceful_shutdown=1)

    class _Server(uvicorn.Server):
        # uvicorn re-raises a captured SIGTERM after shutdown, which ends the process by the signal; the
        # contract is a clean stop, so record the request to exit and return normally instead.
        def handle_exit(self, sig, frame):
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    server = _Server(config)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.01)
        lines = env_lines(host_port, port, data_dir, policies, names, {
            "IOTCENTRAL_APP_URL": f"https://{host_port}",
            "IOTCENTRAL_API_TOKEN": central_app.tokens[0],
            "IOTCENTRAL_CA_PATH": str((data_dir / "ca.pem").resolve()),
            "IOTCENTRAL_APP_NAME": central_app.name,
            "DPS_CONNECTION_STRING": connection_string(dps_host, dps_policies["provisioningserviceowner"]),
            "DPS_HOSTNAME": dps_host,
            "DPS_ID_SCOPE": dps_state["id_scope"],
            "DPS_DEVICE_ENDPOINT": dps_host,
            "DPS_CA_PATH": str((data_dir / "ca.pem").resolve()),
        })
        write_atomic(env_path, "\n".join(lines) + "\n")
        log.warning("iot_emulator listening on https://%s (env: %s)", host_port, env_path)

    async def run() -> None:
        task = asyncio.create_task(announce())
        try:
            await server.serve(sockets=[sock, dps_sock])
        finally:
            task.cancel()

    try:
        asyncio.run(run())
    finally:
        emulator.persist()
        env_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
