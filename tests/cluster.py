"""A real one-machine SLURM cluster for the tests: munge, slurmctld and slurmd started from Debian's
``slurm-wlm`` and ``munge`` packages (``.ci/run`` installs them), configured as in DESIGN §12.

``start_cluster(folder)`` returns a :class:`Cluster` (its ``sinfo`` shows the node idle) or raises
:class:`ClusterUnavailable` saying why it cannot start here (not root, a package missing, a daemon
that did not come up) -- the tests skip with that reason and nothing else.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SLURM_CONF = Path("/etc/slurm/slurm.conf")
CGROUP_CONF = Path("/etc/slurm/cgroup.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")


class ClusterUnavailable(RuntimeError):
    pass


@dataclass
class Cluster:
    host: str
    processes: list[subprocess.Popen]
    log_dir: Path

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def _running(name: str) -> bool:
    return any(p.info["name"] == name for p in psutil.process_iter(["name"]))


def _config(host: str, spool: Path) -> str:
    mem = psutil.virtual_memory().total // 2**20 - 2048
    return f"""# written by lvas's tests (tests/cluster.py): one machine, every CPU
ClusterName=lvas-test
SlurmctldHost={host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmUser=root
SlurmdUser=root
ReturnToService=2
StateSaveLocation={spool}/ctld
SlurmdSpoolDir={spool}/d
SlurmctldPidFile={spool}/slurmctld.pid
SlurmdPidFile={spool}/slurmd.pid
SlurmctldLogFile={spool}/slurmctld.log
SlurmdLogFile={spool}/slurmd.log
MpiDefault=none
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=30
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def start_cluster(log_dir: Path, timeout: float = 60.0) -> Cluster:
    """Start (or reuse) munged, slurmctld and slurmd; wait until the node is idle."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("SLURM's daemons need root here (the tests run as root in CI)")
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sinfo", "sbatch") if shutil.which(b) is None]
    if missing:
        raise ClusterUnavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)")
    host = socket.gethostname().split(".")[0]
    spool = Path("/var/spool/lvas-slurm")
    for d in (spool / "ctld", spool / "d", Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        d.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    if not MUNGE_KEY.is_file():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
    for d in (MUNGE_KEY.parent, Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        shutil.chown(d, "munge", "munge")
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(_config(host, spool))
    CGROUP_CONF.write_text("CgroupPlugin=cgroup/v1\nCgroupAutomount=no\nIgnoreSystemd=yes\n")
    procs: list[subprocess.Popen] = []
    if not _running("munged"):
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=False, capture_output=True)
    for daemon in ("slurmctld", "slurmd"):
        if not _running(daemon):
            procs.append(subprocess.Popen([daemon, "-D"], stdout=open(log_dir / f"{daemon}.out", "w"),
                                          stderr=subprocess.STDOUT))
    cluster = Cluster(host, procs, log_dir)
    end = time.monotonic() + timeout
    state = ""
    while time.monotonic() < end:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
        state = (out.stdout or out.stderr).strip()
        if out.returncode == 0 and state.startswith("idle"):
            return cluster
        for p in procs:
            if p.poll() is not None:
                cluster.stop()
                log = (log_dir / f"{p.args[0]}.out").read_text()[-800:]
                raise ClusterUnavailable(f"{p.args[0]} exited with {p.returncode}: {log}")
        time.sleep(0.5)
    cluster.stop()
    raise ClusterUnavailable(f"the node did not become idle within {timeout:.0f} s (sinfo: {state!r})")
