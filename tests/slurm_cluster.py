"""A real single-node SLURM cluster in a temporary directory, for the ``slurm``-marked tests.

Debian's slurmctld + slurmd + munge (install: ``scripts/ci_slurm_deps.sh``), configured as
docs/slurm-test-cluster.md measured: no cgroups (proctrack/linuxproc, task/none), cons_tres with
CR_Core, one node with this machine's short hostname, every state/spool/log/pid path and the
munge socket under the temporary directory, and free TCP ports, so it never touches a system
SLURM and two test sessions never collide.

Teardown is unconditional: the fixture cancels every job, stops the daemons by pid (SIGTERM,
then SIGKILL), and kills any process still carrying this cluster's ``SLURM_CONF`` in its
environment (job steps outlive slurmd). Daemons of a crashed earlier session are found by
their pid files and stopped at the next start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
PREFIX = "prunelaw-slurm-"
PARTITION = "debug"
PIDS = "pids.json"


def missing_binaries() -> list[str]:
    """SLURM/munge programs not on PATH (also looks in the sbin dirs Debian uses)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def _which(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _conf(root: Path, node: str, cpus: int) -> str:
    """slurm.conf: the settings docs/slurm-test-cluster.md found to work without cgroups or accounting."""
    return "\n".join([
        "ClusterName=prunelawtest", f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={root}/munge/munge.socket",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "ReturnToService=2", "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "KillWait=5",  # SIGTERM -> SIGKILL grace of a cancelled job (default 30 s)
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=20000 State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP", ""])


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _ancestors() -> set[int]:
    """This process and its parents: never killed by the sweep below."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def kill_cluster_processes(conf: Path) -> list[int]:
    """SIGKILL every process whose environment names this cluster's slurm.conf."""
    needle, keep, killed = f"SLURM_CONF={conf}\0".encode(), _ancestors(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in keep and _environ_has(int(entry.name), needle):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except OSError:
                pass
    return killed


def _stop_pid(pid: int, conf: Path, grace: float = 10.0) -> None:
    """SIGTERM a daemon we started (checked through its environment), SIGKILL after ``grace``."""
    if not _environ_has(pid, f"SLURM_CONF={conf}\0".encode()):
        return  # gone, or a recycled pid that is not ours
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


@dataclass
class SlurmCluster:
    """A running single-node cluster; clients reach it through ``SLURM_CONF``."""

    root: Path
    conf: Path
    node: str
    partition: str = PARTITION
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        return subprocess.run([_which(argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True,
                              check=check)

    def queue(self) -> dict[str, tuple[str, str]]:
        """``{"<array>_<task>": (STATE, reason)}`` of every job the controller still lists."""
        out = self.run("squeue", "--array", "--noheader", "--format=%i|%T|%r").stdout
        return {p[0]: (p[1], p[2]) for p in (ln.split("|") for ln in out.splitlines()) if len(p) == 3}

    def logs(self, lines: int = 30) -> str:
        """Tails of the daemons' logs (for failure messages)."""
        out = []
        for log in sorted((self.root / "log").glob("*.log")):
            out.append(f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel all jobs, stop the daemons, kill stragglers; safe to call twice."""
        if self.conf.is_file() and shutil.which("scancel"):
            subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True, check=False)
        for pid in _recorded_pids(self.root):
            _stop_pid(pid, self.conf)
        kill_cluster_processes(self.conf)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def _recorded_pids(root: Path) -> list[int]:
    """Daemon pids of a cluster, newest-started first (slurmd, slurmctld, munged)."""
    try:
        return [int(p) for p in reversed(json.loads((root / PIDS).read_text())["pids"])]
    except (OSError, ValueError, KeyError):
        return []


def reap_stale(tmp: Path = Path(tempfile.gettempdir())) -> None:
    """Stop daemons left by a test session that died before its teardown, remove its dir."""
    for root in tmp.glob(f"{PREFIX}*"):
        try:
            owner = json.loads((root / PIDS).read_text())["owner"]
        except (OSError, ValueError, KeyError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue  # a live session (maybe running in parallel): not ours to touch
        conf = root / "slurm.conf"
        for pid in _recorded_pids(root):
            _stop_pid(pid, conf, grace=2.0)
        kill_cluster_processes(conf)
        shutil.rmtree(root, ignore_errors=True)


def _spawn(cluster: SlurmCluster, argv: list[str], name: str) -> subprocess.Popen:
    """Start one daemon in the foreground (so we hold its pid) and record the pid."""
    log = (cluster.root / "log" / f"{name}.out").open("ab")
    proc = subprocess.Popen(argv, env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    cluster.procs.append(proc)
    record = {"owner": os.getpid(), "pids": [p.pid for p in cluster.procs]}
    (cluster.root / PIDS).write_text(json.dumps(record))
    return proc


def _wait(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"single-node SLURM: {what} within {timeout:.0f} s\n{cluster.logs()}")


def start_cluster(cpus: int = 2, timeout: float = 30.0) -> SlurmCluster:
    """munged, slurmctld, slurmd under a fresh temporary directory; returns once the node is idle."""
    reap_stale()
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir()
    root.chmod(0o755)  # the munge socket's directory must be traversable
    (root / "munge").chmod(0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, node, cpus))
    cluster = SlurmCluster(root, conf, node)
    try:
        # munged as root needs --force; its own socket/key/pid/seed/log, not the system's.
        m = root / "munge"
        _spawn(cluster, [_which("munged"), "--foreground", "--force", f"--socket={m}/munge.socket",
                         f"--key-file={key}", f"--pid-file={m}/munged.pid", f"--log-file={root}/log/munged.log",
                         f"--seed-file={m}/munged.seed"], "munged")
        _wait(lambda: (m / "munge.socket").exists(), 10, "munged did not create its socket", cluster)
        _spawn(cluster, [_which("slurmctld"), "-D", "-i", "-f", str(conf)], "slurmctld")
        _wait(lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, timeout,
              "slurmctld did not answer", cluster)
        _spawn(cluster, [_which("slurmd"), "-D", "-f", str(conf)], "slurmd")
        _wait(lambda: cluster.run("sinfo", "--noheader", "--format=%T", check=False).stdout.strip() == "idle",
              timeout, "the node did not come up idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real single-node SLURM for the session; ``SLURM_CONF`` points the clients at it."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}); run scripts/ci_slurm_deps.sh")
    if os.geteuid() != 0:
        pytest.skip("a single-node SLURM needs root (slurmd launches the jobs)")
    cluster = start_cluster()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(cluster.root, ignore_errors=True)
