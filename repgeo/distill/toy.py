"""Tiny offline models and tokenizers for tests, notebooks and smoke runs (no network).

``word_tokenizer`` builds a whitespace word-level tokenizer (a real ``tokenizers`` tokenizer wrapped as a
Hugging Face fast tokenizer) from a corpus; ``tiny_model`` builds a randomly initialised BERT classifier, OPT or
Llama causal LM from a ``transformers`` config. Both save with ``save_pretrained`` like any hub model, so a run
configuration can point at the folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import transformers

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>")


def word_tokenizer(
    texts: Iterable[str], *, style: Literal["bert", "causal"] = "bert", min_size: int = 0
) -> transformers.PreTrainedTokenizerBase:
    """A whitespace word-level tokenizer over ``texts``.

    ``style="bert"`` wraps sequences as ``[CLS] ... [SEP]``; ``"causal"`` prepends ``<s>`` (and uses ``</s>``
    as EOS). ``min_size`` pads the vocabulary with unused ``[unusedK]`` tokens.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = sorted({w for t in texts for w in t.split()})
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *words])}
    for k in range(len(vocab), min_size):
        vocab[f"[unused{k}]"] = k
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if style == "bert":
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        extra: dict[str, Any] = {"cls_token": "[CLS]", "sep_token": "[SEP]"}
    else:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
        extra = {"bos_token": "<s>", "eos_token": "</s>"}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", model_max_length=512, **extra
    )


def tiny_model(
    family: Literal["bert", "opt", "llama"],
    vocab_size: int,
    *,
    hidden_size: int = 32,
    num_layers: int = 4,
    num_heads: int = 4,
    num_labels: int = 2,
    dropout: float = 0.0,
    seed: int = 0,
    tokenizer: transformers.PreTrainedTokenizerBase | None = None,
) -> transformers.PreTrainedModel:
    """A randomly initialised tiny model built from a config (BERT classifier, OPT or Llama causal LM)."""
    transformers.set_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer is not None else 0
    bos = tokenizer.bos_token_id if tokenizer is not None and tokenizer.bos_token_id is not None else 1
    eos = tokenizer.eos_token_id if tokenizer is not None and tokenizer.eos_token_id is not None else 2
    if family == "bert":
        cfg = transformers.BertConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, intermediate_size=2 * hidden_size, max_position_embeddings=128,
            num_labels=num_labels, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            pad_token_id=pad,
        )
        return transformers.BertForSequenceClassification(cfg)
    if family == "opt":
        cfg = transformers.OPTConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, ffn_dim=2 * hidden_size, max_position_embeddings=128,
            word_embed_proj_dim=hidden_size, dropout=dropout, attention_dropout=dropout,
            pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
        )
        return transformers.OPTForCausalLM(cfg)
    if family == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, num_key_value_heads=num_heads, intermediate_size=2 * hidden_size,
            max_position_embeddings=128, attention_dropout=dropout, pad_token_id=pad, bos_token_id=bos,
            eos_token_id=eos, tie_word_embeddings=False,
        )
        return transformers.LlamaForCausalLM(cfg)
    raise ValueError(f"family must be 'bert', 'opt' or 'llama'; got {family!r}")


_WORDS = ("the a movie film plot actor scene story music day night city house road tree river cat dog bird "
          "red blue green big small old new fast slow").split()


def sentiment_records(n: int, *, seed: int = 0, length: int = 8) -> list[dict[str, Any]]:
    """A learnable toy classification set: label 1 iff the word ``good`` appears (else ``bad`` may)."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(length // 2, length))]
        label = i % 2
        words.insert(rng.randrange(len(words) + 1), "good" if label else "bad")
        out.append({"text": " ".join(words), "label": label})
    return out


def instruction_records(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """A learnable toy instruction set: ``repeat <w1> <w2>`` -> ``<w1> <w2> <w1> <w2>``."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = [rng.choice(_WORDS) for _ in range(2)]
        out.append({"prompt": "repeat " + " ".join(ws) + " :", "response": " ".join(ws + ws)})
    return out


def write_records(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records as CSV (``.csv``) or JSON lines (``.jsonl``)."""
    import json

    p = Path(path)
    if p.suffix == ".csv":
        import pandas as pd

        pd.DataFrame(records).to_csv(p, index=False)
    else:
        p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return p


def make_toy_setup(
    folder: str | Path,
    task: Literal["classification", "instruction"] = "classification",
    *,
    family: Literal["bert", "opt", "llama"] | None = None,
    n_train: int = 64,
    n_eval: int = 32,
    hidden_size: int = 32,
    num_layers: int = 4,
    dropout: float = 0.0,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a toy data set and a tiny random teacher (model + tokenizer) under ``folder``.

    Returns ``{"teacher", "train", "eval"}`` paths, ready for a run configuration.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if task == "classification":
        train, evals = sentiment_records(n_train, seed=seed), sentiment_records(n_eval, seed=seed + 1)
        texts = [r["text"] for r in train + evals]
        suffix, style, family = ".csv", "bert", family or "bert"
    else:
        train, evals = instruction_records(n_train, seed=seed), instruction_records(n_eval, seed=seed + 1)
        texts = [r["prompt"] + " " + r["response"] for r in train + evals]
        suffix, style, family = ".jsonl", "causal", family or "opt"
    texts.append(" ".join(_WORDS) + " good bad repeat :")
    tok = word_tokenizer(texts, style=style)
    model = tiny_model(family, len(tok), hidden_size=hidden_size, num_layers=num_layers, dropout=dropout,
                       seed=seed, tokenizer=tok)
    teacher = folder / "teacher"
    model.save_pretrained(teacher)
    tok.save_pretrained(teacher)
    return {
        "teacher": teacher,
        "train": write_records(train, folder / f"train{suffix}"),
        "eval": write_records(evals, folder / f"eval{suffix}"),
    }
