"""DeploySpec: the one small YAML that `localseek deploy compose|k8s` render everything from.

The engine services, the gateway config that routes to them and the Prometheus scrape config
are all derived from this spec in one pass, so they cannot disagree about names or ports.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localseek.errors import ConfigError
from localseek.gateway.config_parse import build_dataclass, load_config_file
from localseek.gateway.versions import STICKY

ENGINE_PORT = 8080
REDIS_PORT = 6379
PROMETHEUS_PORT = 9090
PRESTOP_SLEEP_S = 10  # endpoints controllers and gateways stop sending before SIGTERM
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _dns_label(value: str, what: str) -> None:
    if not _DNS_LABEL.match(value) or len(value) > 40:
        raise ConfigError(
            f"{what} {value!r} must be a lowercase DNS label (a-z, 0-9, '-'), at most 40 chars"
        )


@dataclass(frozen=True)
class VersionSpec:
    """One version of a model: its weights file or directory, its share, its replicas."""

    name: str  # stable, canary, v2 ...
    model: str  # path under the model store: an HF directory or a .gguf file
    weight: int = 100  # share of sessions among the model's versions
    replicas: int = 1
    gpus: int = 0  # GPUs per replica; 0 runs the CPU image
    cpu: str = "2"  # Kubernetes CPU request per replica
    memory: str = "8Gi"  # Kubernetes memory request and limit per replica
    args: tuple[str, ...] = ()  # extra `localseek serve` flags, e.g. ["--max-num-seqs", "64"]

    def __post_init__(self) -> None:
        _dns_label(self.name, "version name")
        if not self.model or self.model.startswith("/") or ".." in self.model.split("/"):
            raise ConfigError(
                f"version {self.name!r}: model must be a path inside the model store, got "
                f"{self.model!r}"
            )
        if self.weight < 0 or self.replicas < 1 or self.gpus < 0:
            raise ConfigError(f"version {self.name!r}: weight >= 0, replicas >= 1, gpus >= 0")


@dataclass(frozen=True)
class ModelSpec:
    """A public model name and its versions."""

    name: str
    versions: tuple[VersionSpec, ...]
    sticky: str = "session"  # session | tenant | none (see gateway/versions.py)

    def __post_init__(self) -> None:
        _dns_label(self.name, "model name")
        if not self.versions:
            raise ConfigError(f"model {self.name!r}: at least one version is required")
        if self.sticky not in STICKY:
            raise ConfigError(f"model {self.name!r}: sticky must be one of {STICKY}")


@dataclass(frozen=True)
class AutoscalingSpec:
    """Engine replicas follow the queue: waiting requests per replica, not CPU."""

    enabled: bool = True
    min_replicas: int = 1
    max_replicas: int = 4
    waiting_per_replica: int = 8  # target `localseek:num_requests_waiting` per replica
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"  # for KEDA

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas or self.waiting_per_replica < 1:
            raise ConfigError("autoscaling: need 1 <= min_replicas <= max_replicas, target >= 1")


@dataclass(frozen=True)
class DeploySpec:
    """Everything `localseek deploy compose|k8s` needs."""

    models: tuple[ModelSpec, ...]
    namespace: str = "localseek"
    engine_image: str = "localseek:cpu"  # docker/Dockerfile.cpu
    engine_cuda_image: str = "localseek:cuda"  # docker/Dockerfile.cuda, for gpus > 0
    gateway_image: str = "localseek-gateway:latest"  # docker/Dockerfile.gateway
    redis_image: str = "redis:7-alpine"
    prometheus_image: str = "prom/prometheus:v2.53.0"
    model_store: str = "/srv/models"  # compose: host directory mounted read-only at /models
    model_pvc: str = "localseek-models"  # k8s: PersistentVolumeClaim mounted at /models
    max_request_s: int = 600  # the longest request allowed: drain deadline and grace period
    startup_timeout_s: int = 1800  # time a replica may take to load its weights
    gateway_replicas: int = 2  # k8s (compose runs one)
    gateway_port: int = 8000
    admin_key_env: str | None = "LOCALSEEK_ADMIN_KEY"  # None: no admin API
    autoscaling: AutoscalingSpec = AutoscalingSpec()

    def __post_init__(self) -> None:
        _dns_label(self.namespace, "namespace")
        if not self.models:
            raise ConfigError("at least one model is required", param="models")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique, got {names}", param="models")
        for model in self.models:
            versions = [v.name for v in model.versions]
            if len(set(versions)) != len(versions):
                raise ConfigError(f"model {model.name!r}: version names must be unique")
        if self.max_request_s < 1 or self.startup_timeout_s < 10 or self.gateway_replicas < 1:
            raise ConfigError("max_request_s >= 1, startup_timeout_s >= 10, gateway_replicas >= 1")

    @property
    def grace_period_s(self) -> int:
        """Pod termination grace: the preStop pause, the longest request, and exit time."""
        return PRESTOP_SLEEP_S + self.max_request_s + 30

    @property
    def startup_failure_threshold(self) -> int:
        return math.ceil(self.startup_timeout_s / 10)


@dataclass(frozen=True)
class Engine:
    """One engine deployment unit: a (model, version) pair."""

    model: ModelSpec
    version: VersionSpec

    @property
    def name(self) -> str:
        return f"engine-{self.model.name}-{self.version.name}"

    @property
    def served_id(self) -> str:
        """The model id this engine serves and the gateway routes the version to."""
        return f"{self.model.name}-{self.version.name}"

    def serve_args(self, spec: DeploySpec) -> list[str]:
        args = ["serve", f"/models/{self.version.model}", "--host", "0.0.0.0"]
        args += ["--port", str(ENGINE_PORT), "--served-model-name", self.served_id]
        args += ["--drain-timeout", str(spec.max_request_s)]
        if self.version.gpus:
            args += ["--device", "cuda"]
        return args + list(self.version.args)

    def image(self, spec: DeploySpec) -> str:
        return spec.engine_cuda_image if self.version.gpus else spec.engine_image


def engines(spec: DeploySpec) -> list[Engine]:
    return [Engine(m, v) for m in spec.models for v in m.versions]


def parse_deploy_spec(data: Any) -> DeploySpec:
    return build_dataclass(DeploySpec, data, "")


def load_deploy_spec(path: str | Path) -> DeploySpec:
    """Read and validate a deploy spec YAML; errors name the file and the field."""
    return load_config_file(DeploySpec, path, "deploy spec")
