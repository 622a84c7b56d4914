"""One configuration schema: flags, YAML, /config, per-tenant limits and docs all come from it."""

from mimird.config.schema import OPTIONS, Config, ConfigError, Option, load_config

__all__ = ["OPTIONS", "Config", "ConfigError", "Option", "load_config"]
