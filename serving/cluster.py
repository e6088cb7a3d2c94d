"""A Ray cluster of several nodes on this one machine, loopback only: `python -m serving.cluster`.

    python -m serving.cluster up --dir /tmp/rcl      # head (node_a) + one worker node (node_b), 1 CPU each
    eval "$(python -m serving.cluster env --dir /tmp/rcl)"   # RAY_ADDRESS, HOME, the loopback variables
    moderation score in.jsonl --out out.parquet --engine ray --ray-address "$RAY_ADDRESS" --ray-actors 2
    moderation serve --ray-address "$RAY_ADDRESS"
    python -m serving.cluster kill-node node_b --dir /tmp/rcl   # that node's raylet and its processes, SIGKILL
    python -m serving.cluster check --dir /tmp/rcl   # every TCP socket of the cluster's processes on loopback?
    python -m serving.cluster down --dir /tmp/rcl

Each node is a real `ray start` (its own raylet, object store and workers), the head with `--head`, the others
with `--address=127.0.0.1:PORT`; each carries a custom resource named after it (`node_a: 1`, `node_b: 1`) so that
work can be pinned or counted per node. Everything is bound to 127.0.0.1: node IP 127.0.0.1, no dashboard, usage
stats off, HOME pointed at a folder holding `ray_bootstrap_config.yaml` with `provider: {type: local}` (no
cloud-metadata probe), a short temp dir, free ports chosen here.

Why a shim around `ray start` for the worker node: Ray ties "a worker node may join" to
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, and the same variable makes "127.0.0.1" mean the host's routable address
(`services.resolve_ip_for_localhost`). This project sets it to 0 so that Ray stays on loopback, which makes
`ray start --address` refuse to join. `_ray_cli` runs Ray's own `ray start` with the join check (and only it)
allowed; the node processes inherit the variable at 0.

`ray stop` is never used: it kills every Ray process of the user on the machine, other people's clusters too.
`down` and `kill-node` end the processes of this cluster only, found by their command lines (the cluster's temp
dir, its GCS address) and their children.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

STATE_FILE = "cluster.json"
LOOPBACK = "127.0.0.1"
#: Node names, in start order: the head is the first.
NODE_NAMES = ("node_a", "node_b", "node_c", "node_d")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.x.x)."""
    ip = ip.strip("[]")
    if ip.startswith("::ffff:"):
        ip = ip[len("::ffff:"):]
    return ip.startswith("127.") or ip == "::1"


def ray_env(home: str | os.PathLike) -> dict[str, str]:
    """The environment of every process of a loopback cluster (and of drivers that connect to it)."""
    return {"HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            # Serve's controller kills an HTTP proxy not ready within 5 s; a busy 2-core machine can take longer.
            "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")}


@dataclass
class ClusterNode:
    """One node of the cluster: its name (= its custom resource), Ray node id and raylet process id."""

    name: str
    node_id: str
    raylet_pid: int
    node_manager_port: int
    head: bool = False
    killed: bool = False


@dataclass
class LoopbackCluster:
    """A multi-node Ray cluster on 127.0.0.1, its state kept in `root/cluster.json` (so another process can
    kill a node or stop it). Build with `LoopbackCluster.create(...)`, then `start()`; `stop()` ends it."""

    root: str
    gcs_port: int
    cpus_per_node: int = 1
    object_store_mb: int = 256
    nodes: list[ClusterNode] = field(default_factory=list)

    # --- paths and addresses --------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The GCS address drivers connect to (`ray.init(address=...)`, RAY_ADDRESS, --ray-address)."""
        return f"{LOOPBACK}:{self.gcs_port}"

    @property
    def home(self) -> Path:
        return Path(self.root) / "home"

    @property
    def temp_dir(self) -> Path:
        return Path(self.root) / "t"

    def env(self) -> dict[str, str]:
        """Environment for a driver of this cluster: RAY_ADDRESS plus `ray_env`."""
        return {**ray_env(self.home), "RAY_ADDRESS": self.address}

    # --- life cycle -----------------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike | None = None, *, cpus_per_node: int = 1,
               object_store_mb: int = 256) -> "LoopbackCluster":
        """A cluster description in `root` (default: a new short folder under /tmp: Ray's socket paths have a
        length limit). Raises FileExistsError when `root` already holds a cluster."""
        root_path = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="rcl", dir="/tmp"))
        if (root_path / STATE_FILE).exists():
            raise FileExistsError(f"{root_path} already holds a cluster ({STATE_FILE}); `down` it first")
        if cpus_per_node <= 0:
            raise ValueError(f"cpus_per_node must be > 0, got {cpus_per_node}")
        root_path.mkdir(parents=True, exist_ok=True)
        cluster = cls(root=str(root_path.resolve()), gcs_port=free_port(), cpus_per_node=cpus_per_node,
                      object_store_mb=object_store_mb)
        cluster.home.mkdir(exist_ok=True)
        (cluster.home / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
        return cluster

    @classmethod
    def load(cls, root: str | os.PathLike) -> "LoopbackCluster":
        """The cluster recorded in `root`. Raises FileNotFoundError when there is none."""
        path = Path(root) / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no cluster in {root} (no {STATE_FILE}); start one with `up --dir {root}`")
        data = json.loads(path.read_text(encoding="utf-8"))
        data["nodes"] = [ClusterNode(**n) for n in data.get("nodes", [])]
        return cls(**data)

    def save(self) -> None:
        tmp = Path(self.root) / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(tmp, Path(self.root) / STATE_FILE)

    def start(self, num_nodes: int = 2, timeout_s: float = 180.0) -> "LoopbackCluster":
        """Start the head and `num_nodes - 1` worker nodes; wait until the GCS sees all of them alive.

        Raises RuntimeError (after stopping what started) when a node fails to start or join in time."""
        if not 1 <= num_nodes <= len(NODE_NAMES):
            raise ValueError(f"num_nodes must be 1-{len(NODE_NAMES)}, got {num_nodes}")
        self.save()
        try:
            for name in NODE_NAMES[:num_nodes]:
                self.add_node(name, timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, name: str, timeout_s: float = 180.0) -> ClusterNode:
        """Start one node (`ray start`; the head when it is the first) carrying the resource `{name: 1}`."""
        if any(n.name == name for n in self.nodes):
            raise ValueError(f"node {name!r} is already in the cluster")
        head = not self.nodes
        nm_port = free_port()
        args = ["start", "--node-ip-address", LOOPBACK, "--num-cpus", str(self.cpus_per_node),
                "--resources", json.dumps({name: 1}), "--temp-dir", str(self.temp_dir),
                "--object-store-memory", str(self.object_store_mb * 1024 * 1024),
                "--node-manager-port", str(nm_port), "--dashboard-agent-listen-port", str(free_port()),
                "--disable-usage-stats"]
        if head:
            args += ["--head", "--port", str(self.gcs_port), "--include-dashboard", "false",
                     "--ray-client-server-port", str(free_port())]
        else:
            args += ["--address", self.address]
        env = {**os.environ, **ray_env(self.home)}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([sys.executable, "-m", "serving.cluster", "_ray", *args], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"`ray start` of {name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        raylet = self._raylet(nm_port)
        if raylet is None:
            raise RuntimeError(f"`ray start` of {name} returned but no raylet with node manager port {nm_port} runs")
        node_id = next(a.split("=", 1)[1] for a in raylet.cmdline() if a.startswith("--node_id="))
        node = ClusterNode(name=name, node_id=node_id, raylet_pid=raylet.pid, node_manager_port=nm_port, head=head)
        self.nodes.append(node)
        self.save()
        self._wait_alive({node.node_id}, timeout_s)
        return node

    def _raylet(self, node_manager_port: int):
        import psutil
        for p in psutil.process_iter(["name", "cmdline"]):
            cmd = p.info["cmdline"] or []
            if cmd and cmd[0].endswith("/raylet") and f"--node_manager_port={node_manager_port}" in cmd:
                return p
        return None

    def _wait_alive(self, node_ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = {n["node_id"] for n in self.gcs_nodes() if n["alive"]}
            if node_ids <= alive:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes {sorted(node_ids - alive)} did not join within {timeout_s:.0f} s")
            time.sleep(0.5)

    def gcs_nodes(self) -> list[dict[str, Any]]:
        """Every node the GCS knows: node_id, alive, resources (`ray list nodes` without the dashboard).

        Asks the GCS directly (Ray's GcsClient, which `ray status` uses too): no driver, no job registered."""
        import serving  # noqa: F401 - the loopback variables are set before ray is imported
        from ray._raylet import GcsClient

        alive_state = 0  # GcsNodeInfo.ALIVE
        info = GcsClient(address=self.address).get_all_node_info(timeout=30)
        return [{"node_id": node_id.hex(), "alive": n.state == alive_state, "resources": dict(n.resources_total)}
                for node_id, n in info.items()]

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in the cluster (nodes: {', '.join(n.name for n in self.nodes)})")

    def kill_node(self, name: str) -> list[int]:
        """Kill a worker node as a machine loss would: its raylet and every process under it, SIGKILL.

        Returns the killed process ids. Raises ValueError for the head (the GCS lives there: this cluster has
        no GCS fault tolerance) and KeyError for an unknown node."""
        import psutil

        node = self.node(name)
        if node.head:
            raise ValueError(f"{name} is the head node: killing it ends the cluster; kill a worker node")
        try:
            raylet = psutil.Process(node.raylet_pid)
            procs = [raylet, *raylet.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        node.killed = True
        self.save()
        return [p.pid for p in procs]

    def processes(self) -> list[Any]:
        """Every live process of this cluster: those whose command line names its temp dir or GCS address
        (GCS, raylets, monitors, the client server), and their children (agents, workers)."""
        import psutil

        marks = (str(self.temp_dir), f"{LOOPBACK}:{self.gcs_port}")
        roots = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if p.pid != os.getpid() and any(m in a for a in cmd for m in marks):
                roots.append(p)
        found = {p.pid: p for p in roots}
        for p in roots:
            with contextlib.suppress(psutil.Error):
                for c in p.children(recursive=True):
                    found.setdefault(c.pid, c)
        return list(found.values())

    def non_loopback_sockets(self) -> list[str]:
        """TCP sockets of the cluster's processes that reach beyond loopback: a listener on a wildcard or a
        routable address, or a connection to / from one. Empty when everything stays on 127.0.0.1."""
        import psutil

        bad = []
        for p in self.processes():
            try:
                conns = p.net_connections(kind="tcp")
                label = f"{p.pid} {p.name()}"
            except psutil.Error:
                continue
            for c in conns:
                ends = [c.laddr] + ([c.raddr] if c.raddr else [])
                if not all(is_loopback(e.ip) for e in ends if e):
                    bad.append(f"{label}: {c.status} {c.laddr.ip}:{c.laddr.port}"
                               + (f" -> {c.raddr.ip}:{c.raddr.port}" if c.raddr else ""))
        return bad

    def stop(self, keep_files: bool = False) -> int:
        """End every process of this cluster (SIGTERM, then SIGKILL after 15 s) and remove its folder unless
        `keep_files` (the logs are under temp_dir/session_latest/logs). Returns how many processes were ended."""
        import psutil

        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        if not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            (Path(self.root) / STATE_FILE).unlink(missing_ok=True)
        return len(procs)

    def __enter__(self) -> "LoopbackCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def connect(address: str, *, namespace: str | None = None) -> Iterator[Any]:
    """Connect this process to an existing Ray cluster as a driver for the block; yields the `ray` module.

    For a cluster on this machine (address 127.0.0.1:PORT) the loopback guard runs first (serving.local_ray):
    `ray` imported before `serving` would take 127.0.0.1 for the host's address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from serving.local_ray import check_loopback

    if address.split(":")[0] in (LOOPBACK, "localhost"):
        check_loopback(ray)
    ray.init(address=address, namespace=namespace, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def serve_on_cluster(address: str, app_name: str = "moderation") -> Iterator[Any]:
    """`moderation serve --ray-address`: drive an existing cluster for the block, then delete the app (only it:
    other applications and the cluster stay). Yields the `ray` module."""
    with connect(address) as ray:
        try:
            yield ray
        finally:
            from ray import serve

            with contextlib.suppress(Exception):  # nothing deployed yet, or the cluster already gone
                serve.delete(app_name)


# --- the command line ---------------------------------------------------------------------------------------


def _ray_cli(argv: Sequence[str]) -> int:
    """Ray's own `ray` command line with the worker-node join allowed while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    (see the module docstring). Only `ray.scripts.scripts` sees the changed flag: address resolution
    (ray._private.services) keeps "127.0.0.1" as loopback."""
    import types

    from ray._private import ray_constants
    from ray.scripts import scripts

    constants = types.ModuleType("ray_constants_join_allowed")
    constants.__dict__.update(vars(ray_constants))
    constants.ENABLE_RAY_CLUSTER = True
    scripts.ray_constants = constants
    try:
        scripts.cli.main(args=list(argv), prog_name="ray")
    except SystemExit as exc:  # click's exit
        return int(exc.code or 0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_ray"]:
        return _ray_cli(argv[1:])
    p = argparse.ArgumentParser(prog="python -m serving.cluster", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a head and worker nodes on 127.0.0.1; prints the address")
    up.add_argument("--nodes", type=int, default=2, help="nodes, the head included (default: 2)")
    up.add_argument("--cpus-per-node", type=int, default=1, help="logical CPUs per node (default: 1)")
    up.add_argument("--object-store-mb", type=int, default=256, help="object store per node, MiB (default: 256)")
    for name, help_ in (("env", "print the shell exports a driver needs (RAY_ADDRESS, HOME, loopback variables)"),
                        ("status", "the nodes the GCS knows, alive or dead"),
                        ("check", "exit 1 if any TCP socket of the cluster's processes leaves loopback"),
                        ("down", "end every process of the cluster and remove its folder")):
        sub.add_parser(name, help=help_)
    kill = sub.add_parser("kill-node", help="kill a worker node (its raylet and processes, SIGKILL)")
    kill.add_argument("name")
    for sp in sub.choices.values():
        sp.add_argument("--dir", required=True, help="the cluster's folder (its state, logs and Ray HOME)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "up":
            cluster = LoopbackCluster.create(args.dir, cpus_per_node=args.cpus_per_node,
                                             object_store_mb=args.object_store_mb)
            cluster.start(args.nodes)
            for n in cluster.nodes:
                print(f"{n.name}: node {n.node_id[:12]} raylet pid {n.raylet_pid}{' (head)' if n.head else ''}",
                      file=sys.stderr)
            print(cluster.address)
            return 0
        cluster = LoopbackCluster.load(args.dir)
        if args.cmd == "env":
            for k, v in cluster.env().items():
                print(f"export {k}={v}")
        elif args.cmd == "status":
            names = {n.node_id: n.name for n in cluster.nodes}
            for n in cluster.gcs_nodes():
                print(f"{names.get(n['node_id'], '?')}\t{n['node_id'][:12]}\t{'alive' if n['alive'] else 'DEAD'}\t"
                      f"CPU {n['resources'].get('CPU', 0):g}")
        elif args.cmd == "check":
            bad = cluster.non_loopback_sockets()
            print(f"{len(cluster.processes())} processes checked; "
                  + (f"{len(bad)} sockets beyond loopback:\n" + "\n".join(bad) if bad else "every TCP socket on loopback"))
            return 1 if bad else 0
        elif args.cmd == "kill-node":
            pids = cluster.kill_node(args.name)
            print(f"killed {args.name}: {len(pids)} processes ({', '.join(map(str, pids))})")
        elif args.cmd == "down":
            print(f"ended {cluster.stop()} processes", file=sys.stderr)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
