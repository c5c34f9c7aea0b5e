"""Configuration: every source, their precedence, and clear errors for bad input."""

from __future__ import annotations

import json
import re

import pytest

from kraken.config import Config, ConfigError, load
from kraken_testing import kraken

README_EXAMPLE = """[{octopus, [
{pid_file, "/var/run/kraken.pid"},
{log_file, "/var/log/kraken.log"},
{max_tcp_clients, 30000},
{num_router_shards, 8}]}].
"""


def test_defaults_are_the_originals():
    loaded = load({})
    assert loaded.config == Config()
    assert loaded.config.tcp_server_port == 12355
    assert loaded.config.num_router_shards == 4
    assert loaded.config.messages_stored_per_router_shard == 10_000
    assert loaded.config.admin_port == 12356
    assert set(loaded.sources.values()) == {"default"}


def test_command_line_beats_environment_beats_toml_beats_erlang(tmp_path):
    erlang = tmp_path / "kraken.config"
    erlang.write_text(
        "[{kraken, [{tcp_server_port, 1}, {admin_port, 2}, {num_router_shards, 3},"
        " {max_tcp_clients, 4}]}]."
    )
    toml = tmp_path / "kraken.toml"
    toml.write_text("tcp_server_port = 11\nadmin_port = 12\nnum_router_shards = 13\n")
    environ = {"KRAKEN_TCP_SERVER_PORT": "21", "KRAKEN_ADMIN_PORT": "22"}
    loaded = load({"tcp_server_port": "31"}, environ, str(toml), str(tmp_path / "kraken"))
    c = loaded.config
    assert (c.tcp_server_port, c.admin_port, c.num_router_shards, c.max_tcp_clients) == (
        31,
        22,
        13,
        4,
    )
    assert loaded.sources["tcp_server_port"] == "command line"
    assert loaded.sources["admin_port"] == "environment KRAKEN_ADMIN_PORT"
    assert loaded.sources["num_router_shards"] == f"file {toml}"
    assert loaded.sources["max_tcp_clients"] == f"file {erlang}"
    assert loaded.sources["listen_ip"] == "default"


def test_readme_example_erlang_file_is_read_verbatim(tmp_path):
    (tmp_path / "kraken.config").write_text(README_EXAMPLE)
    c = load({}, erlang_file=str(tmp_path / "kraken")).config
    assert c.pid_file == "/var/run/kraken.pid"
    assert c.log_file == "/var/log/kraken.log"
    assert c.max_tcp_clients == 30000
    assert c.num_router_shards == 8


def test_erlang_file_takes_ip_tuples_and_atoms(tmp_path):
    path = tmp_path / "k.config"
    path.write_text(
        "% comment\n[{lager, [{x, 1}]},\n {kraken, [{listen_ip, {127,0,0,1}},"
        " {log_level, debug}]}]."
    )
    c = load({}, erlang_file=str(path)).config
    assert c.listen_ip == "127.0.0.1" and c.log_level == "debug"


def test_toml_file_may_use_a_kraken_table(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("[kraken]\nclient_idle_timeout = 30\nlisten_ip = '0.0.0.0'\n")
    c = load({}, toml_file=str(path)).config
    assert c.client_idle_timeout == 30.0 and c.listen_ip == "0.0.0.0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cli": {"max_tcp_clients": "many"}}, "option max_tcp_clients (command line)"),
        ({"cli": {"num_router_shards": "0"}}, "num_router_shards must be positive"),
        ({"cli": {"log_level": "loud"}}, "log level must be one of debug, info, warn, error"),
        ({"environ": {"KRAKEN_TCP_SERVER_PORT": "x"}}, "environment KRAKEN_TCP_SERVER_PORT"),
        ({"cli": {"tcp_server_port": "70000"}}, "tcp_server_port must be a port number"),
    ],
)
def test_bad_values_name_the_option_and_the_source(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(kwargs.get("cli", {}), kwargs.get("environ"))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "tcp_server_port = [", "is not valid TOML"),
        ("unknown.toml", "no_such_option = 1", "unknown option 'no_such_option'"),
        ("typed.toml", "max_tcp_clients = 'lots'", "option max_tcp_clients"),
        ("bad.config", "[{kraken, [{tcp_server_port, 1}]}", "line 1"),
        ("other.config", "[{lager, []}].", "no {kraken, [...]} section"),
        ("unknown.config", "[{kraken, [{bogus, 1}]}].", "unknown option 'bogus'"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        if name.endswith(".toml"):
            load({}, toml_file=str(path))
        else:
            load({}, erlang_file=str(path))
    assert str(path) in str(caught.value)


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        load({}, toml_file=str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.config"):
        load({}, erlang_file=str(tmp_path / "missing"))


def test_kraken_config_prints_values_and_sources_from_every_form(tmp_path):
    (tmp_path / "etc.config").write_text(README_EXAMPLE)
    result = kraken(
        "config",
        "--json",
        "-config",
        str(tmp_path / "etc"),
        "-kraken",
        "num_router_shards",
        "16",
        "--max-line-bytes",
        "4096",
        env={"KRAKEN_ADMIN_PORT": "12459"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["num_router_shards"] == {"value": 16, "source": "command line"}
    assert data["max_line_bytes"] == {"value": 4096, "source": "command line"}
    assert data["admin_port"] == {"value": 12459, "source": "environment KRAKEN_ADMIN_PORT"}
    assert data["max_tcp_clients"]["source"] == f"file {tmp_path / 'etc.config'}"
    table = kraken("config").stdout
    assert "tcp_server_port" in table and "12355" in table and "default" in table


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--max-tcp-clients", "abc"],
        ["run", "-kraken", "no_such_option", "1"],
        ["run", "--config", "/nonexistent/kraken.toml"],
        ["run", "-config", "/nonexistent/kraken"],
        ["start", "--num-router-shards", "-1"],
    ],
)
def test_bad_option_or_file_exits_2_before_anything_starts(args):
    result = kraken(*args, "--tcp-server-port", "1", "--admin-port", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("kraken: error: ")
    assert "listening" not in result.stderr
