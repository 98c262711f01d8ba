"""modules.json and the Pooling/Dense configs, as the launcher reads them (JSON only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from embedserve.router.model_config import ModelConfigError, load_model_spec
from embedserve.router.st_modules import DenseLayer, pooling_of

TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
# The 5.x class paths sentence-transformers now writes.
NEW_DENSE_TYPE = "sentence_transformers.base.modules.dense.Dense"
NEW_NORMALIZE_TYPE = "sentence_transformers.sentence_transformer.modules.normalize.Normalize"


def _pipeline(model_dir: Path, target: Path, pooling: dict[str, Any], modules: list[dict[str, Any]] | None = None,
              dense: dict[str, dict[str, Any]] | None = None) -> Path:
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("*.safetensors", "modules.json"))
    (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    for folder, config in (dense or {}).items():
        (target / folder).mkdir()
        (target / folder / "config.json").write_text(json.dumps(config))
        (target / folder / "model.safetensors").write_bytes(b"")  # only its presence is read here
    if modules is not None:
        (target / "modules.json").write_text(json.dumps(modules))
    return target


def _dense(path: str, index: int) -> dict[str, Any]:
    return {"idx": index, "name": str(index), "path": path, "type": NEW_DENSE_TYPE}


DENSE_384_256 = {"in_features": 384, "out_features": 256, "bias": True,
                 "activation_function": "torch.nn.modules.activation.Tanh"}
DENSE_256_128 = {"in_features": 256, "out_features": 128, "bias": False,
                 "activation_function": "torch.nn.modules.linear.Identity",
                 "module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"}


def test_classic_and_new_pooling_formats_give_the_same_spec(model_dir: Path, tmp_path: Path) -> None:
    modules = [TRANSFORMER, POOLING, _dense("2_Dense", 2), _dense("3_Dense", 3),
               {"idx": 4, "name": "4", "path": "4_Normalize", "type": NEW_NORMALIZE_TYPE}]
    dense = {"2_Dense": DENSE_384_256, "3_Dense": DENSE_256_128}
    classic = _pipeline(model_dir, tmp_path / "classic", {
        "word_embedding_dimension": 384, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True,
    }, modules, dense)
    new = _pipeline(model_dir, tmp_path / "new",
                    {"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": True}, modules, dense)
    specs = [load_model_spec(classic), load_model_spec(new)]
    assert [s.pooling for s in specs] == ["mean", "mean"]
    assert [[(d.path.name, d.in_features, d.out_features, d.bias, d.activation) for d in s.dense_layers]
            for s in specs] == [[("2_Dense", 384, 256, True, "tanh"), ("3_Dense", 256, 128, False, "identity")]] * 2
    assert specs[0].include_prompt is specs[1].include_prompt is True


@pytest.mark.parametrize(("config", "pooling"), [
    ({"pooling_mode": "cls"}, "cls"),
    ({"pooling_mode": "lasttoken"}, "last_token"),
    ({"pooling_mode": ["mean"]}, "mean"),
    ({"pooling_mode_cls_token": True}, "cls"),
    ({"pooling_mode_lasttoken": True}, "last_token"),
    # sentence-transformers converts the booleans in its own order; TEI (and we) prefer CLS.
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "cls"),
])
def test_pooling_modes(config: dict[str, Any], pooling: str) -> None:
    assert pooling_of(config, Path("1_Pooling/config.json")) == pooling


@pytest.mark.parametrize("config", [
    {"pooling_mode": "max"}, {"pooling_mode": "weightedmean"}, {"pooling_mode": "mean_sqrt_len_tokens"},
    {"pooling_mode": ["cls", "mean"]}, {"pooling_mode_max_tokens": True}, {},
])
def test_pooling_modes_we_do_not_run_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ModelConfigError, match="Pooling config .* is not supported"):
        pooling_of(config, Path("1_Pooling/config.json"))


def test_include_prompt_false_is_reported(model_dir: Path, tmp_path: Path) -> None:
    spec = load_model_spec(_pipeline(model_dir, tmp_path / "m", {"pooling_mode": "cls", "include_prompt": False}))
    assert (spec.pooling, spec.include_prompt, spec.dense_layers) == ("cls", False, ())


def test_bundled_pipeline_has_no_dense(model_dir: Path) -> None:
    spec = load_model_spec(model_dir)  # Transformer, Pooling, Normalize
    assert (spec.pooling, spec.dense_layers) == ("mean", ())


@pytest.mark.parametrize(("change", "message"), [
    ({"activation_function": "torch.nn.modules.activation.GELU"}, "activation torch.nn.modules.activation.GELU"),
    ({"activation_function": "my_package.Swish"}, "activation my_package.Swish"),
    ({"module_input_name": "token_embeddings"}, "only the sentence embedding"),
    ({"in_features": "many"}, "integer in_features"),
])
def test_dense_configs_we_cannot_apply(model_dir: Path, tmp_path: Path, change: dict[str, Any], message: str) -> None:
    target = _pipeline(model_dir, tmp_path / "m", {"pooling_mode": "mean"}, [TRANSFORMER, POOLING, _dense("2_Dense", 2)],
                       {"2_Dense": {**DENSE_384_256, **change}})
    with pytest.raises(ModelConfigError, match=message):
        load_model_spec(target)


def test_dense_without_activation_is_tanh(model_dir: Path, tmp_path: Path) -> None:
    config = {k: v for k, v in DENSE_384_256.items() if k != "activation_function"}
    target = _pipeline(model_dir, tmp_path / "m", {"pooling_mode": "mean"}, [TRANSFORMER, POOLING, _dense("2_Dense", 2)],
                       {"2_Dense": config})
    [layer] = load_model_spec(target).dense_layers
    assert layer == DenseLayer(target / "2_Dense", 384, 256, True, "tanh")


@pytest.mark.parametrize(("modules", "message"), [
    ([TRANSFORMER, POOLING, {"idx": 2, "name": "2", "path": "2_LSTM", "type": "sentence_transformers.models.LSTM"}],
     "module 2 .*LSTM.* is not supported"),
    ([TRANSFORMER, POOLING, {"idx": 2, "name": "2", "path": "", "type": "custom_code.Projection"}],
     "custom_code.Projection"),
    ([TRANSFORMER, _dense("2_Dense", 1), POOLING], "Pooling module after"),
    ([TRANSFORMER, _dense("2_Dense", 1)], "no Pooling module"),
    ([TRANSFORMER, POOLING, _dense("../elsewhere", 2)], "outside the model directory"),
    ([TRANSFORMER, POOLING, _dense("2_Dense", 2), _dense("2_Dense", 3)], "takes 384 features but 2_Dense gives 256"),
    ([TRANSFORMER, POOLING, _dense("9_Dense", 2)], "9_Dense has no config.json"),
    ([TRANSFORMER, POOLING, {"idx": 2, "name": "2", "path": "2_Normalize", "type": NEW_NORMALIZE_TYPE},
      _dense("2_Dense", 3)], "normalizes before a Dense module"),
])
def test_pipelines_we_cannot_serve(model_dir: Path, tmp_path: Path, modules: list[dict[str, Any]], message: str) -> None:
    target = _pipeline(model_dir, tmp_path / "m", {"pooling_mode": "mean"}, modules, {"2_Dense": DENSE_384_256})
    with pytest.raises(ModelConfigError, match=message):
        load_model_spec(target)


def test_pooling_override_keeps_the_dense_layers(model_dir: Path, tmp_path: Path) -> None:
    target = _pipeline(model_dir, tmp_path / "m", {"pooling_mode": "mean"}, [TRANSFORMER, POOLING, _dense("2_Dense", 2)],
                       {"2_Dense": DENSE_384_256})
    spec = load_model_spec(target, "cls")
    assert (spec.pooling, len(spec.dense_layers)) == ("cls", 1)


# ---------------------------------------------------------------- --dense-path (TEI's choice among 2_Dense_<dims>)

DENSE_384_64 = {**DENSE_384_256, "out_features": 64}
STELLA_LIKE = {"2_Dense_256": DENSE_384_256, "2_Dense_64": DENSE_384_64}


def _stella_like(model_dir: Path, target: Path, modules: list[dict[str, Any]] | None = None) -> Path:
    """One Dense module in modules.json (2_Dense_256) and another one beside it (2_Dense_64)."""
    return _pipeline(model_dir, target, {"word_embedding_dimension": 384, "pooling_mode": "mean"},
                     [TRANSFORMER, POOLING, _dense("2_Dense_256", 2)] if modules is None else modules, STELLA_LIKE)


def _widths(spec: Any) -> list[tuple[str, int]]:
    return [(layer.path.name, layer.out_features) for layer in spec.dense_layers]


def test_dense_path_replaces_the_one_dense_module(model_dir: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    target = _stella_like(model_dir, tmp_path / "m")
    assert _widths(load_model_spec(target)) == [("2_Dense_256", 256)]
    with caplog.at_level("INFO"):
        assert _widths(load_model_spec(target, None, "2_Dense_64")) == [("2_Dense_64", 64)]
    assert "modules.json names Dense module 2_Dense_256; --dense-path 2_Dense_64 is used instead" in caplog.text
    # TEI's spelling with a trailing slash, and the module modules.json names itself.
    assert _widths(load_model_spec(target, None, "2_Dense_64/")) == [("2_Dense_64", 64)]
    assert _widths(load_model_spec(target, None, "2_Dense_256")) == [("2_Dense_256", 256)]


def test_dense_path_without_modules_json_is_the_dense_module(model_dir: Path, tmp_path: Path) -> None:
    target = _stella_like(model_dir, tmp_path / "m")
    (target / "modules.json").unlink()
    assert _widths(load_model_spec(target)) == []
    assert _widths(load_model_spec(target, None, "2_Dense_64")) == [("2_Dense_64", 64)]


@pytest.mark.parametrize(("modules", "why"), [
    ([TRANSFORMER, POOLING, _dense("2_Dense_256", 2), _dense("3_Dense", 3)], "2 Dense modules, applied in order"),
    ([TRANSFORMER, POOLING], "no Dense module"),
])
def test_dense_path_is_ignored_unless_there_is_one_dense_module(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, modules: list[dict[str, Any]], why: str
) -> None:
    target = _stella_like(model_dir, tmp_path / "m", modules)
    (target / "3_Dense").mkdir()
    (target / "3_Dense" / "config.json").write_text(json.dumps(DENSE_256_128))
    (target / "3_Dense" / "model.safetensors").write_bytes(b"")
    expected = _widths(load_model_spec(target))
    with caplog.at_level("WARNING"):
        assert _widths(load_model_spec(target, None, "2_Dense_64")) == expected
    assert f"--dense-path 2_Dense_64 is ignored: modules.json names {why}" in caplog.text


@pytest.mark.parametrize("dense_path", ["2_Dense_1024", "../2_Dense_64", "/etc", ".", "config.json"])
def test_dense_path_must_be_a_folder_of_the_model(model_dir: Path, tmp_path: Path, dense_path: str) -> None:
    target = _stella_like(model_dir, tmp_path / "m")
    with pytest.raises(ModelConfigError) as raised:
        load_model_spec(target, None, dense_path)
    assert str(raised.value) == (f"--dense-path {dense_path}: no such folder in the model directory "
                                 "(Dense folders there: 2_Dense_256, 2_Dense_64)")


def test_dense_path_must_take_the_pooled_width(model_dir: Path, tmp_path: Path) -> None:
    target = _stella_like(model_dir, tmp_path / "m")
    (target / "2_Dense_64" / "config.json").write_text(json.dumps({**DENSE_384_64, "in_features": 1024}))
    with pytest.raises(ModelConfigError, match="Dense module 2_Dense_64 takes 1024 features but the pooled "
                                               "embedding has 384"):
        load_model_spec(target, None, "2_Dense_64")
