from pathlib import Path

import pytest

from synth2.params import ParamsError, load_params
from tests.conftest import ROOT, run_stage, write_params


def test_repository_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.world.image_size == 32
    assert 0 < params.world.holdout_fraction < 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"world": {"pool_sise": 10}}, "unknown key 'world.pool_sise'"),
        ({"world": {"pool_size": "many"}}, "'world.pool_size': 'many'"),
        (
            {"world": {"holdout_fraction": 0.9}},
            "'world.holdout_fraction': 0.9 (Input should be less than or equal to 0.5)",
        ),
        ({"caption_lm": {"n_embd": 30, "n_head": 4}}, "'caption_lm': "),
        ({"captions": {"prompt_template": "no slot"}}, "must contain '{concepts}'"),
    ],
)
def test_bad_value_names_key_value_and_rule(tmp_path: Path, overrides: dict, expected: str):
    path = write_params(tmp_path, overrides)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path):
    with pytest.raises(ParamsError, match="params.yaml not found"):
        load_params(tmp_path / "params.yaml")


def test_malformed_yaml_names_line(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nworld:\n  pool_size: [1, 2\n")
    with pytest.raises(ParamsError, match=r"not valid YAML at line \d+"):
        load_params(path)


def test_top_level_must_be_mapping(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(path)


def test_stage_exits_before_work_with_one_line(tmp_path: Path):
    write_params(tmp_path, {"world": {"image_size": 7}})
    result = run_stage("prepare", tmp_path, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: stage 'prepare': ")
    assert "'world.image_size': 7" in lines[-1] and "greater than or equal to 24" in lines[-1]
    assert not (tmp_path / "data").exists()
