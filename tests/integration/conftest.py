"""Session fixtures for the integration tests: PostgreSQL + an MLflow tracking server, and a fake LM server.

The tracking server is the project's own `scripts/tracking_server.sh` (what `make server` runs), in a
throwaway directory on free ports, stopped by PID at the end. Skipped only where PostgreSQL is not
installed. The LM is `benchmarks.fake_provider.FakeProvider` on loopback, reached over HTTP through LiteLLM like
any provider LM.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.fake_provider import FakeProvider
from pipelines.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "tracking_server.sh"
FAKE_LATENCY_S = 0.01  # per LM request: small, so 2,000 rows score in well under a minute on 2 cores
HANG_S = 20  # what a message containing HANG takes: past the serving timeout, short enough to end


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together, so two calls cannot hand out the same one)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class TrackingServer:
    url: str
    services_dir: Path

    @property
    def artifacts_dir(self) -> Path:
        return self.services_dir / "mlflow" / "artifacts"


@pytest.fixture(scope="session")
def tracking_server() -> Iterator[TrackingServer]:
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        pytest.skip("PostgreSQL is not installed (no initdb)")
    base = Path(tempfile.mkdtemp(prefix="tracking-server-"))
    base.chmod(0o711)  # run as root, the cluster runs as the `postgres` user, which must reach its directory
    pg_port, mlflow_port = free_ports(2)
    services = base / "services"
    env = os.environ | {
        "SERVICES_DIR": str(services),
        "PG_PORT": str(pg_port),
        "MLFLOW_PORT": str(mlflow_port),
        "MLFLOW_BIN": str(Path(sys.executable).with_name("mlflow")),
    }
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    try:
        if started.returncode != 0:
            pytest.fail(f"tracking_server.sh start failed:\n{started.stdout}\n{started.stderr}")
        yield TrackingServer(url=f"http://127.0.0.1:{mlflow_port}", services_dir=services)
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def fake_lm_api() -> Iterator[str]:
    """The fake OpenAI-compatible server's base URL (`/v1`)."""
    with FakeProvider(FAKE_LATENCY_S, hang_s=HANG_S) as fake:
        yield fake.url


SMALL = ["task.data.train_size=16", "task.data.val_size=16", "task.data.dev_size=16", "task.data.test_size=16"]


@dataclass
class Project:
    """How the tests run entry points: as commands, in their own processes, against the server."""

    server: TrackingServer
    api_base: str
    work: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # DSPy's disk cache ignores api_base in its key: answers cached by an earlier run against another
        # fake server (a hung request that finished after its 504) must not answer this one.
        return env | {"MLFLOW_TRACKING_URI": self.server.url, "DSPY_CACHEDIR": str(self.work / "dspy_cache")}

    def overrides(self) -> list[str]:
        return [
            "tracking=server",
            f"tracking.uri={self.server.url}",
            "tracking.experiment=integration",
            "lm=openai_compatible",
            f"lm.api_base={self.api_base}",
            "lm.model=self-hosted/fake",
            f"paths.dspy_cache_dir={self.work}/dspy_cache",
            f"paths.output_dir={self.work}/outputs",
            f"hydra.sweep.dir={self.work}/multirun",
            "eval.display_progress=false",
            *SMALL,
        ]

    def start(self, entry: str, *overrides: str) -> subprocess.Popen:
        flags = [o for o in overrides if o.startswith("-")]  # Hydra reads `-m` only before the overrides
        rest = [o for o in overrides if not o.startswith("-")]
        command = [sys.executable, "-m", f"pipelines.{entry}", *flags, *self.overrides(), *rest]
        return subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a test can kill it with its Spark JVM and workers
        )

    def run(self, entry: str, *overrides: str, timeout: float = 300) -> str:
        proc = self.start(entry, *overrides)
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{entry} failed ({proc.returncode}):\n{out[-4000:]}"
        return out


@pytest.fixture(scope="session")
def project(tracking_server, fake_lm_api, tmp_path_factory) -> Project:
    return Project(server=tracking_server, api_base=fake_lm_api, work=tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def champion(project) -> str:
    """The server used as a team would: a `train` and a `train` sweep from two processes at once, then
    `register`. Returns the registered model's name (its version 1 is champion)."""
    single = project.start("train", "optimizer=labeled_fewshot")
    # The sweep registers no prompts: two processes registering the first version of the same prompt race
    # inside `mlflow.genai.register_prompt` (both create it; one gets RESOURCE_ALREADY_EXISTS).
    sweep = project.start("train", "-m", "optimizer=none,labeled_fewshot", "tracking.genai_surfaces=false")
    for name, proc in (("train", single), ("train sweep", sweep)):
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{out[-4000:]}"
    project.run("register")
    return "travel_intents"
