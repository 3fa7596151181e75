"""Machines to rehearse `ray up cluster/onprem.yaml` on, made on this one: each its own network namespace with an
address on a private bridge, its own sshd, its own PID namespace, and its own /tmp and home (mount namespace), so
that Ray's launcher reaches it over SSH as it would a real machine, and a `ray stop` there stops only its own Ray.
The head and the workers mount one directory at /mnt/shared (the storage the cluster shares); one more host, not
in the cluster file, has a directory of its own there, like a machine whose NFS mount is missing.

    python cluster/hosts.py up                  # hosts 10.213.0.10 (head) .11 .12 (workers) .13 (no shared storage)
    ray up -y /tmp/archsweep-hosts/onprem.yaml  # the cluster file it wrote: cluster/onprem.yaml pointed at them
    python cluster/hosts.py cut 10.213.0.11     # that host's link down, as a machine vanishes (`back`: up)
    python cluster/hosts.py down                # every namespace, process, mount and file it made, gone

As root, all of it (the SSH key it writes for `ray up` is root's).

Needs root, iproute2, util-linux's unshare, openssh-server and rsync (Debian: `apt-get install openssh-server
rsync`). Only the hosts and this machine talk on the bridge: nothing is routed beyond it. Each host's home holds
what a prepared machine would already have: an authorized key, the Python environment this script runs in (hard
links, relocated to ~/venv) and the benchmark tables (~/archsweep-data); pip there installs from nothing but what
is in that environment. Standard library only: it runs before anything is installed."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path("/tmp/archsweep-hosts")
PREFIX = "asw"  # names of namespaces and links, so that `down` finds what `up` made
BRIDGE = f"{PREFIX}-br0"
SHARED_MOUNT = Path("/mnt/shared")
CHECKOUT = Path(__file__).resolve().parent.parent
PIP_CONF = """[global]
no-index = true
disable-pip-version-check = true
[install]
no-build-isolation = false
"""  # no index on a host without internet: `pip install` takes what the environment holds (pip reads the
# negative flag inverted: `false` here turns build isolation off, so the build uses the installed setuptools)


def run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, **kwargs)


def hosts_of(state_dir: Path) -> dict:
    path = state_dir / "hosts.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def address(subnet: str, index: int) -> str:
    return f"{subnet}.{index}"


# --- a host's home: what a prepared machine has ----------------------------------------------------------------


def relocated_venv(source: Path, home: Path) -> None:
    """`source` (a venv) as `home`/venv: hard links, but for the files that name the venv's own path."""
    target = home / "venv"
    run("cp", "-al", str(source), str(target))
    for script in (target / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        with open(script, "rb") as f:
            head = f.read(2)
        if head != b"#!" and script.name not in ("activate", "activate.csh", "activate.fish"):
            continue
        text = script.read_bytes().replace(str(source).encode(), b"/root/venv")
        script.unlink()  # a new file, so the environment this runs in keeps its own
        script.write_bytes(text)
        script.chmod(0o755)


def make_home(home: Path, public_key: str, host_key: Path, venv: Path, data: Path) -> None:
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "authorized_keys").write_text(public_key)
    for name in (".bashrc", ".profile"):  # a new account's, as on a machine set up for the cluster
        if (Path("/etc/skel") / name).is_file():
            shutil.copy(Path("/etc/skel") / name, home / name)
        else:
            (home / name).write_text("")
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(PIP_CONF)
    (home / ".sshd").mkdir(mode=0o700)
    shutil.copy(host_key, home / ".sshd" / "host_key")
    relocated_venv(venv, home)
    built = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    if built.is_dir():  # DeepSpeed's compiled ops, as on a machine that ran it before (else ~1 min on first use)
        (home / ".cache").mkdir(exist_ok=True)
        run("cp", "-al", str(built), str(home / ".cache" / "torch_extensions"))
    shutil.copytree(data, home / "archsweep-data", ignore=shutil.ignore_patterns("SOURCES.md"))
    for path in (home / "archsweep-data").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    home.chmod(0o700)


# --- the host itself: PID 1 of its PID namespace ----------------------------------------------------------------


def init(spec_path: str) -> None:
    """PID 1 of a host: its mounts, then its sshd; reaps what is orphaned there; on SIGTERM ends everything in
    the namespace. Runs inside `ip netns exec NS unshare --pid --fork --mount-proc`."""
    spec = json.loads(Path(spec_path).read_text())
    home = Path(spec["dir"]) / "root"
    base = Path(sys.base_prefix).resolve()
    run("mount", "--make-rprivate", "/")
    if base.is_relative_to("/root"):  # this machine's Python (pyenv) lives in root's home: keep it visible
        keep = home / base.relative_to("/root")
        keep.mkdir(parents=True, exist_ok=True)
        run("mount", "--bind", str(base), str(keep))
    log = open(Path(spec["dir"]) / "sshd.log", "ab")
    socket.sethostname(spec["name"])  # its own name, resolving to its own address (Ray finds its IP so)
    run("mount", "--bind", str(Path(spec["dir"]) / "hosts"), "/etc/hosts")
    run("mount", "--bind", spec["storage"], str(SHARED_MOUNT))
    run("mount", "--rbind", str(home), "/root")
    run("mount", "--bind", str(Path(spec["dir"]) / "tmp"), "/tmp")  # last: the host's files may be under /tmp
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-h", "/root/.sshd/host_key",
         "-o", f"ListenAddress={spec['ip']}", "-o", "PidFile=none", "-o", "PermitRootLogin=prohibit-password",
         "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "UsePAM=no",
         "-o", "AuthorizedKeysFile=.ssh/authorized_keys", "-o", "Subsystem=sftp internal-sftp",
         "-o", "MaxStartups=100", "-o", "MaxSessions=100", "-o", "UseDNS=no"],
        stdout=log, stderr=log)

    def stop(*_):
        for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.kill(-1, sig)  # every process of this PID namespace but this one
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(-1, os.WNOHANG) == (0, 0):
                        time.sleep(0.1)
                except ChildProcessError:
                    break
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)


# --- up, cut, down ----------------------------------------------------------------------------------------------


def preflight(state_dir: Path, data: Path) -> None:
    """What `up` needs, checked before it makes anything (a refusal here leaves whatever exists alone)."""
    if os.geteuid() != 0:
        sys.exit("hosts.py up: needs root (network, PID and mount namespaces)")
    for tool in ("ip", "unshare", "ssh-keygen", "rsync", "/usr/sbin/sshd"):
        if not shutil.which(tool):
            sys.exit(f"hosts.py up: `{tool}` not found; on Debian: apt-get install iproute2 openssh-server rsync")
    if hosts_of(state_dir):
        sys.exit(f"hosts.py up: {state_dir} holds hosts already; `python cluster/hosts.py down --dir {state_dir}`")
    if run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        sys.exit(f"hosts.py up: the bridge {BRIDGE} exists: another set of hosts is up (`hosts.py down --dir` theirs)")
    if not data.is_dir():
        sys.exit(f"hosts.py up: no benchmark tables in {data}; give --data-dir (e.g. ../shared/data)")


def up(state_dir: Path, workers: int, subnet: str, data: Path, idle_minutes: float = 1.0) -> dict:
    state_dir.mkdir(parents=True, exist_ok=True)
    state = {"dir": str(state_dir), "subnet": subnet, "hosts": {}, "made_mount_point": not SHARED_MOUNT.exists(),
             "idle_minutes": idle_minutes}
    (state_dir / "hosts.json").write_text(json.dumps(state))  # from here on `down` can undo whatever was made
    key = state_dir / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(state_dir / "host_key"))
    token = state_dir / "auth_token"  # the cluster's Ray token: not ~/.ray/auth_token, which would turn token
    token.write_text(secrets.token_hex(32))  # auth on for every other Ray this user starts here
    token.chmod(0o600)
    shared = state_dir / "shared"
    shared.mkdir(mode=0o777)
    SHARED_MOUNT.mkdir(parents=True, exist_ok=True)
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{address(subnet, 1)}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    names = ["head"] + [f"w{i}" for i in range(1, workers + 1)] + ["x1"]
    for index, name in enumerate(names):
        ip = address(subnet, 10 + index)
        host_dir = state_dir / name
        (host_dir / "tmp").mkdir(parents=True)
        (host_dir / "tmp").chmod(0o1777)
        storage = shared if name != "x1" else host_dir / "storage"
        storage.mkdir(exist_ok=True, mode=0o777)
        make_home(host_dir / "root", (state_dir / "id_ed25519.pub").read_text(), state_dir / "host_key",
                  Path(sys.prefix), data)
        netns, link = f"{PREFIX}-{name}", f"{PREFIX}-{name}"
        run("ip", "netns", "add", netns)
        state["hosts"][name] = {"ip": ip, "netns": netns, "link": link, "dir": str(host_dir)}
        (state_dir / "hosts.json").write_text(json.dumps(state))
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "link", "set", link, "master", BRIDGE)
        run("ip", "link", "set", link, "up")
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"]):
            run("ip", "netns", "exec", netns, *cmd)
        spec = host_dir / "host.json"
        spec.write_text(json.dumps({"ip": ip, "dir": str(host_dir), "storage": str(storage),
                                    "name": f"{PREFIX}-{name}"}))
        (host_dir / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
            f"{address(subnet, 10 + i)} {PREFIX}-{n}\n" for i, n in enumerate(names)))
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--pid", "--fork", "--mount-proc", "--mount", "--uts",
             sys.executable, __file__, "init", str(spec)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(host_dir / "init.log", "ab"),
            start_new_session=True)
        state["hosts"][name]["pid"] = process.pid
        (state_dir / "hosts.json").write_text(json.dumps(state))
    for name, host in state["hosts"].items():
        wait_for_ssh(state_dir, host["ip"])
    write_cluster_file(state)
    return state


def ssh(state_dir: Path, ip: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return run("ssh", "-i", str(state_dir / "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o",
               "BatchMode=yes", f"root@{ip}", command, check=False, timeout=timeout)


def wait_for_ssh(state_dir: Path, ip: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ssh(state_dir, ip, "true", timeout=10).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"hosts.py up: sshd on {ip} did not answer in {timeout:.0f} s; its log: "
                     f"{state_dir}/*/sshd.log, init.log")
        time.sleep(0.3)


def write_cluster_file(state: dict) -> Path:
    """cluster/onprem.yaml pointed at these hosts: their addresses, root with the generated key, its own name.
    The host without the shared storage is not among them (`cut`/tests add it by hand)."""
    text = (CHECKOUT / "cluster" / "onprem.yaml").read_text()
    hosts = state["hosts"]
    workers = [h["ip"] for n, h in hosts.items() if n.startswith("w")]
    replace = {
        "cluster_name: archsweep-onprem": f"cluster_name: archsweep-rehearsal-{Path(state['dir']).name}",
        "head_ip: 10.0.0.10": f"head_ip: {hosts['head']['ip']}",
        "worker_ips: [10.0.0.11, 10.0.0.12]": f"worker_ips: [{', '.join(workers)}]",
        "ssh_user: researcher": "ssh_user: root",
        "ssh_private_key: ~/.ssh/id_ed25519": f"ssh_private_key: {state['dir']}/id_ed25519",
        "~/archsweep: .": f"~/archsweep: {CHECKOUT}",
        "resources: {CPU: 16, GPU: 0}": f"resources: {{CPU: {os.cpu_count()}, GPU: 0}}",
        "idle_timeout_minutes: 5": f"idle_timeout_minutes: {state['idle_minutes']:g}",
        "~/.ray/auth_token: ~/.ray/auth_token": f"~/.ray/auth_token: {state['dir']}/auth_token",
    }
    for old, new in replace.items():
        if old not in text:
            sys.exit(f"hosts.py: cluster/onprem.yaml no longer has `{old}`; update hosts.py's write_cluster_file")
        text = text.replace(old, new)
    path = Path(state["dir"]) / "onprem.yaml"
    path.write_text("# Written by cluster/hosts.py: cluster/onprem.yaml pointed at this machine's test hosts.\n" + text)
    return path


def link(state_dir: Path, ip: str, state: str) -> None:
    """`down`: the host at `ip` drops off the network, as a machine that vanishes (nothing of it is told); `up`:
    it is back."""
    for host in hosts_of(state_dir).get("hosts", {}).values():
        if host["ip"] == ip:
            run("ip", "link", "set", host["link"], state)
            return
    sys.exit(f"hosts.py: no host {ip} in {state_dir}")


def down(state_dir: Path) -> None:
    """Undo whatever `up` made, also after an `up` that failed half-way; safe to run twice."""
    state = hosts_of(state_dir)
    for host in state.get("hosts", {}).values():
        if pid := host.get("pid"):
            inner = run("pgrep", "-P", str(pid), check=False).stdout.split()  # unshare's child: the host's PID 1
            for target in inner:
                try:
                    os.kill(int(target), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and run("kill", "-0", str(pid), check=False).returncode == 0:
                time.sleep(0.2)
            for target in [pid, *inner]:
                try:
                    os.kill(int(target), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for leftover in run("ip", "netns", "pids", host["netns"], check=False).stdout.split():
            try:
                os.kill(int(leftover), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run("ip", "link", "del", host["link"], check=False)
        run("ip", "netns", "del", host["netns"], check=False)
    if state:
        run("ip", "link", "del", BRIDGE, check=False)
        if state.get("made_mount_point"):
            try:
                SHARED_MOUNT.rmdir()
            except OSError:
                pass
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="make the hosts and write DIR/onprem.yaml")
    p_up.add_argument("--workers", type=int, default=2, help="worker hosts with the shared storage (default 2)")
    p_up.add_argument("--idle-minutes", type=float, default=1.0,
                      help="idle_timeout_minutes of the cluster file: how soon idle workers go (default 1)")
    p_up.add_argument("--subnet", default="10.213.0", help="the bridge's /24, as A.B.C (default 10.213.0)")
    p_up.add_argument("--data-dir", type=Path,
                      default=Path(os.environ.get("ARCHSWEEP_DATA_DIR", CHECKOUT.parent / "shared" / "data")),
                      help="the benchmark tables each host starts with (default $ARCHSWEEP_DATA_DIR)")
    p_cut = sub.add_parser("cut", help="take a host off the network")
    p_cut.add_argument("ip")
    p_back = sub.add_parser("back", help="put a host that was cut back on the network")
    p_back.add_argument("ip")
    sub.add_parser("down", help="remove the hosts and everything made for them")
    p_init = sub.add_parser("init")  # a host's PID 1, run by `up` inside its namespaces
    p_init.add_argument("spec")
    for p in (p_up, p_cut, p_back, sub.choices["down"]):
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"where the hosts live (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    if args.command == "init":
        init(args.spec)
    elif args.command == "up":
        preflight(args.dir.resolve(), args.data_dir.resolve())
        try:
            state = up(args.dir.resolve(), args.workers, args.subnet, args.data_dir.resolve(), args.idle_minutes)
        except BaseException:
            down(args.dir.resolve())
            raise
        hosts = state["hosts"]
        print(f"hosts up: head {hosts['head']['ip']}, workers "
              f"{', '.join(h['ip'] for n, h in hosts.items() if n.startswith('w'))}, without the shared storage "
              f"{hosts['x1']['ip']}; the cluster file: {args.dir.resolve()}/onprem.yaml")
    elif args.command in ("cut", "back"):
        link(args.dir.resolve(), args.ip, "down" if args.command == "cut" else "up")
    else:
        down(args.dir.resolve())


if __name__ == "__main__":
    main()
