from pathlib import Path

import pytest

from synth2.params import Params, ParamsError, Section, load_params, parse_with_overrides, read_document
from tests.conftest import ROOT, run_stage, write_params


def test_repository_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.world.prepare.image_size == 32
    assert 0 < params.world.prepare.holdout_fraction < 1


def test_params_yaml_is_the_only_source_of_values():
    """No key has a default in code: every field is required, so a value can live only in params.yaml."""

    def defaults(model) -> list[str]:
        found = []
        for name, info in model.model_fields.items():
            if not info.is_required():
                found.append(f"{model.__name__}.{name}")
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, Section):
                found += defaults(annotation)
        return found

    assert defaults(Params) == []


def test_a_missing_key_is_named(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("  n_clusters: 32\n", ""))
    with pytest.raises(ParamsError, match="missing key 'balance.n_clusters'; add it"):
        load_params(path)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"world": {"prepare": {"pool_sise": 10}}}, "unknown key 'world.prepare.pool_sise'"),
        ({"world": {"prepare": {"pool_size": "many"}}}, "'world.prepare.pool_size': 'many'"),
        (
            {"world": {"prepare": {"holdout_fraction": 0.9}}},
            "'world.prepare.holdout_fraction': 0.9 (Input should be less than or equal to 0.5)",
        ),
        ({"world": {"caption_lm": {"n_embd": 30, "n_head": 4}}}, "'world.caption_lm': "),
        ({"coco": {"prepare": {"val_fraction": 0.6, "test_fraction": 0.5}}}, "val_fraction + test_fraction"),
        ({"captions": {"prompt_template": "no slot"}}, "must contain '{concepts}'"),
        ({"pixel_space": {"variants": {"synth_pixels": "balanced"}}}, "'pixel_space.variants.synth_pixels.[key]'"),
        ({"pixel_space": {"variants": {"synth_pixel": "unbalanced"}}}, "'pixel_space.variants.synth_pixel'"),
        ({"pixel_space": {"decoder": {"channels": [32]}}}, "'pixel_space.decoder.channels': [32]"),
        (
            {"pixel_space": {"variants": {"synth_pixel": "balanced"}}, "profile": "coco"},
            "pixel_space.variants: the pixel path",
        ),
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


def test_a_duplicated_key_is_refused_naming_both_lines_at_any_depth(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nbalance:\n  target_size: 5\n  n_clusters: 2\n  target_size: 7\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == (f"{path}: duplicate key 'target_size' at line 5 (first at line 3); keep one of the two")


def test_an_override_mistake_names_the_override_and_a_file_mistake_the_file():
    document = read_document(ROOT / "params.yaml")
    assert parse_with_overrides(document, {"balance.target_size": 9}).balance.target_size == 9
    with pytest.raises(ParamsError) as bad_value:
        parse_with_overrides(document, {"seed": 1, "balance.target_size": -3})
    assert str(bad_value.value) == (
        "-S balance.target_size=-3: invalid value for 'balance.target_size': -3 (Input should be greater than 0)"
    )
    with pytest.raises(ParamsError, match=r"^--sweep 'balance.target_sise': params.yaml has no such key"):
        parse_with_overrides(document, {"balance.target_sise": 9}, origin="--sweep")
    broken = document | {"seed": -1}  # the file's own mistake stays the file's, whatever the overrides
    with pytest.raises(ParamsError, match=r"^params.yaml: invalid value for 'seed': -1"):
        parse_with_overrides(broken, {"balance.target_size": 9})


def test_top_level_must_be_mapping(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(path)


def test_stage_exits_before_work_with_one_line(tmp_path: Path):
    write_params(tmp_path, {"world": {"prepare": {"image_size": 7}}})
    result = run_stage("prepare", tmp_path, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: stage 'prepare': ")
    assert "'world.prepare.image_size': 7" in lines[-1] and "greater than or equal to 24" in lines[-1]
    assert not (tmp_path / "data").exists()
