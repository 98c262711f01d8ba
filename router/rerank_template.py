"""Prompt templates of causal-LM rerankers (--reranker-template), in one place.

A causal reranker (Qwen3-Reranker) is a language model asked whether a document
meets a query: the score is P("yes") against P("no") at the prompt's last token.
The launcher reads a template for the words the backend scores (it hands them on
in BackendConfig); the router, told the template's name by the backend
(InfoResponse), frames each (query, document) with it. This module imports
nothing heavy: the launcher loads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedserve.tokenizer_pool.frames import FramedText


@dataclass(frozen=True)
class RerankTemplate:
    name: str
    # Tokenized apart from the body and never truncated: the suffix is where the
    # model answers, so a long document is cut inside the body instead.
    prefix: str
    # str.format fields: instruction, query, document.
    body: str
    suffix: str
    default_instruction: str
    # The two words whose logits at the last token make the score.
    yes: str
    no: str

    def frame(self, instruction: str, query: str, document: str) -> FramedText:
        return FramedText(self.prefix, self.body.format(instruction=instruction, query=query, document=document),
                          self.suffix)


# Qwen3-Reranker's model card (Qwen/Qwen3-Reranker-0.6B, -4B, -8B): a system turn
# that asks for "yes" or "no", the user turn, and an assistant turn opened with an
# empty think block.
QWEN3 = RerankTemplate(
    name="qwen3",
    prefix='<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
           'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    body="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
    yes="yes",
    no="no",
)

TEMPLATES: dict[str, RerankTemplate] = {t.name: t for t in (QWEN3,)}


@dataclass(frozen=True)
class CausalRerankPrompt:
    """What the router frames a causal reranker's pairs with: the template and the
    server's default instruction (--reranker-instruction, else the template's)."""

    template: RerankTemplate
    default_instruction: str

    def frame(self, instruction: str | None, query: str, document: str) -> FramedText:
        return self.template.frame(self.default_instruction if instruction is None else instruction, query, document)


def causal_prompt(template_name: str, instruction: str) -> CausalRerankPrompt | None:
    """From the backend's report: None when it serves no causal reranker."""
    if not template_name:
        return None
    template = TEMPLATES.get(template_name)
    if template is None:
        raise RuntimeError(f"the backend serves reranker template {template_name!r}, which this router does not know")
    return CausalRerankPrompt(template, instruction or template.default_instruction)
