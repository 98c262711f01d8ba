"""--models-config parsing and the rules for giving several models (router/models_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedserve.launcher import build_parser
from embedserve.router.models_config import (
    ModelEntry,
    ModelsConfigError,
    load_models_config,
    models_from_flags,
    parse_models_config,
)


def test_a_file_gives_models_in_order_with_names_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("""
models:
  - model_id: BAAI/bge-small-en-v1.5
    name: embedder
    pooling: cls
    max_batch_tokens: 8192
    prompts: {query: "query: "}
    default_prompt_name: query
  - model_id: /models/reranker
""")
    first, second = load_models_config(path)
    assert (first.model_id, first.name) == ("BAAI/bge-small-en-v1.5", "embedder")
    assert (second.model_id, second.name) == ("/models/reranker", "/models/reranker")
    args = first.model_args(build_parser().parse_args(["--max-batch-tokens", "4096", "--dtype", "float32",
                                                        "--default-prompt", "cli: "]))
    assert (args.model_id, args.served_model_name, args.pooling) == ("BAAI/bge-small-en-v1.5", "embedder", "cls")
    assert args.max_batch_tokens == 8192 and args.dtype == "float32"  # the file wins; the CLI is the default
    assert (args.default_prompt, args.default_prompt_name) == (None, "query")
    assert args.extra_prompts == {"query": "query: "}
    cli = second.model_args(build_parser().parse_args(["--max-batch-tokens", "4096", "--default-prompt", "cli: "]))
    assert cli.max_batch_tokens == 4096 and cli.default_prompt == "cli: " and cli.extra_prompts == {}


@pytest.mark.parametrize(("document", "message"), [
    ({"models": [{"name": "x"}]}, "`model_id` is required"),
    ({"models": [{"model_id": "a", "port": 80}]}, "unknown key(s) port"),
    ({"models": [{"model_id": "a"}, {"model_id": "a"}]}, "two models are served as 'a'"),
    ({"models": [{"model_id": "a", "name": "n"}, {"model_id": "b", "name": "n"}]}, "two models are served as 'n'"),
    ({"models": []}, "non-empty list"),
    ({"model": []}, "one key, `models`"),
    ([1, 2], "one key, `models`"),
    ({"models": ["a"]}, "must be a mapping"),
    ({"models": [{"model_id": "a", "pooling": "max"}]}, "pooling must be one of"),
    ({"models": [{"model_id": "a", "max_batch_tokens": 0}]}, "must be positive"),
    ({"models": [{"model_id": "a", "max_batch_tokens": "big"}]}, "whole number"),
    ({"models": [{"model_id": "a", "max_batch_tokens": True}]}, "whole number"),
    ({"models": [{"model_id": "a", "trust_remote_code": "yes"}]}, "true or false"),
    ({"models": [{"model_id": "a", "name": "has space"}]}, "no spaces"),
    ({"models": [{"model_id": "a", "prompts": {"q": 1}}]}, "prompt names to prompt texts"),
    ({"models": [{"model_id": "a", "default_prompt": "x", "default_prompt_name": "q"}]}, "not both"),
])
def test_mistakes_are_one_clear_line(document: object, message: str) -> None:
    with pytest.raises(ModelsConfigError) as error:
        parse_models_config(document)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ModelsConfigError, match="cannot read"):
        load_models_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ModelsConfigError, match="not valid YAML"):
        load_models_config(bad)


def test_model_ids_from_flags() -> None:
    assert models_from_flags([], None, "default/model") == [ModelEntry(None, "default/model")]
    assert models_from_flags([], "mine", "default/model") == [ModelEntry(None, "mine")]
    assert models_from_flags(["a"], "mine", "d") == [ModelEntry("a", "mine")]
    assert [e.name for e in models_from_flags(["a", "b"], None, "d")] == ["a", "b"]
    with pytest.raises(ModelsConfigError, match="--served-model-name names a single model"):
        models_from_flags(["a", "b"], "mine", "d")
    with pytest.raises(ModelsConfigError, match="two models are served as 'a'"):
        models_from_flags(["a", "a"], None, "d")


def test_model_id_repeats_and_keeps_tei_meaning() -> None:
    parser = build_parser()
    one = parser.parse_args(["--model-id", "a"])
    assert (one.model_id, one.model_ids) == ("a", ["a"])
    several = parser.parse_args(["--model-id", "a", "--model-id", "b"])
    assert (several.model_id, several.model_ids) == ("a", ["a", "b"])
