"""Remote settings: validation naming file and field, layering, the user config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildsys.project.config import (
    ConfigError,
    RemoteSettings,
    load_settings,
    load_user_config,
)
from buildsys.remote import open_remote


@pytest.fixture
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "config.toml"
    monkeypatch.setenv("BUILDSYS_CONFIG", str(path))
    monkeypatch.setenv("BUILDSYS_KEYS_DIR", str(tmp_path / "keys"))
    return path


@pytest.mark.parametrize(
    "table, message",
    [
        ({"urll": "file:///x"}, "field 'urll': unknown field \\(did you mean 'url'"),
        ({"read_only": "yes"}, "field 'read_only': must be boolean, got string 'yes'"),
        ({"timeout_s": 0}, "field 'timeout_s'"),
        ({"timeout_s": True}, "field 'timeout_s'"),
        ({"retries": 1.5}, "field 'retries'"),
        ({"parallel": 0}, "field 'parallel'"),
        ({"password_env": "NOT-A-NAME"}, "field 'password_env'"),
        ({"url": "ftp://host/x"}, "field 'url'"),
        ({"url": 3}, "field 'url': must be string, got integer 3"),
    ],
)
def test_from_table_names_file_and_field(table, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        RemoteSettings.from_table(table, "assets/Buildfile.toml")
    assert str(info.value).startswith("assets/Buildfile.toml: [remote]")


def test_layering(user_config: Path) -> None:
    user_config.write_text('[remote]\nread_only = true\nusername = "me"\nparallel = 16\n')
    project = {"url": "http://cache.studio:8080/buildsys", "parallel": 4, "zstd": True}
    settings = load_settings(project, None)
    assert settings.url == "http://cache.studio:8080/buildsys"
    assert (settings.read_only, settings.username, settings.parallel, settings.zstd) == (True, "me", 16, True)
    assert settings.timeout_s == 5.0 and settings.retries == 2  # defaults fill the rest
    assert settings.where("url") == "Buildfile.toml [remote]"
    assert settings.where("parallel") == f"{user_config} [remote]"
    flagged = load_settings(project, "file:///mnt/cache")
    assert flagged.url == "file:///mnt/cache" and flagged.where("url") == "--remote"
    assert load_settings(project, "").enabled is False  # --remote '' turns it off


def test_merge_keeps_unset_fields() -> None:
    base = RemoteSettings(url="s3://b/p", parallel=3)
    merged = base.merge(RemoteSettings(parallel=9))
    assert (merged.url, merged.parallel, merged.zstd) == ("s3://b/p", 9, None)
    assert merged.resolved().zstd is False


def test_user_config_tables(user_config: Path) -> None:
    pub = "A" * 43 + "="
    user_config.write_text(f'[signing]\nkey = "alice-1"\n[trust]\nkeys = {{ ci-2025 = "{pub}" }}\n[build]\njobs = 4\n')
    config = load_user_config()
    assert config.signing_key == "alice-1" and config.trusted == {"ci-2025": pub}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[remote\n", "invalid TOML"),
        ('[trust]\nkeys = { ci = "short" }\n', "'keys.ci': not a base64 Ed25519 public key"),
        ('[signing]\nkey = "has space"\n', "\\[signing\\] field 'key'"),
        ('[signing]\nname = "x"\n', "field 'name': unknown field"),
        ('[remote]\ntimeout = 3\n', "field 'timeout': unknown field \\(did you mean 'timeout_s'"),
        ("[remote]\nurl = " + "[" * 500 + "]" * 500 + "\n", "nested too deeply"),
    ],
)
def test_user_config_errors_name_file_and_field(user_config: Path, text: str, message: str) -> None:
    user_config.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_user_config()
    assert str(user_config) in str(info.value)


def test_missing_explicit_config_is_an_error(user_config: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_user_config()


def test_missing_default_config_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDSYS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config = load_user_config()
    assert config.path is None and config.trusted == {} and config.remote == RemoteSettings()


def test_password_env_must_be_set(user_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_config.write_text('[remote]\nusername = "ci"\npassword_env = "BUILDSYS_TEST_PW"\n')
    monkeypatch.delenv("BUILDSYS_TEST_PW", raising=False)
    settings = load_settings(None, "http://127.0.0.1:1/cache")
    with pytest.raises(ConfigError, match=f"{user_config} \\[remote\\]: field 'password_env': environment variable BUILDSYS_TEST_PW"):
        open_remote(settings.url, settings)


@pytest.mark.parametrize(
    "url, message",
    [
        ("file://relative/dir", "file:///absolute/path"),
        ("gopher://x", "not a file://"),
        ("s3://", "not an s3://bucket/prefix"),
        ("http:///nohost", "not an http"),
    ],
)
def test_open_remote_refuses_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_remote(url, RemoteSettings(url=url, origins={"url": "Buildfile.toml [remote]"}))


def test_zstd_is_http_only() -> None:
    with pytest.raises(ConfigError, match="field 'zstd'"):
        open_remote("s3://bucket/p", RemoteSettings(zstd=True))


def test_cli_module_is_cheap_to_import() -> None:
    import subprocess
    import sys

    heavy = ("boto3", "botocore", "pycurl", "requests", "cryptography")
    code = f"import sys, buildsys.cli.remote, buildsys.remote; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"
