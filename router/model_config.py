"""What a model directory says about the model: type, pooling, Dense layers, limits, prompts.

Read once by the launcher, which hands the result to the router and backends
in their config protos. Only JSON files are read here: no framework imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from embedserve.router.rerank_template import TEMPLATES
from embedserve.router.st_modules import DenseLayer, Pooling, pooling_of, read_json, read_pipeline
from embedserve.router.st_modules import ModelConfigError as ModelConfigError  # raised by both; importers catch it here

logger = logging.getLogger("launcher")

ModelType = Literal["embedding", "classifier", "reranker"]

# CLI spelling (TEI's kebab-case) -> the name /info prints.
POOLING_FLAG_VALUES: dict[str, Pooling] = {"cls": "cls", "mean": "mean", "last-token": "last_token", "splade": "splade"}

# Legacy sentence-transformers config names, newest first (TEI core/src/download.rs).
ST_CONFIG_NAMES = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)

# Position ids start after the padding id for these (fairseq heritage).
POSITION_OFFSET_MODEL_TYPES = ("xlm-roberta", "camembert", "roberta")
# Model types whose weights run float32 unless --dtype says otherwise, on a GPU too:
# Gemma3's activations overflow float16 (TEI router/src/lib.rs defaults gemma3_text
# to float32 alike). bfloat16, its training dtype, stays available on request.
FLOAT32_MODEL_TYPES = ("gemma3_text",)
# model2vec's default max_length; its config may say another, or null (no limit).
STATIC_DEFAULT_MAX_LENGTH = 512
# model2vec's max_length null: no limit of its own, so --max-batch-tokens caps it.
STATIC_UNLIMITED_LENGTH = 2**31 - 1


@dataclass(frozen=True)
class ModelSpec:
    model_dir: Path
    model_type: ModelType
    pooling: Pooling | None
    id2label: dict[str, str]
    label2id: dict[str, int]
    base_input_length: int
    position_offset: int
    prompts: dict[str, str] = field(default_factory=dict)
    architectures: tuple[str, ...] = ()
    # config.json's model_type (bert, qwen3, ...), and whether its code ships in
    # the directory (auto_map): such models need trust_remote_code.
    config_model_type: str = ""
    remote_code: bool = False
    # sentence-transformers Dense modules, applied in order after pooling.
    dense_layers: tuple[DenseLayer, ...] = ()
    # False: sentence-transformers leaves prompt tokens out of the pooling, which we do not.
    include_prompt: bool = True
    # JinaBERT's checkpoints say model type "bert" (with ALiBi positions), an architecture BERT is not.
    jina_bert: bool = False
    # --reranker-template: a ...ForCausalLM checkpoint served as a reranker (router/rerank_template.py).
    reranker_template: str = ""
    # A model2vec static embedding model: an embedding matrix, no transformer (backends/static.py).
    static_embedding: bool = False
    # bge-m3: FlagEmbedding's lexical and multi-vector heads sit beside the weights
    # (M3_HEAD_FILES); the torch engine runs them (backends/bgem3.py).
    bge_m3: bool = False

    @property
    def family(self) -> str:
        """The architecture the engines run: config.json's model type, "jina_bert" for JinaBERT."""
        return "jina_bert" if self.jina_bert else self.config_model_type

    def weights_dtype(self, requested: str | None) -> str:
        """The dtype the backends load: --dtype when given, else this model's own
        default; "" leaves the choice to the engine (float32 on CPU, float16 on GPU)."""
        if self.config_model_type in FLOAT32_MODEL_TYPES:
            if requested == "float16":
                raise ModelConfigError(f"{self.config_model_type} models overflow float16; "
                                       "use --dtype float32 (the default) or bfloat16")
            return requested or "float32"
        return requested or ""


# bge-m3's head files, as FlagEmbedding saves them (the backend loads them: backends/bgem3.py).
M3_HEAD_FILES = ("sparse_linear.pt", "colbert_linear.pt")


def load_model_spec(
    model_dir: Path, pooling_flag: str | None = None, dense_path: str | None = None,
    reranker_template: str | None = None,
) -> ModelSpec:
    """`dense_path`: --dense-path, the Dense module to apply (router/st_modules.py);
    `reranker_template`: --reranker-template, which makes a causal LM a reranker."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelConfigError(f"{model_dir} has no config.json")
    if not (model_dir / "tokenizer.json").is_file():
        raise ModelConfigError(f"{model_dir} has no tokenizer.json (a fast tokenizer is required)")
    config = read_json(config_path)
    if config.get("model_type") == "model2vec":
        return _static_model_spec(model_dir, config, requested_pooling=pooling_flag, dense_path=dense_path)
    architectures = tuple(str(a) for a in config.get("architectures") or ())
    requested = POOLING_FLAG_VALUES.get(pooling_flag) if pooling_flag else None
    if pooling_flag and requested is None:
        raise ModelConfigError(f"pooling {pooling_flag!r} is not one of {', '.join(POOLING_FLAG_VALUES)}")

    model_type: ModelType = "embedding"
    pooling: Pooling | None = None
    id2label: dict[str, str] = {}
    label2id: dict[str, int] = {}
    dense_layers: tuple[DenseLayer, ...] = ()
    include_prompt = True
    if reranker_template:
        # Never guessed from the checkpoint: Qwen3-Embedding and Qwen3-Reranker are
        # both Qwen3ForCausalLM; only the user knows which one this is.
        template = TEMPLATES.get(reranker_template)
        if template is None:
            raise ModelConfigError(f"unknown reranker template {reranker_template!r} "
                                   f"(available: {', '.join(sorted(TEMPLATES))})")
        if not any(a.endswith("ForCausalLM") for a in architectures):
            raise ModelConfigError(f"--reranker-template {reranker_template} needs a ...ForCausalLM checkpoint, "
                                   f"not {', '.join(architectures) or 'no architecture'}")
        if requested is not None:
            raise ModelConfigError("--pooling does not apply to a causal-LM reranker")
        # One score per pair, as a one-label classifier: TEI's reranker type.
        model_type = "reranker"
        id2label = {"0": template.yes}
        label2id = {template.yes: 0}
    elif requested == "splade":
        if not any(a.endswith("MaskedLM") for a in architectures):
            raise ModelConfigError("splade pooling needs a ...ForMaskedLM architecture")
        pooling = "splade"
    elif any(a.endswith("Classification") for a in architectures):
        id2label = {str(k): str(v) for k, v in (config.get("id2label") or {}).items()}
        label2id = {str(k): int(v) for k, v in (config.get("label2id") or {}).items()}
        if not id2label:
            raise ModelConfigError("a classifier's config.json needs id2label")
        model_type = "reranker" if len(id2label) == 1 else "classifier"
    else:
        pipeline = read_pipeline(model_dir, dense_path)
        dense_layers = pipeline.dense_layers
        pooling_config = _pooling_config(pipeline.pooling_dir)
        include_prompt = bool(pooling_config.get("include_prompt", True)) if pooling_config else True
        pooling = requested or _pooling_from_config(pooling_config, pipeline.pooling_dir,
                                                    str(config.get("model_type", "")), architectures)
        width = (pooling_config or {}).get("word_embedding_dimension")
        if dense_layers and isinstance(width, int) and dense_layers[0].in_features != width:
            raise ModelConfigError(f"Dense module {dense_layers[0].path.name} takes {dense_layers[0].in_features} "
                                   f"features but the pooled embedding has {width}")
    if dense_path is not None and (model_type != "embedding" or pooling == "splade"):
        logger.warning("--dense-path %s is ignored: Dense modules apply to pooled embeddings only", dense_path)

    position_offset = 0
    if config.get("model_type") in POSITION_OFFSET_MODEL_TYPES:
        position_offset = int(config.get("pad_token_id") or 0) + 1
    base_input_length = _max_seq_length(model_dir)
    if base_input_length is None:
        max_positions = config.get("max_position_embeddings") or config.get("max_trained_positions")
        if not max_positions:
            raise ModelConfigError("config.json has no max_position_embeddings")
        base_input_length = int(max_positions) - position_offset

    prompts: dict[str, str] = {}
    st_config = model_dir / "config_sentence_transformers.json"
    if st_config.is_file():
        prompts = {str(k): str(v) for k, v in (read_json(st_config).get("prompts") or {}).items()}

    return ModelSpec(
        model_dir=model_dir,
        model_type=model_type,
        pooling=pooling,
        id2label=id2label,
        label2id=label2id,
        base_input_length=base_input_length,
        position_offset=position_offset,
        prompts=prompts,
        architectures=architectures,
        config_model_type=str(config.get("model_type", "")),
        jina_bert=_is_jina_bert(config),
        remote_code=bool(config.get("auto_map")),
        dense_layers=dense_layers,
        include_prompt=include_prompt,
        reranker_template=reranker_template or "",
        bge_m3=model_type == "embedding" and all((model_dir / name).is_file() for name in M3_HEAD_FILES),
    )


def _static_model_spec(model_dir: Path, config: dict[str, Any], requested_pooling: str | None,
                       dense_path: str | None) -> ModelSpec:
    """model2vec: tokens -> rows of a matrix -> their mean. Its config.json's max_length
    is the token limit (model2vec's default 512 when absent; null: none)."""
    if not (model_dir / "model.safetensors").is_file():
        raise ModelConfigError(f"{model_dir} is a model2vec model without model.safetensors")
    if requested_pooling not in (None, "mean"):
        raise ModelConfigError(f"a model2vec model averages its token vectors; --pooling {requested_pooling} does not apply")
    if dense_path is not None:
        raise ModelConfigError("--dense-path does not apply to a model2vec model")
    max_length = config.get("max_length", STATIC_DEFAULT_MAX_LENGTH)
    if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
        raise ModelConfigError(f"config.json's max_length must be a positive integer or null, not {max_length!r}")
    return ModelSpec(
        model_dir=model_dir, model_type="embedding", pooling="mean", id2label={}, label2id={},
        base_input_length=STATIC_UNLIMITED_LENGTH if max_length is None else max_length, position_offset=0,
        architectures=tuple(str(a) for a in config.get("architectures") or ()), config_model_type="model2vec",
        static_embedding=True,
    )


def _is_jina_bert(config: dict[str, Any]) -> bool:
    # jina-bert-v2-qk-post-norm (jina-embeddings-v2-base-code) normalizes queries and
    # keys too, which the engines do not implement: it stays "bert" with its own code.
    shipped = " ".join(str(v) for v in (config.get("auto_map") or {}).values())
    return (config.get("model_type") == "bert" and config.get("position_embedding_type") == "alibi"
            and "qk-post-norm" not in shipped)


def _pooling_config(pooling_dir: Path) -> dict[str, Any] | None:
    path = pooling_dir / "config.json"
    return read_json(path) if path.is_file() else None


def _pooling_from_config(config: dict[str, Any] | None, pooling_dir: Path, model_type: str,
                         architectures: tuple[str, ...] = ()) -> Pooling:
    if config is None:
        if "bert" in model_type:
            return "cls"
        hint = ""
        if any(a.endswith("ForCausalLM") for a in architectures):
            hint = f"; a causal-LM reranker (Qwen3-Reranker) needs --reranker-template ({', '.join(sorted(TEMPLATES))})"
        raise ModelConfigError(f"no {pooling_dir.name}/config.json and no --pooling given{hint}")
    return pooling_of(config, pooling_dir / "config.json")


def _max_seq_length(model_dir: Path) -> int | None:
    for name in ST_CONFIG_NAMES:
        path = model_dir / name
        if path.is_file():
            value = read_json(path).get("max_seq_length")
            if value:
                return int(value)
    return None
