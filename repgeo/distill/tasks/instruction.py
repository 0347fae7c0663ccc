"""Instruction following (OPT / Llama causal LMs): prompt + response; loss on response tokens only.

Each example is ``prompt_ids + response_ids + [eos]`` with labels ``-100`` on the prompt, so the task CE, the KD
term (teacher and student next-token distributions at the positions that predict a response token) and,
with ``loss.feature_tokens: response``, the feature loss all ignore the prompt. Scored by greedy generation
from the prompt: ROUGE-L F-measure (``rouge-score``) and exact match (whitespace-normalised, case-sensitive).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import ListDataset, Task, pad, read_source

IGNORE = -100


class InstructionTask(Task):
    """Records ``{prompt_field: str, response_field: str}`` (JSONL)."""

    name = "instruction"
    model_class_name = "AutoModelForCausalLM"
    scored_by_generation = True
    one_tokenizer = "its KD term compares per-token distributions over one vocabulary"

    def __init__(self, tokenizer: Any, data_cfg: Any, teacher_tokenizer: Any | None = None) -> None:
        super().__init__(tokenizer, data_cfg, teacher_tokenizer)  # a teacher tokenizer is refused: one_tokenizer
        if tokenizer.eos_token_id is None:
            raise ValueError("the instruction task needs a tokenizer with an EOS token")

    def encode(self, prompt: str, response: str) -> tuple[list[int], list[int]]:
        """Token ids of prompt (with the tokenizer's special prefix) and response (+ EOS)."""
        p = list(self.tokenizer(prompt)["input_ids"])
        r = [*self.tokenizer(response, add_special_tokens=False)["input_ids"], self.tokenizer.eos_token_id]
        return p, r

    def dataset(self, source: Any, max_samples: int | None = None, *, name: str | None = None) -> ListDataset:
        cfg = self.data_cfg
        records = read_source(source, [cfg.prompt_field, cfg.response_field], max_samples, name)[0]
        items = [self.dataset_item(str(r[cfg.prompt_field]), str(r[cfg.response_field]), i)
                 for i, r in enumerate(records)]
        return ListDataset(items, sum(it.pop("truncated") for it in items))

    def dataset_item(self, prompt: str, response: str, index: int) -> dict[str, Any]:
        """One example: ids truncated to ``max_length`` (the prompt first, keeping at least one response token),
        labels ``-100`` on the prompt, and ``truncated`` (whether anything was cut)."""
        max_length = self.data_cfg.max_length
        p, resp = self.encode(prompt, response)
        truncated = len(p) + len(resp) > max_length
        p = p[: max(1, max_length - 1)]
        resp = resp[: max_length - len(p)]
        return {"input_ids": p + resp, "labels": [IGNORE] * len(p) + resp, "example_index": index,
                "prompt": prompt, "response": response, "truncated": truncated}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        return {
            "input_ids": pad(ids, self.tokenizer.pad_token_id),
            "attention_mask": pad([[1] * len(s) for s in ids], 0),
            "labels": pad([f["labels"] for f in features], IGNORE),
            "example_index": torch.tensor([f["example_index"] for f in features], dtype=torch.long),
        }

    def kd_logits(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits at the positions that predict a response token: (n_response_tokens, vocab)."""
        target = batch["labels"][:, 1:] != IGNORE
        return logits[:, :-1][target]

    def kd_counts(self, batch: dict[str, torch.Tensor]) -> list[int]:
        """Response tokens per example: the positions :meth:`kd_logits` keeps."""
        return (batch["labels"][:, 1:] != IGNORE).sum(1).tolist()

    def feature_mask(self, batch: dict[str, torch.Tensor], which: str) -> torch.Tensor | None:
        return batch["labels"] != IGNORE if which == "response" else None

    def eval_scores(self, model: Any, dataset: Any, *, generation: dict[str, Any], batch_size: int
                    ) -> dict[str, float]:
        """:meth:`generate_scores` with ``generation`` (``max_new_tokens``, ``num_samples``); none when
        ``max_new_tokens`` is 0."""
        if generation.get("max_new_tokens", 0) <= 0:
            return {}
        return self.generate_scores(model, dataset, max_new_tokens=generation["max_new_tokens"],
                                    num_samples=generation.get("num_samples"), batch_size=batch_size)

    @torch.no_grad()
    def generate_scores(
        self, model: Any, dataset: ListDataset, *, max_new_tokens: int, num_samples: int | None, batch_size: int
    ) -> dict[str, float]:
        """Greedy generation from each prompt; mean ROUGE-L F and exact match against the responses."""
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        items = dataset.items[:num_samples] if num_samples else dataset.items
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rouge, exact = [], []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            prompts = [self.encode(f["prompt"], "")[0][: self.data_cfg.max_length] for f in chunk]
            input_ids = pad(prompts, self.tokenizer.pad_token_id, side="left").to(device)
            attention_mask = pad([[1] * len(p) for p in prompts], 0, side="left").to(device)
            out = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
            )
            texts = self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
            for f, text in zip(chunk, texts, strict=True):
                pred, ref = " ".join(text.split()), " ".join(f["response"].split())
                rouge.append(scorer.score(ref, pred)["rougeL"].fmeasure)
                exact.append(float(pred == ref))
        model.train(was_training)
        n = max(1, len(rouge))
        return {"rougeL": 100.0 * sum(rouge) / n, "exact_match": 100.0 * sum(exact) / n}
