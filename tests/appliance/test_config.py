from pathlib import Path

import pytest

from appliance import config
from appliance.cli import main
from tests.conftest import DATA, ROOT

BROKEN = {
    "bad_choice.toml": "key 'pipeline.mode' must be one of auto, ray, inprocess",
    "unknown_key.toml": "unknown key 'pipeline.modee'",
    "wrong_type.toml": "key 'ray.num_cpus' must be an integer, got 'four'",
    "unknown_section.toml": "unknown key 'detectors.wash.enabled'",
    "not_toml.toml": "not valid TOML",
}


def test_example_file_is_generated_from_the_spec():
    checked_in = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    hint = "regenerate: surveil config example > config.example.toml"
    assert checked_in == config.example_text(), hint


def test_example_parses_to_the_defaults():
    assert config.parse(config.example_text(), "x").values == config.defaults()


@pytest.mark.parametrize("name,expected", sorted(BROKEN.items()))
def test_broken_configs_exit_2_with_one_line_naming_file_and_key(name, expected, capsys):
    path = DATA / "config" / name
    assert main(["--config", str(path), "config", "check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err and expected in err


def test_missing_config_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "surveil init" in err


def test_env_var_is_used_when_no_flag(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[cluster]\ngap_seconds = 2\n')
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert main(["config", "check", "--json"]) == 0
    assert '"cluster.gap_seconds": 2.0' in capsys.readouterr().out


def test_data_dir_is_relative_to_the_config_file(tmp_path):
    path = tmp_path / "etc" / "s.toml"
    path.parent.mkdir()
    path.write_text('[data]\ndir = "../var"\n')
    assert config.load(path).data_dir == (tmp_path / "var").resolve()


def test_digest_changes_with_values():
    a = config.parse("", "a")
    b = config.parse("[cluster]\ngap_seconds = 1.5\n", "b")
    assert a.digest != b.digest and a.digest == config.parse("", "c").digest


def test_init_creates_config_and_store_and_is_idempotent(tmp_path: Path, capsys):
    target = tmp_path / "data"
    assert main(["init", str(target), "--json"]) == 0
    assert (target / "surveil.toml").read_text() == config.example_text()
    assert (target / "surveil.db").exists()
    (target / "surveil.toml").write_text('[cluster]\ngap_seconds = 9\n')
    assert main(["init", str(target)]) == 0
    assert "gap_seconds = 9" in (target / "surveil.toml").read_text()
