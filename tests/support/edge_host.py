"""Gateway hosts for the edge_host tests: a real Debian userland (bookworm, built by debootstrap from Debian's
packages, cached), one copy per host, reached by Ansible's real chroot connection plugin (community.general.chroot);
and a local apt repository over HTTP with STAND-IN packages for Microsoft's aziot-edge, aziot-identity-service,
moby-engine and moby-cli.

Microsoft's packages cannot be downloaded here. The stand-ins have the real names and versions, create the real
system users (aziotks, aziotcs, aziotid, aziottpm, iotedge) in their postinst, and their `iotedge`, `aziotctl` and
`docker` commands record every invocation in /var/lib/standin/calls.jsonl of the host. The stand-in `iotedge config
apply` parses the file like the product (TOML; must run as root) and refuses a host name change while Edge-owned
containers exist, with the product's message; `iotedge check --output json` prints the product's JSON shape.
Everything else - apt, dpkg, users, owners and modes, the OS trust store (update-ca-certificates), handlers - is
real Debian. Nothing touches the test machine's own /etc.
"""

from __future__ import annotations

import fcntl
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "edge-host"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = "python3,ca-certificates"

# name -> (version, depends, scripts {path: text}, postinst)
AZIOT_IS_VERSION = "1.5.6-1"
AZIOT_EDGE_VERSION = "1.5.21-1"
MOBY_ENGINE_VERSION = "27.5.1-1"
MOBY_CLI_VERSION = "27.5.1-1"

_RECORD = textwrap.dedent("""\
    import json, os, sys
    STATE = "/var/lib/standin"
    os.makedirs(STATE, exist_ok=True)
    def record(tool):
        with open(os.path.join(STATE, "calls.jsonl"), "a") as f:
            f.write(json.dumps({"tool": tool, "argv": sys.argv[1:], "uid": os.getuid()}) + "\\n")
    def containers():
        path = os.path.join(STATE, "containers")
        if not os.path.exists(path):
            return []
        return [x for x in open(path).read().split() if x]
    def set_containers(ids):
        with open(os.path.join(STATE, "containers"), "w") as f:
            f.write("\\n".join(ids))
    """)

IOTEDGE = "#!/usr/bin/python3\n" + _RECORD + textwrap.dedent("""\
    import tomllib
    record("iotedge")
    args = sys.argv[1:]
    def config_path(default="/etc/aziot/config.toml"):
        return args[args.index("-c") + 1] if "-c" in args else default
    if args[:2] == ["config", "apply"]:
        if os.getuid() != 0:
            sys.exit("this command must be run as root")
        try:
            doc = tomllib.loads(open(config_path()).read())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            sys.exit(f"could not parse config file: {exc}")
        if "provisioning" not in doc:
            sys.exit("could not parse config file: missing field `provisioning`")
        applied = os.path.join(STATE, "applied.json")
        old = json.load(open(applied)) if os.path.exists(applied) else {}
        new_host = doc.get("hostname")
        if old and old.get("hostname") != new_host and containers():
            sys.exit(f"Cannot apply config because the hostname in the config {new_host} is different from the "
                     f"previous hostname {old.get('hostname')}. To update the hostname, run the following command "
                     "which deletes all modules and reapplies the configuration. Or, revert the hostname change "
                     "in the config.toml file.\\n    sudo iotedge system stop && sudo docker rm -f $(docker ps -aq "
                     "-f label=net.azure-devices.edge.owner=Microsoft.Azure.Devices.Edge.Agent) && "
                     "sudo iotedge config apply")
        json.dump({"hostname": new_host, "parent_hostname": doc.get("parent_hostname"),
                   "agent": doc.get("agent")}, open(applied, "w"))
        # What the real apply leaves behind: the per-service configs, and (re)started services.
        for svc in ("keyd", "certd", "identityd", "tpmd", "edged"):
            os.makedirs(f"/etc/aziot/{svc}/config.d", exist_ok=True)
            open(f"/etc/aziot/{svc}/config.d/00-super.toml", "w").write("# written by the stand-in apply\\n")
        # The Edge runtime starts its containers again.
        set_containers(["edgeAgent-" + str(len(open(os.path.join(STATE, "calls.jsonl")).readlines()))])
        print("Note: Symmetric key will be written to /var/secrets/aziot/keyd/device-id")
        print("Azure IoT Edge has been configured successfully!")
    elif args[:2] == ["system", "stop"]:
        print("Stopping aziot-edged.service")
    elif args[:1] == ["check"]:
        skip = set()
        if "--dont-run" in args:
            i = args.index("--dont-run") + 1
            while i < len(args) and not args[i].startswith("-"):
                skip.add(args[i]); i += 1
        checks = {}
        def put(cid, ok, detail="", level="error"):
            if cid not in skip:
                checks[cid] = ({"result": "ok", "additional_info": {}} if ok else
                               {"result": level, "details": [detail], "additional_info": {}})
        try:
            doc = tomllib.loads(open(config_path()).read())
            put("config-toml-well-formed", True)
        except Exception as exc:
            doc = {}
            put("config-toml-well-formed", False, str(exc))
        put("hostname", bool(doc.get("hostname")), "config.toml has no hostname")
        ca = (doc.get("edge_ca") or {}).get("cert", "")
        put("certificates-quickstart", bool(ca), "using the quickstart edge CA (not for production)", "warning")
        if ca:
            put("edge-ca-cert-readable", os.path.exists(ca[len("file://"):]), f"cannot read {ca}")
        trust = doc.get("trust_bundle_cert", "")
        if trust:
            put("trust-bundle-readable", os.path.exists(trust[len("file://"):]), f"cannot read {trust}")
        if doc.get("parent_hostname"):
            put("parent-hostname", True)
        put("aziot-edged-version", True)
        print(json.dumps({"additional_info": {"now": "stand-in"}, "checks": checks}))
        sys.exit(1 if any(c["result"] == "error" for c in checks.values()) else 0)
    """)

AZIOTCTL = "#!/usr/bin/python3\n" + _RECORD + "record('aziotctl')\n"

DOCKER = "#!/usr/bin/python3\n" + _RECORD + textwrap.dedent("""\
    record("docker")
    args = sys.argv[1:]
    if args[:1] == ["ps"]:
        print("\\n".join(containers()))
    elif args[:1] == ["rm"]:
        ids = [a for a in args[1:] if not a.startswith("-")]
        set_containers([c for c in containers() if c not in ids])
        print("\\n".join(ids))
    """)

AZIOT_USERS = """#!/bin/sh
set -e
for u in aziotks aziotcs aziotid aziottpm; do
  getent passwd "$u" >/dev/null || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done
mkdir -p /etc/aziot
"""
IOTEDGE_USER = """#!/bin/sh
set -e
getent passwd iotedge >/dev/null || useradd --system --no-create-home --home-dir /var/lib/aziot/edged --shell /usr/sbin/nologin iotedge
"""

PACKAGES = {
    "aziot-identity-service": (AZIOT_IS_VERSION, "", {"usr/bin/aziotctl": AZIOTCTL}, AZIOT_USERS),
    "aziot-edge": (AZIOT_EDGE_VERSION, f"aziot-identity-service (= {AZIOT_IS_VERSION}), moby-engine | docker-ce",
                   {"usr/bin/iotedge": IOTEDGE}, IOTEDGE_USER),
    "moby-engine": (MOBY_ENGINE_VERSION, "moby-cli", {}, None),
    "moby-cli": (MOBY_CLI_VERSION, "", {"usr/bin/docker": DOCKER}, None),
}


@functools.lru_cache(maxsize=None)
def _locked(name: str):
    CACHE.mkdir(parents=True, exist_ok=True)
    return open(CACHE / f"{name}.lock", "w")


def rootfs_tarball() -> Path:
    """A Debian bookworm minbase + python3 + ca-certificates userland, built once by debootstrap and cached (also
    across pytest-xdist workers, under a file lock)."""
    tarball = CACHE / f"{SUITE}-minbase.tar"
    lock = _locked("rootfs")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        if tarball.exists():
            return tarball
        build = CACHE / "rootfs-build"
        shutil.rmtree(build, ignore_errors=True)
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).exists():
            raise RuntimeError("debootstrap is missing: scripts/edge-host-deps installs it (make venv runs it)")
        subprocess.run([debootstrap, "--variant=minbase", f"--include={INCLUDE}", SUITE, str(build), MIRROR],
                       check=True, capture_output=True)
        shutil.rmtree(build / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (build / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        tmp = tarball.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(build), "-cf", str(tmp), "."], check=True)
        tmp.rename(tarball)
        shutil.rmtree(build, ignore_errors=True)
        return tarball
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _deb(out_dir: Path, name: str, version: str, depends: str, files: dict, postinst) -> Path:
    """A binary package built with dpkg-deb (the real tool)."""
    root = out_dir / f"build-{name}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "DEBIAN").mkdir(parents=True)
    control = [f"Package: {name}", f"Version: {version}", "Architecture: all",
               "Maintainer: fleet.azure_iot tests <tests@example.invalid>",
               f"Description: STAND-IN for Microsoft's {name} (records its invocations; tests only)"]
    if depends:
        control.insert(3, f"Depends: {depends}")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    if postinst:
        (root / "DEBIAN" / "postinst").write_text(postinst)
        (root / "DEBIAN" / "postinst").chmod(0o755)
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o755)
    deb = out_dir / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    return deb


def build_repo(repo_dir: Path) -> Path:
    """A flat apt repository (Packages, Packages.gz, Release) with the stand-in packages."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (version, depends, files, postinst) in PACKAGES.items():
        deb = _deb(repo_dir, name, version, depends, files, postinst)
        data = deb.read_bytes()
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True,
                                 text=True).stdout.strip()
        entries.append(control + f"\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
    packages = "\n".join(entries).encode()
    (repo_dir / "Packages").write_bytes(packages)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(packages)
    (repo_dir / "Packages.gz").write_bytes(buf.getvalue())
    release = ["Origin: fleet.azure_iot stand-in", "Date: Sat, 05 Dec 2026 00:00:00 UTC", "Label: stand-in", "Suite: stable", "Codename: standin",
               "Architectures: all amd64 arm64", "Components: main", "SHA256:"]
    for f in ("Packages", "Packages.gz"):
        data = (repo_dir / f).read_bytes()
        release.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {f}")
    (repo_dir / "Release").write_text("\n".join(release) + "\n")
    return repo_dir


class RepoServer:
    """The stand-in repository over real HTTP on loopback (the chroot shares the network namespace)."""

    def __init__(self, repo_dir: Path):
        handler = functools.partial(_QuietHandler, directory=str(repo_dir))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.requests: list = []
        self.httpd.requests = self.requests
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        self.server.requests.append(self.path)


class GatewayHost:
    """One gateway host: a copy of the cached userland in its own directory, reached through chroot."""

    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root

    @classmethod
    def create(cls, name: str, base: Path) -> "GatewayHost":
        root = base / name
        root.mkdir(parents=True)
        with tarfile.open(rootfs_tarball()) as tar:
            tar.extractall(root, filter="fully_trusted")
        (root / "etc" / "hostname").write_text(name + "\n")
        return cls(name, root)

    def inventory_line(self, **hostvars) -> str:
        extra = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in hostvars.items())
        return (f"{self.name} ansible_connection=community.general.chroot ansible_host={self.root} "
                f"ansible_python_interpreter=/usr/bin/python3 {extra}").strip()

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def read(self, p: str) -> str:
        return self.path(p).read_text()

    def exists(self, p: str) -> bool:
        return self.path(p).exists()

    def calls(self, tool: str | None = None) -> list:
        log = self.path("/var/lib/standin/calls.jsonl")
        if not log.exists():
            return []
        calls = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return [c for c in calls if tool is None or c["tool"] == tool]

    def applies(self) -> list:
        return [c for c in self.calls("iotedge") if c["argv"][:2] == ["config", "apply"]]

    def set_containers(self, ids) -> None:
        state = self.path("/var/lib/standin")
        state.mkdir(parents=True, exist_ok=True)
        (state / "containers").write_text("\n".join(ids))

    def containers(self) -> list:
        p = self.path("/var/lib/standin/containers")
        return [x for x in p.read_text().split() if x] if p.exists() else []

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(self.root), *argv], capture_output=True, text=True)

    def owner_mode(self, p: str) -> tuple:
        st = self.path(p).stat()
        passwd = {int(line.split(":")[2]): line.split(":")[0] for line in self.read("/etc/passwd").splitlines()}
        return passwd.get(st.st_uid, str(st.st_uid)), oct(st.st_mode & 0o7777)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def chroot_available() -> str | None:
    """Why chroot hosts cannot run here, or None."""
    if os.geteuid() != 0:
        return "the chroot connection needs root"
    return None
