"""Configuration: flags over YAML over defaults, and every kind of mistake stopping start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from mimird.config.schema import OPTIONS, ConfigError, load_config


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mimird", *args], capture_output=True, text=True, timeout=30,
                          cwd=cwd)


def test_defaults():
    config, actions = load_config([])
    assert actions == []
    assert config.server.http_listen_port == 8080
    assert config.server.http_listen_address == "127.0.0.1"
    assert config.multitenancy_enabled is True
    assert config.no_auth_tenant == "anonymous"
    assert config.api.prometheus_http_prefix == "/prometheus"
    assert config.api.alertmanager_http_prefix == "/alertmanager"
    assert config.blocks_storage.tsdb.dir == "./data/tsdb"
    assert config.runtime_config.period == 10.0


def test_flag_syntaxes():
    config, _ = load_config(["-server.http-listen-port=9009", "--auth.multitenancy-enabled=false",
                             "-tenant-federation.enabled", "-auth.no-auth-tenant", "team",
                             "-runtime-config.reload-period=1m30s"])
    assert config.server.http_listen_port == 9009
    assert config.multitenancy_enabled is False
    assert config.tenant_federation.enabled is True
    assert config.no_auth_tenant == "team"
    assert config.runtime_config.period == 90.0


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "mimir.yaml"
    path.write_text("multitenancy_enabled: false\nserver:\n  http_listen_port: 9000\n  log_level: debug\n"
                    "limits:\n  ingestion_rate: 123\n")
    config, _ = load_config([f"-config.file={path}", "-server.http-listen-port=9100"])
    assert config.server.http_listen_port == 9100
    assert config.server.log_level == "debug"
    assert config.multitenancy_enabled is False
    assert config.limits.ingestion_rate == 123.0


def test_expand_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMIRD_TEST_PORT", "9200")
    path = tmp_path / "mimir.yaml"
    path.write_text("server:\n  http_listen_port: ${MIMIRD_TEST_PORT}\n  log_level: ${UNSET_VAR:warn}\n")
    with pytest.raises(ConfigError):
        load_config([f"-config.file={path}"])
    config, _ = load_config([f"-config.file={path}", "-config.expand-env=true"])
    assert config.server.http_listen_port == 9200
    assert config.server.log_level == "warn"


@pytest.mark.parametrize("args,message", [
    (["-no.such-flag=1"], "flag provided but not defined: -no.such-flag"),
    (["-server.http-listen-port=abc"], "invalid value 'abc' for flag -server.http-listen-port"),
    (["-server.http-listen-port=70000"], "must be between 0 and 65535"),
    (["-auth.multitenancy-enabled=maybe"], "invalid boolean value"),
    (["-runtime-config.reload-period=soon"], "invalid duration"),
    (["-log.level=loud"], "must be one of: debug, info, warn, error"),
    (["-http.prometheus-http-prefix=prom"], "must start with '/'"),
    (["-auth.no-auth-tenant=../x"], "unsupported character '/'"),
    (["positional"], "unexpected argument"),
    (["-server.http-listen-port"], "flag needs an argument"),
])
def test_bad_flags(args, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(args)
    assert message in str(info.value)


@pytest.mark.parametrize("yaml_text,message", [
    ("server:\n  http_listen_port: 8080\n  bogus_key: 1\n", "line 3: field bogus_key not found in type server"),
    ("nonsense: true\n", "field nonsense not found in type config"),
    ("server:\n  http_listen_port: eighty\n", "server.http_listen_port: expected an integer"),
    ("multitenancy_enabled: \"yes\"\n", "multitenancy_enabled: expected a boolean"),
    ("runtime_config:\n  period: 10\n", "expected a duration"),
    ("server: [1, 2]\n", "expected a mapping"),
    ("server:\n  http_listen_port: [\n", "error loading config from"),
])
def test_bad_yaml(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config([f"-config.file={path}"])
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_cli_errors_are_one_line_and_exit_1(tmp_path):
    result = run_cli("-no.such-flag=1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: flag provided but not defined: -no.such-flag"]
    (tmp_path / "bad.yaml").write_text("server:\n  nope: 1\n")
    result = run_cli(f"-config.file={tmp_path / 'bad.yaml'}")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "field nope not found" in result.stderr
    result = run_cli("-config.file=/does/not/exist.yaml")
    assert result.returncode == 1 and "No such file" in result.stderr


def test_help_lists_every_basic_flag():
    result = run_cli("-help")
    assert result.returncode == 0
    for opt in OPTIONS:
        if opt.flag and opt.category == "basic":
            assert f"  -{opt.flag}" in result.stdout
    assert "-config.file" in result.stdout
    assert "(default 8080)" in result.stdout
    full = run_cli("-help-all")
    assert "-ingester.ring.num-tokens" in full.stdout


def test_generated_docs_are_current():
    from mimird.config.docs import render_markdown

    assert (REPO / "docs" / "configuration.md").read_text() == render_markdown(), (
        "docs/configuration.md is stale: run `.venv/bin/python -m mimird.config.docs > docs/configuration.md`")


@pytest.mark.parametrize("level", ["0", "10", "-2"])
def test_response_compression_level_is_checked(level):
    with pytest.raises(ConfigError, match="invalid gzip compression level"):
        load_config([f"-http.response-compression-level={level}"])
    for good in ("-1", "1", "9"):
        assert load_config([f"-http.response-compression-level={good}"])[0].api.response_compression_level == int(good)
