"""A pod's volumes as folders on the host (emptyDir, secret, configMap,
downwardAPI, projected with bound service-account tokens, hostPath), which the
container launcher then bind-mounts at each volumeMount's mountPath."""

from __future__ import annotations

import base64
import datetime
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.nodeagent.env import ConfigError, field_value, resource_value
from localcluster.nodeagent.kube import Kube, KubeError

DEFAULT_TOKEN_SECONDS = 3607  # the kubelet's value: the apiserver extends such tokens


@dataclass
class TokenFile:
    """A projected service-account token the agent keeps fresh (at 80% of its life)."""

    path: Path
    audience: str | None
    seconds: int
    refresh_at: float = 0.0


@dataclass
class ApiObjects:
    """Reads secrets and configmaps of one namespace, once per pod start."""

    kube: Kube
    namespace: str
    _cache: dict[tuple[str, str], dict[str, bytes] | None] = field(default_factory=dict)

    def data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        key = (kind, name)
        if key not in self._cache:
            try:
                obj = self.kube.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
            except KubeError as err:
                if err.status != 404:
                    raise ConfigError(f"cannot read {kind[:-1]} {name}: {err}") from err
                obj = None
            if obj is None:
                self._cache[key] = None
            elif kind == "secrets":
                raw = obj.get("data") or {}
                self._cache[key] = {k: base64.b64decode(v) for k, v in raw.items()}
            else:
                found = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                binary = obj.get("binaryData") or {}
                found.update({k: base64.b64decode(v) for k, v in binary.items()})
                self._cache[key] = found
        value = self._cache[key]
        if value is None and not optional:
            raise ConfigError(f'{kind[:-1]} "{name}" not found')
        return value

    def forget(self) -> None:
        self._cache.clear()

    def text(self, kind: str) -> Any:
        def lookup(name: str, _key: str, optional: bool) -> Mapping[str, str] | None:
            found = self.data(kind, name, optional)
            return None if found is None else {k: v.decode() for k, v in found.items()}

        return lookup


def _write(folder: Path, rel: str, content: bytes, mode: int | None) -> None:
    if rel.startswith("/") or ".." in Path(rel).parts:
        raise ConfigError(f"volume item path {rel!r} must be relative, without '..'")
    target = folder / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(content)
    tmp.chmod(mode if mode is not None else 0o644)
    os.replace(tmp, target)  # atomic, so a refreshed token is never read half-written


def _project(
    folder: Path, data: dict[str, bytes] | None, items: list[dict[str, Any]], mode: int | None
) -> None:
    if data is None:
        return
    for item in items or [{"key": k, "path": k} for k in data]:
        if item["key"] not in data:
            raise ConfigError(f"key {item['key']!r} not found for a volume item")
        _write(folder, item["path"], data[item["key"]], item.get("mode", mode))


class PodVolumes:
    """Builds every volume of one pod under `root` and remembers where each is."""

    def __init__(self, kube: Kube, pod: dict[str, Any], root: Path) -> None:
        self.kube = kube
        self.pod = pod
        self.root = root
        self.paths: dict[str, Path] = {}
        self.tokens: list[TokenFile] = []
        self.objects = ApiObjects(kube, pod["metadata"]["namespace"])

    def prepare(self) -> None:
        for vol in self.pod["spec"].get("volumes", []):
            self.paths[vol["name"]] = self._volume(vol)
        self.refresh_tokens(force=True)

    def _volume(self, vol: dict[str, Any]) -> Path:
        name = vol["name"]
        folder = self.root / "volumes" / name
        if "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            return path
        folder.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in vol:
            return folder
        if "secret" in vol:
            src = vol["secret"]
            data = self.objects.data("secrets", src["secretName"], bool(src.get("optional")))
            _project(folder, data, src.get("items", []), src.get("defaultMode"))
        elif "configMap" in vol:
            src = vol["configMap"]
            data = self.objects.data("configmaps", src["name"], bool(src.get("optional")))
            _project(folder, data, src.get("items", []), src.get("defaultMode"))
        elif "downwardAPI" in vol:
            self._downward(folder, vol["downwardAPI"].get("items", []))
        elif "projected" in vol:
            mode = vol["projected"].get("defaultMode")
            for source in vol["projected"].get("sources", []):
                self._projected_source(folder, source, mode)
        else:
            kinds = sorted(set(vol) - {"name"})
            raise ConfigError(
                f"volume {name!r}: {', '.join(kinds)} volumes are not supported by the local "
                "node agent (it supports emptyDir, secret, configMap, downwardAPI, projected, "
                "hostPath)"
            )
        return folder

    def _projected_source(self, folder: Path, source: dict[str, Any], mode: int | None) -> None:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            seconds = int(sat.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
            self.tokens.append(TokenFile(folder / sat["path"], sat.get("audience"), seconds))
        elif "secret" in source:
            src = source["secret"]
            data = self.objects.data("secrets", src["name"], bool(src.get("optional")))
            _project(folder, data, src.get("items", []), mode)
        elif "configMap" in source:
            src = source["configMap"]
            data = self.objects.data("configmaps", src["name"], bool(src.get("optional")))
            _project(folder, data, src.get("items", []), mode)
        elif "downwardAPI" in source:
            self._downward(folder, source["downwardAPI"].get("items", []))
        else:
            raise ConfigError(f"projected source {sorted(source)} is not supported here")

    def _downward(self, folder: Path, items: list[dict[str, Any]]) -> None:
        for item in items:
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"])
            else:
                ref = item["resourceFieldRef"]
                spec = self.pod["spec"]["containers"]
                ctr = next((c for c in spec if c["name"] == ref.get("containerName")), spec[0])
                value = resource_value(ctr, ref)
            _write(folder, item["path"], value.encode(), item.get("mode"))

    def refresh_tokens(self, force: bool = False) -> float:
        """Requests tokens due for renewal; returns the next renewal time (monotonic)."""
        meta, spec = self.pod["metadata"], self.pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        for tok in self.tokens:
            if not force and time.monotonic() < tok.refresh_at:
                continue
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [tok.audience] if tok.audience else None,
                    "expirationSeconds": tok.seconds,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token"
            try:
                answer = self.kube.create(path, body)
            except KubeError as err:
                raise ConfigError(f"cannot get a token for service account {sa}: {err}") from err
            _write(tok.path.parent, tok.path.name, answer["status"]["token"].encode(), 0o644)
            expires = datetime.datetime.fromisoformat(
                answer["status"]["expirationTimestamp"].replace("Z", "+00:00")
            )
            left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
            tok.refresh_at = time.monotonic() + max(60.0, min(0.8 * left, 86400.0))
        return min((t.refresh_at for t in self.tokens), default=float("inf"))

    def mounts(self, container: dict[str, Any]) -> list[dict[str, Any]]:
        """The bind mounts of one container (subPath inside a volume included)."""
        found = []
        for vm in container.get("volumeMounts", []):
            if vm["name"] not in self.paths:
                raise ConfigError(f"volumeMount {vm['name']!r} names no volume of the pod")
            source = self.paths[vm["name"]]
            if vm.get("subPath"):
                source = source / vm["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            found.append(
                {
                    "source": str(source),
                    "target": vm["mountPath"],
                    "readOnly": bool(vm.get("readOnly")),
                }
            )
        return found
