"""A BERT-like encoder layer's math on packed tokens, with fewer and larger kernels.

`backends/varlen.py` drives the transformers modules one by one (`modules`): three
query/key/value GEMMs, then each bias, residual, LayerNorm and activation as its own
kernel. Here the same weights run as:

- `fused`: one QKV GEMM per layer (the three projections concatenated once at load);
  the rest as in the modules, called as functions.
- `epilogue`: `fused`, and a GELU activation computed inside the up projection's GEMM
  (cuBLASLt's bias + GELU epilogue, `torch._addmm_activation`): one pass over the widest
  tensor instead of two. That GELU is the tanh approximation, not the exact one BERT
  uses: parity against float32 says whether it may be used (bench/issue16.py).
- `compiled`: `fused`, with everything from the attention output to the next layer's input
  (output projection, residual + LayerNorm, up projection + activation, down projection,
  residual + LayerNorm) compiled by `torch.compile` (inductor), which fuses the
  elementwise work into the GEMMs' neighbours. Only the token count varies between
  calls and it is marked dynamic, so one compilation serves every batch size. Where
  compiling fails (no C compiler or triton on the machine, say) the reason is logged
  once and the `fused` math runs instead.

Weights, dtype, LayerNorm epsilons and the activation function are the checkpoint's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

LAYER_MATHS = ("modules", "fused", "epilogue", "compiled")
# transformers' and torch's GELU modules (exact or tanh): what the GEMM epilogue may replace.
GELU_CLASSES = frozenset({"GELUActivation", "GELU", "NewGELUActivation", "PytorchGELUTanh", "GELUTanh",
                          "GELUPytorchTanh"})

# q, k, v [tokens, heads, head_dim] -> context [tokens, heads, head_dim]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Activation = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FusedLayer:
    qkv_weight: torch.Tensor  # [3 * width, width]: query, key, value stacked
    qkv_bias: torch.Tensor
    heads: int
    head_dim: int
    out_weight: torch.Tensor
    out_bias: torch.Tensor
    ln1_weight: torch.Tensor
    ln1_bias: torch.Tensor
    ln1_eps: float
    up_weight: torch.Tensor
    up_bias: torch.Tensor
    act: Activation
    down_weight: torch.Tensor
    down_bias: torch.Tensor
    ln2_weight: torch.Tensor
    ln2_bias: torch.Tensor
    ln2_eps: float

    @classmethod
    def from_module(cls, layer: Any) -> FusedLayer:
        projections = layer.attention.self
        qkv = (projections.query, projections.key, projections.value)
        return cls(
            qkv_weight=torch.cat([p.weight for p in qkv]).detach(),
            qkv_bias=torch.cat([p.bias for p in qkv]).detach(),
            heads=int(projections.num_attention_heads),
            head_dim=int(projections.attention_head_size),
            out_weight=layer.attention.output.dense.weight,
            out_bias=layer.attention.output.dense.bias,
            ln1_weight=layer.attention.output.LayerNorm.weight,
            ln1_bias=layer.attention.output.LayerNorm.bias,
            ln1_eps=float(layer.attention.output.LayerNorm.eps),
            up_weight=layer.intermediate.dense.weight,
            up_bias=layer.intermediate.dense.bias,
            act=layer.intermediate.intermediate_act_fn,
            down_weight=layer.output.dense.weight,
            down_bias=layer.output.dense.bias,
            ln2_weight=layer.output.LayerNorm.weight,
            ln2_bias=layer.output.LayerNorm.bias,
            ln2_eps=float(layer.output.LayerNorm.eps),
        )

    def block_weights(self) -> tuple[torch.Tensor, ...]:
        return (self.out_weight, self.out_bias, self.ln1_weight, self.ln1_bias, self.up_weight, self.up_bias,
                self.down_weight, self.down_bias, self.ln2_weight, self.ln2_bias)


Block = Callable[..., torch.Tensor]


def make_block(act: Activation, ln1_eps: float, ln2_eps: float, gelu_epilogue: bool = False) -> Block:
    """The work between one layer's attention and the next layer's QKV projection, as a
    function of tensors only (so one compiled graph serves every layer). `gelu_epilogue`:
    the activation (a GELU) inside the up projection's GEMM."""

    def block(context: torch.Tensor, hidden: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor,
              ln1_w: torch.Tensor, ln1_b: torch.Tensor, up_w: torch.Tensor, up_b: torch.Tensor,
              down_w: torch.Tensor, down_b: torch.Tensor, ln2_w: torch.Tensor, ln2_b: torch.Tensor) -> torch.Tensor:
        width = (hidden.shape[-1],)
        attended = F.layer_norm(F.linear(context, out_w, out_b) + hidden, width, ln1_w, ln1_b, ln1_eps)
        if gelu_epilogue:
            up = torch._addmm_activation(up_b, attended, up_w.t(), use_gelu=True)
        else:
            up = act(F.linear(attended, up_w, up_b))
        return F.layer_norm(F.linear(up, down_w, down_b) + attended, width, ln2_w, ln2_b, ln2_eps)

    return block


class CompiledBlock:
    """`torch.compile` of a block, the token dimension dynamic; on a failure to compile
    or run, the plain block from then on (logged once, `failure` says why)."""

    def __init__(self, block: Block, compile_fn: Callable[[Block], Block] | None = None) -> None:
        self._plain = block
        self._compile_fn = compile_fn or _inductor
        self._compiled: Block | None = None
        self.failure: str | None = None

    def __call__(self, context: torch.Tensor, hidden: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        if self.failure is not None or context.shape[0] < 2:
            # Dynamo specialises sizes 0 and 1: run those plain rather than recompile.
            return self._plain(context, hidden, *weights)
        try:
            if self._compiled is None:
                self._compiled = self._compile_fn(self._plain)
            torch._dynamo.mark_dynamic(context, 0)
            torch._dynamo.mark_dynamic(hidden, 0)
            return self._compiled(context, hidden, *weights)
        except Exception as exc:  # noqa: BLE001 - no compiler, no triton, unsupported op: run plain
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                raise  # inside a CUDA-graph capture: that capture fails and falls back instead
            self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            logger.warning("torch.compile of the layer math failed, running it uncompiled: %s", self.failure)
            return self._plain(context, hidden, *weights)


def _block_key(layer: FusedLayer) -> tuple[str, float, float]:
    # Each transformers layer holds its own (stateless) activation module: layers whose
    # activations print alike share one block, so one compilation serves them all.
    act = layer.act
    return f"{type(act).__module__}.{type(act).__qualname__}:{act!r}", layer.ln1_eps, layer.ln2_eps


def _inductor(block: Block) -> Block:
    compiled: Block = torch.compile(block, dynamic=False, fullgraph=True)
    return compiled


class FusedLayers:
    """Every layer of an encoder in the `fused`, `epilogue` or `compiled` math."""

    def __init__(self, layers: Sequence[FusedLayer], math: str,
                 compile_fn: Callable[[Block], Block] | None = None) -> None:
        if math not in LAYER_MATHS[1:]:
            raise ValueError(f"layer math {math!r}: choose from {', '.join(LAYER_MATHS[1:])}")
        compiled = math == "compiled"
        self._math = math
        self.layers = tuple(layers)
        self._blocks: dict[tuple[str, float, float], Block] = {}
        for layer in self.layers:
            key = _block_key(layer)
            if key not in self._blocks:
                epilogue = math == "epilogue" and type(layer.act).__name__ in GELU_CLASSES
                block = make_block(layer.act, layer.ln1_eps, layer.ln2_eps, epilogue)
                self._blocks[key] = CompiledBlock(block, compile_fn) if compiled else block
        self._compiled = compiled
        # Whether the attention kernel takes q, k, v as strided views of the QKV output;
        # decided on the first call (a kernel that refuses them gets contiguous copies).
        self._strided_ok: bool | None = None

    @classmethod
    def from_modules(cls, layers: Sequence[Any], math: str) -> FusedLayers:
        return cls([FusedLayer.from_module(layer) for layer in layers], math)

    @property
    def math(self) -> str:
        """The math asked for; `fused` where compiling failed."""
        if not self._compiled:
            return self._math
        failed = any(isinstance(b, CompiledBlock) and b.failure for b in self._blocks.values())
        return "fused" if failed else "compiled"

    @property
    def compile_failure(self) -> str | None:
        return next((b.failure for b in self._blocks.values() if isinstance(b, CompiledBlock) and b.failure), None)

    def run(self, hidden: torch.Tensor, attend: Attend) -> torch.Tensor:
        tokens = hidden.shape[0]
        for layer in self.layers:
            qkv = F.linear(hidden, layer.qkv_weight, layer.qkv_bias).view(tokens, 3, layer.heads, layer.head_dim)
            context = self._attend(attend, qkv).reshape(tokens, layer.heads * layer.head_dim)
            block = self._blocks[_block_key(layer)]
            hidden = block(context, hidden, *layer.block_weights())
        return hidden

    def _attend(self, attend: Attend, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv.unbind(1)
        if self._strided_ok is None:
            try:
                context = attend(q, k, v)
            except RuntimeError as exc:
                logger.info("attention kernel refuses strided q/k/v (%s); copying them", str(exc).splitlines()[0][:120])
                self._strided_ok = False
            else:
                self._strided_ok = True
                return context
        if not self._strided_ok:
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        return attend(q, k, v)
