"""Runtime configuration: per-tenant limit overrides read from `-runtime-config.file`.

The files are reloaded every `-runtime-config.reload-period`. A file that fails to read or validate
keeps the last good configuration in force, and the error is logged, as Mimir's runtime config
manager does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Hashable
from typing import Any

from mimird.config.schema import LIMIT_OPTIONS, Config, ConfigError
from mimird.services import Service
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.runtime_config")

# Top-level sections of Mimir's runtime config other than `overrides`; they are accepted so that a
# Mimir runtime file loads, and shown back on /runtime_config.
_OTHER_SECTIONS = ("multi_kv_config", "ingester_limits", "distributor_limits", "ingest_limits")

# Bound on the values `Overrides.derived` remembers (one per tenant combination and kind).
_MAX_DERIVED = 4096


def parse_runtime_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse one runtime config document into {"overrides": {tenant: {limit: value}}, ...}."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from mimird.http.auth import TenantError, validate_tenant_id

    try:
        document = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ConfigError(f"{source}: {' '.join(str(exc).split())}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    result: dict[str, Any] = {"overrides": {}}
    for key, value in document.items():
        if key == "overrides":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: overrides: expected a mapping of tenant to limits")
            for tenant, limits in value.items():
                tenant = str(tenant)
                try:
                    validate_tenant_id(tenant)
                except TenantError as exc:
                    raise ConfigError(f"{source}: overrides: {exc}") from None
                result["overrides"][tenant] = _parse_limits(limits or {}, f"{source}: overrides.{tenant}")
        elif key in _OTHER_SECTIONS:
            result[key] = value
        else:
            raise ConfigError(f"{source}: field {key} not found in type runtime config")
    return result


def _parse_limits(limits: Any, where: str) -> dict[str, Any]:
    if not isinstance(limits, dict):
        raise ConfigError(f"{where}: expected a mapping of limits")
    parsed = {}
    for name, raw in limits.items():
        opt = LIMIT_OPTIONS.get(name)
        if opt is None:
            raise ConfigError(f"{where}: field {name} not found in type validation.Limits")
        try:
            value = opt.from_yaml(raw)
            opt.check(value)
        except ValueError as exc:
            raise ConfigError(f"{where}.{name}: {exc}") from None
        parsed[name] = value
    return parsed


class Overrides:
    """Per-tenant limits: the config's defaults with the runtime overrides on top."""

    def __init__(self, config: Config, runtime: RuntimeConfig | None):
        self.defaults = config.limit_defaults()
        self.runtime = runtime
        self._derived: dict[Hashable, Any] = {}
        self._derived_from: dict[str, Any] | None = None

    def derived(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """`compute()`, remembered under `key` until the runtime overrides are reloaded: for values the
        request path derives from several limits of the same tenants on every request."""
        source = self.runtime.current if self.runtime is not None else None
        if source is not self._derived_from:
            # a reload installs a new mapping; the old one stays referenced here until then, so identity is safe
            self._derived = {}
            self._derived_from = source
        derived = self._derived
        try:
            return derived[key]
        except KeyError:
            if len(derived) >= _MAX_DERIVED:
                derived.clear()
            value = derived[key] = compute()
            return value

    def for_tenant(self, tenant: str) -> dict[str, Any]:
        """The tenant's effective limits by YAML name."""
        limits = dict(self.defaults)
        if self.runtime is not None:
            limits.update(self.runtime.current.get("overrides", {}).get(tenant, {}))
        return limits

    def get(self, tenant: str, name: str) -> Any:
        if self.runtime is not None:
            tenant_overrides = self.runtime.current.get("overrides", {}).get(tenant)
            if tenant_overrides and name in tenant_overrides:
                return tenant_overrides[name]
        return self.defaults[name]


class RuntimeConfig(Service):
    """Loads the runtime config files at start and reloads them periodically."""

    name = "runtime-config"

    def __init__(self, files: list[str], period: float):
        super().__init__()
        self.files = files
        self.period = period
        self.current: dict[str, Any] = {"overrides": {}}
        self.loaded = False
        self.last_error: str | None = None
        self._digest: bytes | None = None
        self._task: asyncio.Task | None = None

    def load(self) -> bool:
        """Read and validate every file; install the result if all are good. Returns True if installed."""
        texts = []
        try:
            for path in self.files:
                with open(path, encoding="utf-8") as fh:
                    texts.append((path, fh.read()))
        except OSError as exc:
            return self._failed(f"failed to read runtime config: {exc}")
        digest = hashlib.sha256("\0".join(t for _, t in texts).encode()).digest()
        if digest == self._digest:
            return False
        merged: dict[str, Any] = {"overrides": {}}
        try:
            for path, text in texts:
                part = parse_runtime_yaml(text, path)
                merged["overrides"].update(part.pop("overrides"))
                merged.update(part)
        except ConfigError as exc:
            self._digest = digest  # the same bad content is not reported again
            return self._failed(f"failed to load runtime config: {exc}")
        self.current, self._digest, self.loaded, self.last_error = merged, digest, True, None
        kv_log(log, logging.INFO, "runtime config loaded", files=",".join(self.files),
               tenants=len(merged["overrides"]))
        return True

    def _failed(self, message: str) -> bool:
        self.last_error = message
        kv_log(log, logging.ERROR, message)
        return False

    async def starting(self) -> None:
        self.load()
        if not self.loaded:
            # Mimir refuses to start on a runtime config it cannot load at start-up.
            raise ConfigError(self.last_error or "failed to load runtime config")
        self._task = asyncio.get_running_loop().create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                self.load()
            except Exception as exc:  # a reload must never take the daemon down
                self._failed(f"failed to reload runtime config: {exc}")

    async def stopping(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
