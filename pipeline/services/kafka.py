"""The local single-node Apache Kafka broker (KRaft, combined broker and controller) on 127.0.0.1.

The official jars come from Maven Central through ``compose/kafka/pom.xml`` into ``.cache/`` (ignored);
the broker's data lives in ``.local/kafka/data`` (ignored) so a restart keeps the event log. Storage is
formatted with ``kafka.tools.StorageTool`` on first start only; the main class is ``kafka.Kafka``.
Automatic topic creation is off: ``pipeline.kafka.ensure_topics`` creates every topic explicitly.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from pipeline.errors import ServiceError
from pipeline.services.common import (
    ServiceStatus,
    port_open,
    read_pid,
    require_free,
    stop_pid,
    wait_until,
)
from pipeline.settings import KAFKA_VERSION, Settings

VERSION_MARKER = "tipline-kafka-version"
_DETACHED: list[subprocess.Popen[bytes]] = []


JVM_PERFORMANCE_OPTS = "-XX:+UseG1GC -XX:TieredStopAtLevel=1"
"""The local broker's JIT stops at C1. It serves short runs (the demo, the tests, a benchmark) on a small
machine, where C2 compiling the broker cost more CPU than it saved: over the first 15,000 reports
through a broker just started, its C2 threads used 9.7 s of CPU beside 7.8 s of request handling, and a
benchmark's 10,000 reports after a 5,000-report warm-up cost the broker 0.99 ms each, against 0.54 with
C1 only (2026-12-04). A broker run for days gains from C2 (0.35-0.48 ms a report once compiled): set
``KAFKA_JVM_PERFORMANCE_OPTS=-XX:+UseG1GC`` for it."""


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "Java is not installed, and the local Kafka broker needs Java 17 or newer; "
            "install it with `apt-get install -y openjdk-17-jre-headless`, or set KAFKA_BOOTSTRAP_SERVERS "
            "to use a broker of your own."
        )
    return java


def fetch_jars(settings: Settings) -> Path:
    """Fetch the pinned Kafka jars with Maven unless they are already in the cache."""
    libs = settings.kafka_home / "libs"
    marker = settings.kafka_home / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "Maven is not installed, and it is needed once to fetch the Kafka broker jars; "
            "install it with `apt-get install -y maven`, or set KAFKA_BOOTSTRAP_SERVERS to use your own broker."
        )
    _java()
    pom = settings.root / "compose" / "kafka" / "pom.xml"
    tmp = settings.kafka_home.with_name(settings.kafka_home.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # only our own half-finished download
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp / 'libs'}",
        "-DincludeScope=runtime",
        f"-Dkafka.version={KAFKA_VERSION}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any((tmp / "libs").glob("kafka_2.13-*.jar")):
        log = settings.cache_dir / "maven-fetch.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + proc.stderr)
        raise ServiceError(
            f"Maven could not fetch the Kafka {KAFKA_VERSION} jars from Maven Central (exit {proc.returncode}); "
            f"check the network or Maven's settings, and see {log}."
        )
    settings.kafka_home.parent.mkdir(parents=True, exist_ok=True)
    if settings.kafka_home.exists():
        shutil.rmtree(settings.kafka_home)
    tmp.rename(settings.kafka_home)
    marker.write_text(KAFKA_VERSION + "\n")
    return libs


def new_cluster_id() -> str:
    """A random cluster id as Kafka makes one (``Uuid.randomUuid``): 22 URL-safe base64 characters, never
    starting with "-". One in 64 did, and the storage tool read it as an option: a fresh machine's first
    ``services up`` failed that often ("argument --cluster-id/-t: expected one argument")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """Start, stop and inspect the project's own broker."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.dir = settings.kafka_dir
        self.data = self.dir / "data"
        self.config = self.dir / "server.properties"
        self.log = self.dir / "broker.log"
        self.pid_file = self.dir / "broker.pid"

    def _properties(self) -> str:
        port, cport = self.s.kafka_port, self.s.kafka_controller_port
        return "\n".join(
            [
                "# Written by `tipline services up`; rewritten at each start.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.data}",
                # The project creates its topics itself, with their partitions and retention.
                "auto.create.topics.enable=false",
                f"num.partitions={self.s.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=10",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # The event log is kept forever unless a topic says otherwise.
                "log.retention.ms=-1",
                "log.retention.bytes=-1",
                "message.max.bytes=4194304",
                "",
            ]
        )

    def _check_version(self) -> None:
        marker = self.dir / VERSION_MARKER
        if self.data.exists() and any(self.data.iterdir()):
            found = marker.read_text().strip() if marker.exists() else "unknown"
            if found != KAFKA_VERSION:
                raise ServiceError(
                    f"The Kafka data folder {self.data} was written by Kafka {found}, not {KAFKA_VERSION}; "
                    "nothing was deleted: move that folder away (or set TIPLINE_STATE_DIR elsewhere) and run again."
                )

    def _format(self, java: str, libs: Path) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [
            java,
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={new_cluster_id()}",
            "--config",
            str(self.config),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            (self.dir / "format.log").write_text(proc.stdout + proc.stderr)
            raise ServiceError(
                f"Kafka could not format its storage in {self.data}; see {self.dir / 'format.log'}."
            )
        (self.dir / VERSION_MARKER).write_text(KAFKA_VERSION + "\n")

    def running_pid(self) -> int | None:
        return read_pid(self.pid_file)

    def up(self, *, timeout: float = 90.0) -> ServiceStatus:
        if self.s.kafka_external:
            return self.status()
        pid = self.running_pid()
        if pid is not None:
            wait_until(lambda: port_open(self.s.kafka_port), timeout=timeout, what="Kafka", log=self.log)
            return self.status()
        require_free(self.s.kafka_port, "the Kafka broker", "TIPLINE_KAFKA_PORT")
        require_free(self.s.kafka_controller_port, "the Kafka controller", "TIPLINE_KAFKA_CONTROLLER_PORT")
        java = _java()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_version()
        libs = fetch_jars(self.s)
        self.config.write_text(self._properties())
        if not (self.data / "meta.properties").exists():
            self._format(java, libs)
        env = dict(os.environ)
        # The variables Kafka's own start scripts read, with this project's defaults.
        env.setdefault("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g")
        env.setdefault("KAFKA_JVM_PERFORMANCE_OPTS", JVM_PERFORMANCE_OPTS)
        cmd = [
            java,
            *env["KAFKA_HEAP_OPTS"].split(),
            *env["KAFKA_JVM_PERFORMANCE_OPTS"].split(),
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.config),
        ]
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        # The broker outlives this process on purpose (its own session); keep the handle so that it is
        # not reported as a leaked child while we are still here.
        _DETACHED.append(proc)
        from pipeline.kafka import broker_answers

        def ready() -> bool:
            if proc.poll() is not None:
                raise ServiceError(
                    f"The Kafka broker exited at start (code {proc.returncode}); see {self.log}."
                )
            return broker_answers(self.s.kafka_bootstrap, timeout=1.0)

        wait_until(ready, timeout=timeout, what="The Kafka broker", log=self.log)
        return self.status()

    def down(self) -> None:
        if self.s.kafka_external:
            return
        pid = self.running_pid()
        if pid is not None:
            stop_pid(pid, timeout=60.0)
        for proc in [p for p in _DETACHED if p.pid == pid]:
            proc.wait(10)  # our own child: collect it, so it is not reported as still running
            _DETACHED.remove(proc)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> ServiceStatus:
        from pipeline.kafka import broker_answers

        if self.s.kafka_external:
            ok = broker_answers(self.s.kafka_bootstrap, timeout=3.0)
            return ServiceStatus(
                "kafka", ok, self.s.kafka_bootstrap, "(external: not managed)", managed=False
            )
        pid = self.running_pid()
        ok = pid is not None and broker_answers(self.s.kafka_bootstrap, timeout=2.0)
        return ServiceStatus(
            "kafka",
            ok,
            self.s.kafka_bootstrap,
            str(self.log),
            managed=True,
            detail=f"pid {pid}, Kafka {KAFKA_VERSION}, data {self.data}" if pid else "stopped",
        )
