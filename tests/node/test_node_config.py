"""p2pstore.toml: rendering, loading and error messages naming file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.node.address import HostPort
from p2pstore.node.config import (
    DhtSection,
    LimitsSection,
    LoggingSection,
    NodeSection,
    StorageSection,
    config_from_dict,
    load_config,
    toml_string,
)
from p2pstore.node.config_template import render_config
from p2pstore.node.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p2pstore.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_rendered_config_loads_back_exactly(tmp_path: Path) -> None:
    node = NodeSection(
        nickname='al"ice \\ ünï',
        listen=HostPort("::", 3456),
        public_address=HostPort("home.example.org", 4000),
        web_port=8123,
        introducer=True,
        bootstrap_file="seeds.txt",
        shutdown_timeout=45,
        status_interval=2,
    )
    storage = StorageSection(
        enabled=False, quota=500 * 1024**2, reserved_space=5 * 10**9, lease_duration=7200
    )
    dht = DhtSection(k=8, alpha=2, remember_peers=64)
    logging = LoggingSection(level="DEBUG", max_bytes=2 * 1024**2, backup_count=3)
    path = write(tmp_path, render_config(node, storage, dht, logging))
    config = load_config(path)
    assert (config.node, config.storage, config.dht, config.logging) == (
        node,
        storage,
        dht,
        logging,
    )
    assert config.bootstrap_path == tmp_path / "seeds.txt"
    text = path.read_text()
    assert text.count("#") > 20  # commented for humans
    assert 'quota = "500MiB"' in text


@pytest.mark.parametrize(
    "limits",
    [
        LimitsSection(),
        LimitsSection(
            max_connections=64, upload_rate=2_000_000, download_rate=512 * 1024, profile="low-power"
        ),
        LimitsSection(upload_rate=10_000, download_rate=0),
    ],
)
def test_limits_render_and_load_back(tmp_path: Path, limits: LimitsSection) -> None:
    text = render_config(NodeSection(), StorageSection(), limits=limits)
    config = load_config(write(tmp_path, text))
    assert config.limits == limits
    assert "[limits]" in text and "0 = unlimited" in text


def test_limits_accept_size_strings_and_unlimited(tmp_path: Path) -> None:
    text = '[limits]\nupload_rate = "2MB"\ndownload_rate = "unlimited"\nprofile = "low-power"\n'
    limits = load_config(write(tmp_path, text)).limits
    assert (limits.upload_rate, limits.download_rate) == (2_000_000, 0)
    assert limits.background_factor == 4 and LimitsSection().background_factor == 1
    text = "[limits]\nupload_rate = 0\ndownload_rate = 1048576\n"
    limits = load_config(write(tmp_path, text)).limits
    assert (limits.upload_rate, limits.download_rate) == (0, 1 << 20)
    assert load_config(write(tmp_path, "")).limits == LimitsSection()


def test_defaults_and_unlimited_quota(tmp_path: Path) -> None:
    path = write(tmp_path, render_config(NodeSection(), StorageSection()))
    config = load_config(path)
    assert config.storage.quota is None
    assert config.node.listen == HostPort("0.0.0.0", 0)
    assert load_config(write(tmp_path, "")).dht == DhtSection()


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        (
            '[node]\nlisten = "0.0.0.0:70000"',
            "[node] listen",
            "port 70000 is out of range 0..65535",
        ),
        ("[node]\nlisten = 3456", "[node] listen", "expected a string"),
        ("[node]\nweb_port = -1", "[node] web_port", "-1 is out of range 0..65535"),
        ("[node]\nweb_port = true", "[node] web_port", "expected an integer"),
        ('[node]\nintroducer = "yes"', "[node] introducer", "expected true or false"),
        ('[node]\nnickname = ""', "[node] nickname", "1 to 64 characters"),
        ('[node]\npublic_address = "0.0.0.0:1"', "[node] public_address", "wildcard"),
        ('[node]\nshutdown_timeout = "0s"', "[node] shutdown_timeout", "minimum"),
        ('[node]\nlistne = "1.2.3.4:5"', "[node] listne", "unknown key"),
        ('[storage]\nquota = "10XB"', "[storage] quota", "unknown unit 'XB'"),
        ('[storage]\nreserved_space = "lots"', "[storage] reserved_space", "not a size"),
        ('[storage]\nlease_duration = "5m"', "[storage] lease_duration", "minimum of 3600"),
        ("[dht]\nk = 0", "[dht] k", "0 is out of range 1..64"),
        ("[dht]\nk = 4\nalpha = 5", "[dht] alpha", "5 is out of range 1..4"),
        ('[logging]\nlevel = "LOUD"', "[logging] level", "not one of"),
        ('[logging]\nmax_bytes = "1kB"', "[logging] max_bytes", "at least 10kB"),
        ('[vdrive]\npublic_key = "x"', "[vdrive] public_key", "unknown key"),
        ('[vdrive]\nwriters = ["abc"]', "[vdrive] writers", "'abc'"),
        ("[vdrive]\nopen = 1", "[vdrive] open", "expected true or false"),
        ('[limits]\nupload_rate = "fast"', "[limits] upload_rate", "not a size"),
        ('[limits]\ndownload_rate = "5kB"', "[limits] download_rate", "minimum of 10kB"),
        ('[limits]\nupload_rate = "-1MB"', "[limits] upload_rate", "negative"),
        ("[limits]\nmax_connections = 2", "[limits] max_connections", "out of range 8..65536"),
        ('[limits]\nprofile = "eco"', "[limits] profile", "'normal', 'low-power'"),
        ("[limits]\nuplink_queue_ms = 5", "[limits] uplink_queue_ms", "10 to 2000"),
        ('[limits]\nuplink_queue_ms = "60ms"', "[limits] uplink_queue_ms", "10 to 2000"),
        ('[limits]\nquota = "1GB"', "[limits] quota", "unknown key"),
        (
            '[storage]\nlease_duration = "30d"\n[maintenance]\nkeep_interval = "11d"',
            "[maintenance] keep_interval",
            "longer than the maximum of 864000 s",
        ),
        ("[webb]\nport = 1", "[webb]", "unknown section"),
        ("node = 3", "node", "expected a [section] table"),
    ],
)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, toml: str, key: str, problem: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert problem in err.problem
    assert str(err).startswith(f"{path}: {key}: ")


def test_example_message_from_the_issue(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nlisten = "0.0.0.0:70000"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).endswith(
        "p2pstore.toml: [node] listen: '0.0.0.0:70000': port 70000 is out of range 0..65535"
    )


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\n"))
    path = tmp_path / "p2pstore.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_toml_string_escapes() -> None:
    import tomllib

    for s in ['a"b', "back\\slash", "tab\tnl\n", "\x7f", "ünïcode"]:
        assert tomllib.loads(f"x = {toml_string(s)}")["x"] == s


KEYS = {
    "node": [
        "nickname",
        "listen",
        "public_address",
        "web_port",
        "introducer",
        "bootstrap_file",
        "shutdown_timeout",
        "status_interval",
        "bogus",
    ],
    "storage": ["enabled", "quota", "reserved_space", "lease_duration"],
    "dht": ["k", "alpha", "remember_peers"],
    "logging": ["level", "max_bytes", "backup_count"],
    "vdrive": ["public_key", "serve", "writers", "open"],
    "limits": ["max_connections", "upload_rate", "download_rate", "profile"],
    "other": ["x"],
}
values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        ["127.0.0.1:80", "10GB", "31d", "INFO", "[::1]:0", "unlimited", "1.5GiB", "low-power"]
    ),
    st.lists(st.integers(), max_size=2),
)
configs = st.dictionaries(
    st.sampled_from(sorted(KEYS)),
    st.one_of(
        st.integers(),
        st.dictionaries(st.sampled_from(sorted({k for ks in KEYS.values() for k in ks})), values),
    ),
    max_size=5,
)


@given(configs)
def test_config_validation_is_total(data: dict[str, object]) -> None:
    try:
        config_from_dict(data, Path("p2pstore.toml"))
    except ConfigError as e:
        assert e.file == "p2pstore.toml" and e.problem


def test_helper_section(tmp_path: Path) -> None:
    """docs/helper.md, "Settings": defaults, values, and each bad value named."""
    path = tmp_path / "p2pstore.toml"
    assert config_from_dict({}, path).helper.use == "never"
    assert config_from_dict({}, path).helper.helpers == ("seeds",)
    helper_id = "a" * 32
    cfg = config_from_dict(
        {
            "helper": {
                "enabled": True,
                "max_bytes_per_day": "1GB",
                "accept": [helper_id.upper()],
                "use": "slow",
                "slow_below": "1MB",
                "helpers": [helper_id, "seeds"],
                "keep_partial": "1h",
            }
        },
        path,
    )
    h = cfg.helper
    assert (h.enabled, h.max_bytes_per_day, h.use, h.slow_below) == (True, 10**9, "slow", 10**6)
    assert h.accept == (helper_id,) and h.helpers == (helper_id, "seeds")
    serving = h.serving(reserve=5)
    assert serving.accept == frozenset({bytes(20)}) and serving.keep_partial == 3600.0
    assert h.using().slow_below == 10**6
    for table, key in (
        ({"use": "sometimes"}, "use"),
        ({"accept": ["seeds"]}, "accept"),
        ({"helpers": ["nope"]}, "helpers"),
        ({"keep_partial": "10s"}, "keep_partial"),
        ({"max_uploads": 0}, "max_uploads"),
        ({"surprise": 1}, "surprise"),
    ):
        with pytest.raises(ConfigError) as info:
            config_from_dict({"helper": table}, path)
        assert f"[helper] {key}" in str(info.value)
