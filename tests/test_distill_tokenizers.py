"""Distillation between a teacher and a student with different tokenizers (classification).

The teacher is the toy setup's (a word-level tokenizer, ``[CLS] ... [SEP]``); the student has a real BERT
WordPiece tokenizer built from a small vocabulary file, with another special-token layout (``[MASK]`` and unused
entries first, so every id differs) and long words split into pieces, so the two tokenisations differ in ids and
in length. Each model must read every text through its own tokenizer.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertTokenizerFast

from repgeo.distill import build_trainer, config_from_dict
from repgeo.distill.cache import TeacherCache
from repgeo.distill.tasks import ClassificationTask, InstructionTask, Task, student_inputs, teacher_inputs
from repgeo.distill.toy import make_toy_setup, tiny_model
from tests.test_distill_runs import _config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wordpiece_tokenizer(folder, texts: list[str]) -> BertTokenizerFast:
    """A BERT WordPiece tokenizer from a vocab file over the words of ``texts``: words longer than 4 letters are
    split (``mov ##ie``)."""
    pieces = []
    for w in sorted({w for t in texts for w in t.split()}):
        pieces += [w] if len(w) <= 4 else [w[:3], "##" + w[3:]]
    vocab = ["[MASK]", *[f"[unused{k}]" for k in range(7)], "[PAD]", "[UNK]", "[CLS]", "[SEP]",
             *dict.fromkeys(pieces)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)  # transformers 5: vocab=FILE


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The toy teacher (word-level tokenizer, 4 blocks, width 32) and a student folder (2 blocks, width 16) with
    its own WordPiece tokenizer."""
    root = tmp_path_factory.mktemp("xtok")
    setup = make_toy_setup(root, "classification", n_train=48, n_eval=16)
    tok = wordpiece_tokenizer(root / "vocab", _texts(setup["train"]) + _texts(setup["eval"]))
    student = tiny_model("bert", len(tok), hidden_size=16, num_layers=2, tokenizer=tok, seed=3)
    folder = root / "student"
    student.save_pretrained(folder)
    tok.save_pretrained(folder)
    return {**setup, "student": folder}


def _cfg(pair, out, **sections):
    sections.setdefault("student", {"keep_every": None, "path": str(pair["student"])})
    return config_from_dict(_config(pair, out, **sections))


def _texts(path) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(path)["text"])


def _unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]


def test_each_model_reads_its_own_tokenisation_of_each_text(pair):
    teacher_tok = AutoTokenizer.from_pretrained(pair["teacher"])
    student_tok = AutoTokenizer.from_pretrained(pair["student"])
    texts = _texts(pair["train"])
    assert teacher_tok("a movie")["input_ids"] != student_tok("a movie")["input_ids"]
    assert student_tok.tokenize("the movie") == ["the", "mov", "##ie"]  # real WordPiece pieces

    trainer, _ = build_trainer(_cfg(pair, pair["teacher"].parent / "units"), verbose=False)
    task = trainer.task
    assert task.tokenizer.get_vocab() == student_tok.get_vocab()
    assert task.teacher_tokenizer.get_vocab() == teacher_tok.get_vocab()
    items = [trainer.train_dataset[i] for i in range(6)]
    for item in items:
        text = texts[item["example_index"]]
        assert item["input_ids"] == student_tok(text)["input_ids"]
        assert item["teacher_input_ids"] == teacher_tok(text)["input_ids"]
    batch = task.collate(items)
    want_t = teacher_tok([texts[i["example_index"]] for i in items], padding=True, return_tensors="pt")
    assert torch.equal(batch["teacher_input_ids"], want_t["input_ids"])  # padded by the teacher's own pad id
    assert torch.equal(batch["teacher_attention_mask"], want_t["attention_mask"])
    assert set(teacher_inputs(batch)) == {"input_ids", "attention_mask"}
    assert torch.equal(teacher_inputs(batch)["input_ids"], want_t["input_ids"])
    assert "teacher_input_ids" not in student_inputs(batch) and "labels" in student_inputs(batch)


def test_a_cross_tokenizer_run_trains_and_the_teacher_sees_its_own_ids(pair, tmp_path):
    cfg = _cfg(pair, tmp_path / "run", loss={"metric": "procrustes", "pooling": "mean", "alpha": 1.0},
               trainer={"max_steps": 24, "eval_strategy": "no", "learning_rate": 5e-3, "save_strategy": "no",
                        "lr_scheduler_type": "constant"})
    trainer, _ = build_trainer(cfg, verbose=False)
    seen: dict[str, list[torch.Tensor]] = {"teacher": [], "student": []}
    hooks = [m.get_input_embeddings().register_forward_hook(
        lambda mod, inp, out, key=key: seen[key].append(inp[0].detach().cpu()))
        for key, m in (("teacher", trainer.teacher), ("student", trainer.model))]
    try:
        trainer.train()
    finally:
        for h in hooks:
            h.remove()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(torch.isfinite(torch.tensor([h["loss"], h["loss_kd"], h["loss_feature"]])).all() for h in logs)

    def mean(key, part):
        return sum(h[key] for h in part) / len(part)

    assert mean("loss", logs[-4:]) < mean("loss", logs[:4]), logs
    assert mean("loss_feature", logs[-4:]) < mean("loss_feature", logs[:4]), logs

    # every teacher call read the teacher tokenizer's ids of the same texts the student read through its own
    teacher_tok = AutoTokenizer.from_pretrained(pair["teacher"])
    student_tok = AutoTokenizer.from_pretrained(pair["student"])
    texts = _texts(pair["train"])
    by_student_ids = {tuple(student_tok(t)["input_ids"]): t for t in texts}
    assert len(seen["teacher"]) == len(seen["student"]) == 24
    for t_ids, s_ids in zip(seen["teacher"], seen["student"], strict=True):
        s_rows = _unpadded(s_ids, s_ids != student_tok.pad_token_id)
        t_rows = _unpadded(t_ids, t_ids != teacher_tok.pad_token_id)
        batch_texts = [by_student_ids[tuple(r)] for r in s_rows]
        assert t_rows == [teacher_tok(t)["input_ids"] for t in batch_texts]


def test_the_teacher_cache_equals_the_live_teacher_across_tokenizers(pair, tmp_path):
    cfg = _cfg(pair, tmp_path / "run", cache={"enabled": True}, loss={"metric": "cka", "pooling": "cls"},
               trainer={"max_steps": 1, "eval_strategy": "no", "save_strategy": "no"})
    trainer, layer_map = build_trainer(cfg, verbose=False)
    cache, fl = trainer.teacher_cache, trainer.feature_loss
    assert isinstance(cache, TeacherCache) and cache.features is not None and cache.logits is not None
    items = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))][5:17]
    batch = trainer.task.collate(items)
    t_in = teacher_inputs(batch)
    with torch.no_grad():
        live = trainer.teacher(**t_in, output_hidden_states=True)
    logits, feats = cache.lookup(batch["example_index"])
    torch.testing.assert_close(logits, live.logits.float(), rtol=1e-5, atol=1e-6)
    want = fl.teacher_features(live.hidden_states, t_in["attention_mask"], None)
    assert set(feats) == set(layer_map.values())
    for t, rows in feats.items():
        torch.testing.assert_close(rows, want[t].cpu(), rtol=1e-5, atol=1e-6)
    # the trainer's live route (no cache while evaluating) gives the same rows
    trainer.model.eval()
    out_logits, out_feats = trainer._teacher_outputs(student_inputs(batch), t_in, None, None)
    torch.testing.assert_close(out_logits, logits, rtol=1e-5, atol=1e-6)
    for t, rows in feats.items():
        torch.testing.assert_close(out_feats[t].cpu(), rows, rtol=1e-5, atol=1e-6)


def test_tasks_that_compare_tokens_refuse_a_teacher_tokenizer(pair):
    teacher_tok = AutoTokenizer.from_pretrained(pair["teacher"])
    student_tok = AutoTokenizer.from_pretrained(pair["student"])
    data = _cfg(pair, pair["teacher"].parent / "unused").data
    assert ClassificationTask(student_tok, data, teacher_tokenizer=teacher_tok).teacher_tokenizer is teacher_tok
    with pytest.raises(ValueError, match="task cannot give the teacher its own tokenizer: its KD term compares "
                                         "per-token distributions over one vocabulary"):
        InstructionTask(student_tok, data, teacher_tokenizer=teacher_tok)

    class TokenTask(Task):
        name = "tokens"

    with pytest.raises(ValueError, match="the tokens task cannot give the teacher its own tokenizer: the task feeds"):
        TokenTask(student_tok, data, teacher_tokenizer=teacher_tok)
