"""Tiny randomly initialised models, saved like Hub checkpoints, with a real tokenizer.

They load in well under a second, so tests can start servers on them and compare
against transformers computing the same thing directly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["reranker", "classifier", "splade"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
CLASSIFIER_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def classifier_logits(model_dir: Path, first: str, second: str | None = None) -> Any:
    """transformers' logits for one text or one (text, text) pair: the reference a
    served classifier or reranker is compared with."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        encoded = tokenizer(first, second, return_tensors="pt", truncation=True, max_length=512)
        return model(**encoded).logits[0].numpy()


def build_tiny_model(kind: Kind, target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(seed)
    common = dict(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, type_vocab_size=2,
    )
    if kind == "splade":
        model = BertForMaskedLM(BertConfig(**common))
    else:
        labels = {0: "LABEL_0"} if kind == "reranker" else CLASSIFIER_LABELS
        config = BertConfig(**common, num_labels=len(labels), id2label=labels,
                            label2id={v: k for k, v in labels.items()})
        model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(target)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, target / name)
    return target


def add_prompts(model_dir: Path, prompts: dict[str, str]) -> None:
    (model_dir / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))


# Tiny configs of each supported architecture family; the tokenizer is the
# bundled BERT WordPiece one (vocabulary 30522) for all of them, which is all a
# parity test between two runtimes on the same ids needs.
# initializer_range 0.2 rather than 0.02: with the usual tiny weights attention is
# near uniform and layers barely move the states, so a parity test would pass
# runtimes that got attention or positions wrong.
_ENCODER = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=128, initializer_range=0.2)
_OFFSET_ENCODER = dict(_ENCODER, pad_token_id=1, max_position_embeddings=130)
_DECODER = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, max_position_embeddings=128, initializer_range=0.2)
FAMILIES: dict[str, tuple[str, str, dict[str, object], str]] = {
    # family: (config class, model class, config kwargs, pooling)
    "bert": ("BertConfig", "BertModel", _ENCODER, "mean"),
    "roberta": ("RobertaConfig", "RobertaModel", _OFFSET_ENCODER, "mean"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", _OFFSET_ENCODER, "cls"),
    "camembert": ("CamembertConfig", "CamembertModel", _OFFSET_ENCODER, "mean"),
    "distilbert": ("DistilBertConfig", "DistilBertModel",
                   dict(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128),
                   "mean"),
    "mpnet": ("MPNetConfig", "MPNetModel", _OFFSET_ENCODER, "mean"),
    "modernbert": ("ModernBertConfig", "ModernBertModel", dict(_ENCODER, pad_token_id=0), "mean"),
    "qwen2": ("Qwen2Config", "Qwen2Model", _DECODER, "last_token"),
    "qwen3": ("Qwen3Config", "Qwen3Model", dict(_DECODER, head_dim=16), "last_token"),
    # e5-mistral's and the Llama embedders' shape: causal attention, last-token pooling.
    "mistral": ("MistralConfig", "MistralModel", _DECODER, "last_token"),
    "llama": ("LlamaConfig", "LlamaModel", _DECODER, "last_token"),
    # embeddinggemma's shape: bidirectional attention, one sliding-window layer and one
    # global, mean pooling. transformers halves sliding_window when it reads a
    # bidirectional config (each load, and the engine and the reference load alike):
    # 16 here is a window of 5 tokens, shorter than most test texts.
    "gemma3": ("Gemma3TextConfig", "Gemma3TextModel", dict(
        _DECODER, head_dim=16, query_pre_attn_scalar=16, sliding_window=16, use_bidirectional_attention=True,
        layer_types=["sliding_attention", "full_attention"], rope_theta=1000.0, rope_local_base_freq=100.0), "mean"),
}


# Families served here as rerankers and classifiers (a ...ForSequenceClassification head).
# DeBERTa-v2 as the rerankers ship it (mxbai-rerank-*-v1): relative attention both ways
# (p2c, c2p) over log buckets, no absolute positions, no token types; 32 buckets so that
# texts of ~100 tokens reach the logarithmic ones.
CLASSIFIER_FAMILIES: dict[str, tuple[str, str, dict[str, object]]] = {
    "deberta-v2": ("DebertaV2Config", "DebertaV2ForSequenceClassification", dict(
        _ENCODER, relative_attention=True, position_buckets=32, max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
        type_vocab_size=0, pad_token_id=0, pooler_hidden_size=32, pooler_hidden_act="gelu")),
}
RERANKER_LABELS = {0: "LABEL_0"}


def build_family_classifier(family: str, target: Path, tokenizer_source: Path,
                            labels: dict[int, str] = RERANKER_LABELS, seed: int = 0) -> Path:
    """A tiny classifier of `family`; one label makes it a reranker."""
    import torch
    import transformers

    config_name, model_name, kwargs = CLASSIFIER_FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**kwargs, num_labels=len(labels), id2label=labels,
                                                label2id={v: k for k, v in labels.items()})
    config.architectures = [model_name]
    getattr(transformers, model_name)(config).eval().save_pretrained(target)
    return _finish_checkpoint(target, tokenizer_source, None)


def build_family_model(family: str, target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    config_name, model_name, kwargs, pooling = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**kwargs)
    config.architectures = [model_name]
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(target)
    return _finish_checkpoint(target, tokenizer_source, {
        "pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_lasttoken": pooling == "last_token",
    })


def build_gte_qwen2_model(target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    """gte-Qwen2's shape: a Qwen2 checkpoint that also ships its own modeling code
    (auto_map) and pools the last token. The shipped file fails on import, so a
    test passes only if the code beside the weights is never run."""
    build_family_model("qwen2", target, tokenizer_source, seed)
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_qwen.Qwen2Model"}
    (target / "config.json").write_text(json.dumps(config))
    (target / "modeling_qwen.py").write_text('raise RuntimeError("the shipped modeling code was run")\n')
    return target


REMOTE_CONFIG_CODE = '''
from transformers import PretrainedConfig


class TinyEncoderConfig(PretrainedConfig):
    model_type = "tiny-encoder"

    def __init__(self, vocab_size=30522, hidden_size=16, max_position_embeddings=128, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)
'''

REMOTE_MODEL_CODE = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_tiny import TinyEncoderConfig


class TinyEncoderModel(PreTrainedModel):
    """Embeddings, then each token mixed with the masked mean of its sequence."""

    config_class = TinyEncoderConfig

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.mix = torch.nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        states = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        context = (states * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        hidden = torch.tanh(self.mix(torch.cat([states, context.expand_as(states)], dim=-1)))
        return BaseModelOutput(last_hidden_state=hidden)
'''


def save_with_remote_code(target: Path, code: dict[str, str], save: Callable[[Any], None]) -> None:
    """Import `code` (file name -> source) as a package, let `save` save_pretrained a model
    built from it into `target`, then leave the sources beside the weights for auto_map."""
    import importlib
    import sys

    target.mkdir(parents=True)
    package_name = f"remote_pkg_{target.name.replace('-', '_')}"
    package = target / package_name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, source in code.items():
        (package / name).write_text(source)
    sys.path.insert(0, str(target))
    try:
        modules = {name.removesuffix(".py"): importlib.import_module(f"{package_name}.{name.removesuffix('.py')}")
                   for name in code}
        save(modules)
    finally:
        sys.path.remove(str(target))
        for name in [n for n in sys.modules if n.startswith(package_name)]:
            del sys.modules[name]
    shutil.rmtree(package)
    for name, source in code.items():
        (target / name).write_text(source)


def _finish_checkpoint(target: Path, tokenizer_source: Path, pooling: dict[str, bool] | None) -> Path:
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, target / name)
    if pooling is not None:
        (target / "1_Pooling").mkdir()
        (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return target


@dataclass(frozen=True)
class RemoteCode:
    """A reference architecture shipped beside the weights, as Hub checkpoints with
    auto_map ship theirs: `configuration_<name>.py` holds `config_class`, and
    `modeling_<name>.py` the classes `auto_classes` maps transformers' Auto names to."""

    name: str
    config_code: str
    model_code: str
    config_class: str
    auto_classes: dict[str, str]


def build_remote_checkpoint(code: RemoteCode, target: Path, tokenizer_source: Path, *, seed: int = 0,
                            config: dict[str, Any] | None = None, architecture: str | None = None,
                            pooling: dict[str, bool] | None = None) -> Path:
    """A tiny checkpoint of `architecture` (default: the AutoModel class) with random
    weights, saved by the reference code itself, with its auto_map and that code beside it."""
    import torch

    config_module, model_module = f"configuration_{code.name}", f"modeling_{code.name}"
    model_class = architecture or code.auto_classes["AutoModel"]

    def save(modules: dict[str, Any]) -> None:
        torch.manual_seed(seed)
        instance = getattr(modules[config_module], code.config_class)(**(config or {}))
        instance.architectures = [model_class]
        instance.auto_map = {"AutoConfig": f"{config_module}.{code.config_class}",
                             **{auto: f"{model_module}.{name}" for auto, name in code.auto_classes.items()}}
        getattr(modules[model_module], model_class)(instance).eval().save_pretrained(target)

    save_with_remote_code(target, {f"{config_module}.py": code.config_code, f"{model_module}.py": code.model_code},
                          save)
    return _finish_checkpoint(target, tokenizer_source, pooling)


TINY_REMOTE_CODE = RemoteCode("tiny", REMOTE_CONFIG_CODE, REMOTE_MODEL_CODE, "TinyEncoderConfig",
                              {"AutoModel": "TinyEncoderModel"})


def build_remote_code_model(target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    """A model whose architecture exists only in the model directory (auto_map)."""
    return build_remote_checkpoint(TINY_REMOTE_CODE, target, tokenizer_source, seed=seed,
                                   pooling={"pooling_mode_mean_tokens": True})


# A reference GTE ("new") written as remote code, the way transformers runs GTE
# checkpoints (auto_map). The Hub's own modeling file cannot be fetched here, so
# this one follows the published architecture and parameter names, written plainly
# (padded eager attention with an additive mask, cached cos/sin tables) and apart
# from the engine's implementation in backends/gte.py, which it checks.
GTE_CONFIG_CODE = '''
from transformers import PretrainedConfig


class NewConfig(PretrainedConfig):
    model_type = "new"

    def __init__(self, vocab_size=30528, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0,
                 max_position_embeddings=2048, type_vocab_size=1, initializer_range=0.02, layer_norm_type="layer_norm",
                 layer_norm_eps=1e-12, position_embedding_type="rope", rope_theta=10000.0, rope_scaling=None,
                 classifier_dropout=None, pack_qkv=True, unpad_inputs=False, use_memory_efficient_attention=False,
                 logn_attention_scale=False, logn_attention_clip1=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_type = layer_norm_type
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.classifier_dropout = classifier_dropout
        self.pack_qkv = pack_qkv
        self.unpad_inputs = unpad_inputs
        self.use_memory_efficient_attention = use_memory_efficient_attention
        self.logn_attention_scale = logn_attention_scale
        self.logn_attention_clip1 = logn_attention_clip1
        super().__init__(**kwargs)
'''

GTE_MODEL_CODE = '''
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .configuration_gte import NewConfig


def rotary_tables(config, length):
    dim = config.hidden_size // config.num_attention_heads
    scaling = config.rope_scaling or {}
    factor = scaling.get("factor", 1.0)
    base = config.rope_theta
    frequencies = [base ** (-2 * i / dim) for i in range(dim // 2)]
    if factor > 1:
        if scaling.get("mixed_b") is None:
            frequencies = [(base * factor) ** (-2 * i / dim) / factor ** (2 / dim) for i in range(dim // 2)]
        else:
            b = scaling["mixed_b"]
            a = math.log(factor) / (dim / 2) ** b
            frequencies = [f / math.exp(a * (i + 1) ** b) for i, f in enumerate(frequencies)]
    angles = torch.tensor([[p * f for f in frequencies] for p in range(length)], dtype=torch.float64)
    angles = torch.cat([angles, angles], dim=1)
    return angles.cos().float(), angles.sin().float()


class Norm(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.rms = config.layer_norm_type == "rms_norm"
        self.eps = config.layer_norm_eps
        self.weight = nn.Parameter(torch.ones(config.hidden_size))
        if not self.rms:
            self.bias = nn.Parameter(torch.zeros(config.hidden_size))

    def forward(self, x):
        if self.rms:
            return self.weight * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps))
        centered = x - x.mean(-1, keepdim=True)
        return self.weight * centered / torch.sqrt((centered * centered).mean(-1, keepdim=True) + self.eps) + self.bias


class NewEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        x = self.word_embeddings(input_ids)
        if self.config.type_vocab_size > 0:
            x = x + self.token_type_embeddings(token_type_ids)
        if self.config.position_embedding_type == "absolute":
            x = x + self.position_embeddings(torch.arange(input_ids.shape[1])[None, :])
        return self.LayerNorm(x)


class NewAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        h = config.hidden_size
        if config.pack_qkv:
            self.qkv_proj = nn.Linear(h, 3 * h)
        else:
            self.q_proj, self.k_proj, self.v_proj = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.o_proj = nn.Linear(h, h)

    def forward(self, x, bias, cos, sin, scale):
        b, n, h = x.shape
        heads = self.config.num_attention_heads
        d = h // heads
        if self.config.pack_qkv:
            packed = self.qkv_proj(x)
            q, k, v = packed[..., :h], packed[..., h:2 * h], packed[..., 2 * h:]
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = [t.view(b, n, heads, d).permute(0, 2, 1, 3) for t in (q, k, v)]  # b, heads, n, d
        if cos is not None:
            def rotate(t):
                return t * cos + torch.cat([-t[..., d // 2:], t[..., : d // 2]], dim=-1) * sin
            q, k = rotate(q), rotate(k)
        if scale is not None:
            q = q * scale
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        context = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(context.permute(0, 2, 1, 3).reshape(b, n, h))


class NewGatedMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.size = config.intermediate_size
        self.up_gate_proj = nn.Linear(config.hidden_size, 2 * self.size, bias=False)
        self.down_proj = nn.Linear(self.size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x):
        both = self.up_gate_proj(x)
        return self.down_proj(both[..., : self.size] * self.act(both[..., self.size:]))


class NewLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = NewAttention(config)
        self.mlp = NewGatedMLP(config)
        self.attn_ln = Norm(config)
        self.mlp_ln = Norm(config)

    def forward(self, x, bias, cos, sin, scale):
        x = self.attn_ln(x + self.attention(x, bias, cos, sin, scale))
        return self.mlp_ln(x + self.mlp(x))


class NewEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([NewLayer(config) for _ in range(config.num_hidden_layers)])


class NewPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, states):
        return torch.tanh(self.dense(states[:, 0]))


class NewPreTrainedModel(PreTrainedModel):
    config_class = NewConfig
    base_model_prefix = "new"

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.normal_(0.0, self.config.initializer_range)
        if isinstance(module, (nn.LayerNorm, Norm)):
            module.weight.data.normal_(1.0, 0.1)
            if getattr(module, "bias", None) is not None:
                module.bias.data.normal_(0.0, 0.1)


class NewModel(NewPreTrainedModel):
    def __init__(self, config, add_pooling_layer=False):
        super().__init__(config)
        self.embeddings = NewEmbeddings(config)
        self.encoder = NewEncoder(config)
        self.pooler = NewPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        n = input_ids.shape[1]
        x = self.embeddings(input_ids, token_type_ids)
        bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        cos = sin = None
        if self.config.position_embedding_type == "rope":
            scaling = self.config.rope_scaling or {}
            cos, sin = rotary_tables(self.config, max(n, int(self.config.max_position_embeddings * scaling.get("factor", 1.0))))
            cos, sin = cos[:n], sin[:n]
        scale = None
        if self.config.logn_attention_scale:
            scale = attention_mask.sum(1).float().log() / math.log(self.config.max_position_embeddings)
            if self.config.logn_attention_clip1:
                scale = scale.clamp(min=1)
            scale = scale[:, None, None, None]
        for layer in self.encoder.layer:
            x = layer(x, bias, cos, sin, scale)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled)


class NewForSequenceClassification(NewPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.new = NewModel(config, add_pooling_layer=True)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        pooled = self.new(input_ids, attention_mask, token_type_ids).pooler_output
        return SequenceClassifierOutput(logits=self.classifier(pooled))
'''

GTE_TINY_CONFIG: dict[str, object] = dict(
    vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
    max_position_embeddings=128, type_vocab_size=2, rope_theta=500.0, hidden_dropout_prob=0.0,
    # Large enough that attention is far from uniform and every part moves the output.
    initializer_range=0.2,
)


GTE_REMOTE_CODE = RemoteCode("gte", GTE_CONFIG_CODE, GTE_MODEL_CODE, "NewConfig", {
    "AutoModel": "NewModel", "AutoModelForSequenceClassification": "NewForSequenceClassification"})


def build_gte_model(target: Path, tokenizer_source: Path, seed: int = 0, classifier: bool = False,
                    **overrides: object) -> Path:
    """A tiny GTE ("new") checkpoint saved by the reference remote code, with its auto_map."""
    labels = {"id2label": {0: "LABEL_0"}, "label2id": {"LABEL_0": 0}} if classifier else {}
    return build_remote_checkpoint(
        GTE_REMOTE_CODE, target, tokenizer_source, seed=seed, config={**GTE_TINY_CONFIG, **overrides, **labels},
        architecture="NewForSequenceClassification" if classifier else "NewModel",
        pooling=None if classifier else {"pooling_mode_cls_token": True},
    )


# A reference NomicBERT ("nomic_bert") written as remote code, as transformers runs
# nomic-embed-text checkpoints (auto_map). Written here from the published
# architecture and parameter names, plainly (eager attention with an additive mask,
# rotary as explicit halves), apart from backends/nomic.py, which it checks.
NOMIC_CONFIG_CODE = '''
from transformers import PretrainedConfig


class NomicBertConfig(PretrainedConfig):
    model_type = "nomic_bert"
    # GPT-2's key names, read under BERT's too (the published config derives from GPT2Config).
    attribute_map = {"hidden_size": "n_embd", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}

    def __init__(self, vocab_size=30528, n_embd=768, n_head=12, n_layer=12, n_inner=None, n_positions=8192,
                 type_vocab_size=2, activation_function="swiglu", layer_norm_epsilon=1e-12, rotary_emb_base=10000.0,
                 rotary_emb_fraction=1.0, rotary_emb_interleaved=False, qkv_proj_bias=True, mlp_fc1_bias=True,
                 mlp_fc2_bias=True, prenorm=False, initializer_range=0.02, **kwargs):
        self.vocab_size = vocab_size
        self.n_embd = n_embd
        self.n_head = n_head
        self.n_layer = n_layer
        self.n_inner = n_inner
        self.n_positions = n_positions
        self.type_vocab_size = type_vocab_size
        self.activation_function = activation_function
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rotary_emb_base = rotary_emb_base
        self.rotary_emb_fraction = rotary_emb_fraction
        self.rotary_emb_interleaved = rotary_emb_interleaved
        self.qkv_proj_bias = qkv_proj_bias
        self.mlp_fc1_bias = mlp_fc1_bias
        self.mlp_fc2_bias = mlp_fc2_bias
        self.prenorm = prenorm
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
'''

NOMIC_MODEL_CODE = '''
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_nomic import NomicBertConfig


def rotate(x, position_count, base):
    half = x.shape[-1] // 2
    frequencies = torch.tensor([base ** (-2.0 * i / x.shape[-1]) for i in range(half)], dtype=torch.float64)
    angles = torch.arange(position_count, dtype=torch.float64)[:, None] * frequencies[None, :]
    cos, sin = angles.cos().float(), angles.sin().float()
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.Wqkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.qkv_proj_bias)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.qkv_proj_bias)

    def forward(self, x, bias):
        b, n, h = x.shape
        heads = self.config.n_head
        d = h // heads
        q, k, v = self.Wqkv(x).split(h, dim=-1)
        q, k, v = [t.reshape(b, n, heads, d).permute(0, 2, 1, 3) for t in (q, k, v)]
        q = rotate(q, n, self.config.rotary_emb_base)
        k = rotate(k, n, self.config.rotary_emb_base)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
        return self.out_proj((weights @ v).permute(0, 2, 1, 3).reshape(b, n, h))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.gated = config.activation_function == "swiglu"
        if self.gated:
            self.fc11 = nn.Linear(config.n_embd, inner, bias=config.mlp_fc1_bias)
            self.fc12 = nn.Linear(config.n_embd, inner, bias=config.mlp_fc1_bias)
        else:
            self.fc1 = nn.Linear(config.n_embd, inner, bias=config.mlp_fc1_bias)
        self.fc2 = nn.Linear(inner, config.n_embd, bias=config.mlp_fc2_bias)

    def forward(self, x):
        if self.gated:
            return self.fc2(self.fc11(x) * nn.functional.silu(self.fc12(x)))
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn = Attention(config)
        self.mlp = MLP(config)
        self.norm1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.norm2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, x, bias):
        x = self.norm1(x + self.attn(x, bias))
        return self.norm2(x + self.mlp(x))


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList([Block(config) for _ in range(config.n_layer)])


class Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.n_embd)


class NomicBertModel(PreTrainedModel):
    config_class = NomicBertConfig

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.emb_ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.encoder = Encoder(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.normal_(0.0, self.config.initializer_range)
        if isinstance(module, nn.LayerNorm):
            module.weight.data.normal_(1.0, 0.1)
            module.bias.data.normal_(0.0, 0.1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings.word_embeddings(input_ids)
        if self.config.type_vocab_size > 0:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.embeddings.token_type_embeddings(types)
        x = self.emb_ln(x)
        bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.encoder.layers:
            x = layer(x, bias)
        return BaseModelOutput(last_hidden_state=x)
'''

NOMIC_TINY_CONFIG: dict[str, object] = dict(
    vocab_size=30522, n_embd=32, n_head=2, n_layer=2, n_inner=48, n_positions=128, max_trained_positions=128,
    type_vocab_size=2,
    rotary_emb_base=1000.0, qkv_proj_bias=False, mlp_fc1_bias=False, mlp_fc2_bias=False, initializer_range=0.2,
)


NOMIC_REMOTE_CODE = RemoteCode("nomic", NOMIC_CONFIG_CODE, NOMIC_MODEL_CODE, "NomicBertConfig",
                               {"AutoModel": "NomicBertModel"})


def build_nomic_model(target: Path, tokenizer_source: Path, seed: int = 0, **overrides: object) -> Path:
    """A tiny NomicBERT checkpoint saved by the reference remote code, with its auto_map
    and mean pooling (nomic-embed-text's shape: no biases, SwiGLU, rotary)."""
    return build_remote_checkpoint(NOMIC_REMOTE_CODE, target, tokenizer_source, seed=seed,
                                   config={**NOMIC_TINY_CONFIG, **overrides}, pooling={"pooling_mode_mean_tokens": True})


# A reference JinaBERT (jina-embeddings-v2) written as remote code the way its
# checkpoints ship (model type "bert", auto_map), from the published architecture
# and parameter names: eager attention with the ALiBi bias built position by
# position, apart from backends/jina.py, which it checks.
JINA_CONFIG_CODE = '''
from transformers import PretrainedConfig


class JinaBertConfig(PretrainedConfig):
    model_type = "bert"

    def __init__(self, vocab_size=30528, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", type_vocab_size=2, layer_norm_eps=1e-12,
                 max_position_embeddings=8192, position_embedding_type="alibi", feed_forward_type="geglu",
                 initializer_range=0.02, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding_type = position_embedding_type
        self.feed_forward_type = feed_forward_type
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
'''

JINA_MODEL_CODE = '''
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_jina import JinaBertConfig


def slopes(heads):
    def geometric(n):
        ratio = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [ratio ** (i + 1) for i in range(n)]
    if math.log2(heads).is_integer():
        return geometric(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return geometric(closest) + geometric(2 * closest)[::2][: heads - closest]


def alibi(heads, n):
    table = torch.zeros(heads, n, n)
    for h, slope in enumerate(slopes(heads)):
        for i in range(n):
            for j in range(n):
                table[h, i, j] = -slope * abs(i - j)
    return table


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)


class AttentionOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.self = SelfAttention(config)
        self.output = AttentionOutput(config)

    def forward(self, x, bias):
        b, n, h = x.shape
        heads = self.config.num_attention_heads
        d = h // heads
        q, k, v = [p(x).reshape(b, n, heads, d).permute(0, 2, 1, 3)
                   for p in (self.self.query, self.self.key, self.self.value)]
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
        context = (weights @ v).permute(0, 2, 1, 3).reshape(b, n, h)
        return self.output.LayerNorm(self.output.dense(context) + x)


class GLUMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = nn.ReLU() if config.feed_forward_type == "reglu" else nn.GELU()

    def forward(self, x):
        gate, up = self.gated_layers(x).chunk(2, dim=-1)
        return self.layernorm(self.wo(self.act(gate) * up) + x)


class Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = Attention(config)
        self.mlp = GLUMLP(config)

    def forward(self, x, bias):
        return self.mlp(self.attention(x, bias))


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])


class Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class JinaBertModel(PreTrainedModel):
    config_class = JinaBertConfig

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.normal_(0.0, self.config.initializer_range)
        if isinstance(module, nn.LayerNorm):
            module.weight.data.normal_(1.0, 0.1)
            module.bias.data.normal_(0.0, 0.1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        e = self.embeddings
        x = e.LayerNorm(e.word_embeddings(input_ids) + e.token_type_embeddings(token_type_ids))
        n = input_ids.shape[1]
        bias = alibi(self.config.num_attention_heads, n)[None]
        bias = bias + (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return BaseModelOutput(last_hidden_state=x)
'''

JINA_TINY_CONFIG: dict[str, object] = dict(
    vocab_size=30522, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=48,
    max_position_embeddings=128, type_vocab_size=2, initializer_range=0.2,
)


JINA_REMOTE_CODE = RemoteCode("jina", JINA_CONFIG_CODE, JINA_MODEL_CODE, "JinaBertConfig",
                              {"AutoModel": "JinaBertModel"})


def build_jina_bert_model(target: Path, tokenizer_source: Path, seed: int = 0, **overrides: object) -> Path:
    """A tiny JinaBERT checkpoint saved by the reference remote code, with its auto_map
    and mean pooling. Three heads: ALiBi's slopes for a count that is not a power of two."""
    return build_remote_checkpoint(JINA_REMOTE_CODE, target, tokenizer_source, seed=seed,
                                   config={**JINA_TINY_CONFIG, **overrides}, pooling={"pooling_mode_mean_tokens": True})


# Dense modules after pooling: (out_features, torch.nn activation class name, bias).
DenseLayers = list[tuple[int, str, bool]]
# Two layers, so order matters, and both of Dense's usual activations (LaBSE: Tanh; stella: Identity).
DEFAULT_DENSE: DenseLayers = [(24, "Tanh", True), (20, "Identity", False)]


def build_st_dense_model(target: Path, tokenizer_source: Path, dense: DenseLayers = DEFAULT_DENSE,
                         seed: int = 0) -> Path:
    """A tiny BERT pipeline saved by the installed sentence-transformers:
    Transformer -> Pooling (mean) -> Dense... -> Normalize, in its own (5.x) file formats."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    base = build_family_model("bert", target.with_name(target.name + "-base"), tokenizer_source, seed)
    transformer = Transformer(str(base))
    width = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(width, pooling_mode="mean"), *_dense_modules(width, dense, seed), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(target))
    return target


def build_st_prompt_model(target: Path, tokenizer_source: Path, include_prompt: bool, seed: int = 0) -> Path:
    """A tiny BERT pipeline with a `query` prompt and mean pooling whose Pooling module
    sets `include_prompt`, saved by the installed sentence-transformers."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    base = build_family_model("bert", target.with_name(target.name + "-base"), tokenizer_source, seed)
    transformer = Transformer(str(base))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean", include_prompt=include_prompt)
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu",
                                prompts={"query": "query: a question to look up "})
    model.save(str(target))
    return target


def add_dense_modules(model_dir: Path, dense: DenseLayers = DEFAULT_DENSE, seed: int = 0) -> Path:
    """Turn a checkpoint with 1_Pooling into a sentence-transformers pipeline with Dense
    modules: modules.json plus each module saved by sentence-transformers itself. The
    Pooling config keeps the classic format (`pooling_mode_*_tokens` booleans)."""
    width = int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": width, **pooling}))
    entries = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    for index, module in enumerate(_dense_modules(width, dense, seed), start=2):
        folder = f"{index}_Dense"
        (model_dir / folder).mkdir()
        module.save(str(model_dir / folder))
        entries.append({"idx": index, "name": str(index), "path": folder, "type": "sentence_transformers.models.Dense"})
    (model_dir / "modules.json").write_text(json.dumps(entries))
    return model_dir


def _dense_modules(width: int, dense: DenseLayers, seed: int) -> list[Any]:
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    torch.manual_seed(seed + 1)
    modules = []
    for out_features, activation, bias in dense:
        layer = Dense(width, out_features, bias=bias, activation_function=getattr(torch.nn, activation)())
        # Larger than nn.Linear's default init, so the activation bends the output.
        torch.nn.init.normal_(layer.linear.weight, std=0.5)
        modules.append(layer)
        width = out_features
    return modules


def build_st_multi_dense_model(target: Path, tokenizer_source: Path, widths: tuple[int, int] = (64, 32),
                               seed: int = 0) -> Path:
    """A stella-like pipeline: modules.json applies `2_Dense_<widths[0]>`, and a second Dense
    module, `2_Dense_<widths[1]>`, lies beside it for --dense-path to pick (both Tanh, with bias)."""
    build_st_dense_model(target, tokenizer_source, [(widths[0], "Tanh", True)], seed)
    default = f"2_Dense_{widths[0]}"
    (target / "2_Dense").rename(target / default)
    modules = json.loads((target / "modules.json").read_text())
    for module in modules:
        if module["path"] == "2_Dense":
            module["path"] = default
    (target / "modules.json").write_text(json.dumps(modules))
    width = int(json.loads((target / "config.json").read_text())["hidden_size"])
    (alternative,) = _dense_modules(width, [(widths[1], "Tanh", True)], seed + 1)
    (target / f"2_Dense_{widths[1]}").mkdir()
    alternative.save(str(target / f"2_Dense_{widths[1]}"))
    return target


def with_dense_module(model_dir: Path, target: Path, folder: str) -> Path:
    """A copy of a one-Dense pipeline whose modules.json applies `folder` instead: what
    sentence-transformers computes for that choice."""
    shutil.copytree(model_dir, target)
    modules = json.loads((target / "modules.json").read_text())
    (dense,) = [m for m in modules if m["type"].endswith("Dense")]
    dense["path"] = folder
    (target / "modules.json").write_text(json.dumps(modules))
    return target


# Qwen3-Reranker's shape: a Qwen3ForCausalLM (untied LM head, as the 4B and 8B) and a
# byte-level BPE tokenizer trained here, offline, with Qwen's chat tokens and "yes"
# and "no" as tokens of their own; its small vocabulary keeps the model tiny.
CAUSAL_RERANKER_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_causal_reranker(target: Path, texts: list[str], seed: int = 0, max_positions: int = 512) -> Path:
    """`texts`: what the tests send, so the tokenizer learns merges for them."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["yes\nno\n"] * 200 + texts * 20 + [
        'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
        'Note that the answer can only be "yes" or "no".\n<Instruct>: <Query>: <Document>: assistant user system',
    ] * 20
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=CAUSAL_RERANKER_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_tokens(["<think>", "</think>"])  # Qwen3's: added, not special
    assert tokenizer.token_to_id("yes") is not None and tokenizer.token_to_id("no") is not None
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(target)

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, intermediate_size=64,
                         max_position_embeddings=max_positions, initializer_range=0.2, tie_word_embeddings=False)
    config.architectures = ["Qwen3ForCausalLM"]
    Qwen3ForCausalLM(config).eval().save_pretrained(target)
    return target


def build_model2vec_model(target: Path, tokenizer_source: Path, *, dim: int = 16, normalize: bool = False,
                          max_length: int | None = 512, vocabulary_quantization: int | None = None,
                          seed: int = 0) -> Path:
    """A model2vec folder as its save_pretrained writes one: config.json, a random
    `embeddings` matrix (one row per token of `tokenizer_source`'s tokenizer.json)
    in model.safetensors, the tokenizer.json. `vocabulary_quantization`: that many
    rows, with a token -> row `mapping` and per-token `weights`."""
    import numpy as np
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    target.mkdir(parents=True, exist_ok=True)
    vocab_size = len(Tokenizer.from_file(str(tokenizer_source / "tokenizer.json")).get_vocab())
    rng = np.random.default_rng(seed)
    rows = vocab_size if vocabulary_quantization is None else vocabulary_quantization
    tensors = {"embeddings": rng.standard_normal((rows, dim)).astype(np.float32)}
    config: dict[str, Any] = {"model_type": "model2vec", "architectures": ["StaticModel"], "hidden_dim": dim,
                              "normalize": normalize, "max_length": max_length, "embedding_dtype": "float32"}
    if vocabulary_quantization is not None:
        tensors["mapping"] = rng.integers(0, rows, vocab_size).astype(np.int64)
        tensors["weights"] = rng.uniform(0.5, 2.0, vocab_size).astype(np.float32)
        config["vocabulary_quantization"] = rows
    save_file(tensors, str(target / "model.safetensors"))
    shutil.copy(tokenizer_source / "tokenizer.json", target / "tokenizer.json")
    (target / "config.json").write_text(json.dumps(config))
    return target


def build_bgem3_model(target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    """A tiny bge-m3: an XLM-RoBERTa encoder with CLS pooling, and FlagEmbedding's two
    head files beside it (random Linear(hidden, hidden) and Linear(hidden, 1) state dicts)."""
    import torch

    build_family_model("xlm-roberta", target, tokenizer_source, seed)
    hidden = int(_OFFSET_ENCODER["hidden_size"])  # type: ignore[call-overload]
    torch.manual_seed(seed + 1)
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), target / "colbert_linear.pt")
    torch.save(torch.nn.Linear(hidden, 1).state_dict(), target / "sparse_linear.pt")
    return target
