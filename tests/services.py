"""Real servers on loopback for the distributed-sweep test: PostgreSQL (Debian's package,
installed with apt-get when missing) and ``mlflow server``. Both stop when the test ends."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def ensure_postgres() -> Path:
    """The PostgreSQL server binaries, installing Debian's package when they are missing."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        if os.geteuid() != 0:
            raise RuntimeError("PostgreSQL is not installed and this user cannot apt-get install it")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env, timeout=900)
        bin_dir = _pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not found after installing the package")
    return bin_dir


class Postgres:
    """A throw-away cluster in ``root`` on a free loopback port (trust auth)."""

    def __init__(self, root: Path | None = None) -> None:
        import tempfile

        self.bin = ensure_postgres()
        # not under pytest's tmp_path: that is 0700 root, which the postgres user cannot enter
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="lvas-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0  # the server refuses to run as root

    def _run(self, *cmd: str) -> None:
        full = (["runuser", "-u", "postgres", "--"] if self.as_postgres else []) + list(cmd)
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o777)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}", "start")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "optuna")
        return f"postgresql://postgres@127.0.0.1:{self.port}/optuna"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` with a SQLite backend and served artifacts, on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        self.log = open(self.root / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not become healthy in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        if getattr(self, "log", None):
            self.log.close()
