"""Unit tests of the distillation runner's pieces: layer maps, config, feature loss, KD, students, checks."""

from __future__ import annotations

import pytest
import torch

from repgeo.distill import ConfigError, FeatureLoss, config_from_dict, derive_student, kd_loss, resolve_layer_map
from repgeo.distill.checks import check_logits, check_tokenizers
from repgeo.distill.toy import tiny_model, word_tokenizer
from repgeo.metrics import available

BASE = {"task": "classification", "output_dir": "out", "teacher": {"path": "t"}, "data": {"train": "a.csv"}}


# ----------------------------------------------------------------------------- layer maps
def test_layer_map_strategies():
    assert resolve_layer_map("uniform", 2, 4) == {1: 2, 2: 4}
    assert resolve_layer_map("uniform", 3, 12) == {1: 4, 2: 8, 3: 12}
    assert resolve_layer_map("last", 2, 6) == {2: 6}
    assert resolve_layer_map("skip", 3, 6) == {1: 2, 2: 4}
    assert resolve_layer_map({"embeddings": "embeddings", -1: "last", "1": 3}, 2, 4) == {0: 0, 1: 3, 2: 4}


@pytest.mark.parametrize(
    ("spec", "message"),
    [({5: 1}, "student layer 5 is out of range"), ({1: 9}, "teacher layer 9 is out of range"),
     ({"x": 1}, "'x'"), ("middle", "unknown layer map strategy"), ({1: 2, "-2": 3}, "mapped twice")],
)
def test_layer_map_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_layer_map(spec, 2, 4)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.metrc=cka"], r"^loss\.metrc: unknown key"),
        (["loss.metric=nope"], r"^loss\.metric: unknown metric 'nope'"),
        (["loss.temperature=0"], r"^loss\.temperature: must be > 0"),
        (["loss.alpha=abc"], r"^loss\.alpha: expected a number"),
        (["loss.pooling=max"], r"^loss\.pooling: must be one of"),
        (["trainer.learnin_rate=1e-4"], r"^trainer\.learnin_rate: not a transformers.TrainingArguments field"),
        (["trainer.output_dir=x"], r"^trainer\.output_dir: set by the runner"),
        (["student.keep_every=0"], r"^student\.keep_every: must be >= 1"),
        (["geometry.metrics=[cka, foo]"], r"^geometry\.metrics\[1\]: unknown metric"),
        (["loss.feature_tokens=response"], r"^loss\.feature_tokens"),
        (["loss.metric=pkd", "loss.center=false"], r"^loss\.center: does not apply to pkd"),
        (["loss.metric=pkd", "loss.normalize=rows"], r"^loss\.normalize: does not apply to pkd"),
        (["nonsense"], "section.key=value"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(BASE, overrides)


def test_config_missing_key_and_overrides():
    with pytest.raises(ConfigError, match=r"^data: required key is missing"):
        config_from_dict({k: v for k, v in BASE.items() if k != "data"})
    cfg = config_from_dict(BASE, ["trainer.learning_rate=3e-5", "loss.metric=procrustes", "loss.layer_map={1: 2}"])
    assert cfg.trainer["learning_rate"] == pytest.approx(3e-5)
    assert cfg.loss.metric == "procrustes" and cfg.loss.layer_map == {1: 2}


# ----------------------------------------------------------------------------- feature loss
def _hidden(seed, b=6, s=5, d=16, layers=3, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, s, d, generator=g, requires_grad=grad) for _ in range(layers)]


@pytest.mark.parametrize("metric", available())
@pytest.mark.parametrize("pooling", ["mean", "tokens"])
def test_feature_loss_identical_features_finite_gradients(metric, pooling):
    fl = FeatureLoss(metric, {1: 1, 2: 2}, student_dims=16, teacher_dims=16, pooling=pooling)
    teacher = _hidden(0)
    student = [h.clone().requires_grad_(True) for h in teacher]
    mask = torch.ones(6, 5)
    mask[0, 3:] = 0
    out = fl(teacher, student, mask)
    out.total.backward()
    assert torch.isfinite(out.total)
    for h in student[1:]:
        assert h.grad is not None and torch.isfinite(h.grad).all()
    if metric != "proj_mse":  # a learned projector starts at a random orthogonal map, not at the optimum
        assert float(out.total.detach()) < 1e-4


def test_feature_loss_masks_padding():
    fl = FeatureLoss("cka", {1: 1}, pooling="tokens")
    teacher, student = _hidden(0, layers=2), _hidden(1, layers=2)
    mask = torch.ones(6, 5)
    mask[:, 3:] = 0
    base = fl(teacher, student, mask).total
    student[1][:, 3:] = 1e3  # garbage in padded positions must not matter
    assert torch.allclose(fl(teacher, student, mask).total, base)


def test_feature_loss_weights_and_float32_under_autocast():
    fl = FeatureLoss("fg", {1: 1, 2: 2}, weights={1: 2.0, 2: 0.5})
    teacher, student = _hidden(0), _hidden(1)
    out = fl(teacher, student)
    assert torch.allclose(out.total, 2.0 * out.pairs["s1_t1"] + 0.5 * out.pairs["s2_t2"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = fl([h.bfloat16() for h in teacher], [h.bfloat16() for h in student])
    assert half.total.dtype == torch.float32


def test_projector_shapes_and_init():
    fl = FeatureLoss("proj_mse", {1: 2}, student_dims={1: 8}, teacher_dims={2: 24})
    w = fl.projectors["s1_t2"].weight
    assert w.shape == (24, 8)
    assert torch.allclose(w.T @ w, torch.eye(8), atol=1e-5)  # semi-orthogonal initialisation


@pytest.mark.parametrize("metric", available())
def test_feature_loss_decreases_when_training_a_student(metric):
    """A tiny BERT student learns to match a fixed teacher's pooled features under every metric."""
    torch.manual_seed(0)
    teacher = tiny_model("bert", 50, hidden_size=32, num_layers=2).eval()
    student = tiny_model("bert", 50, hidden_size=16, num_layers=2, seed=1)
    fl = FeatureLoss(metric, {1: 1, 2: 2}, student_dims=16, teacher_dims=32, pooling="mean")
    ids = torch.randint(5, 50, (24, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t_hidden = teacher(ids, output_hidden_states=True).hidden_states
    opt = torch.optim.Adam([*student.parameters(), *fl.parameters()], lr=3e-3)
    losses = []
    for _ in range(25):
        out = fl(t_hidden, student(ids, output_hidden_states=True).hidden_states)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(float(out.total.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_kd_loss():
    z = torch.randn(5, 7)
    assert float(kd_loss(z, z, 2.0)) == pytest.approx(0.0, abs=1e-6)
    p_t, p_s = torch.softmax(z / 2, -1), torch.softmax(-z / 2, -1)
    expected = 4 * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert torch.allclose(kd_loss(-z, z, 2.0), expected, atol=1e-5)
    assert float(kd_loss(z[:0], z[:0], 2.0)) == 0.0


# ----------------------------------------------------------------------------- students and checks
@pytest.mark.parametrize("family", ["bert", "opt", "llama"])
def test_derive_student_copies_kept_blocks(family):
    teacher = tiny_model(family, 40, num_layers=4)
    student = derive_student(teacher, keep_every=2)
    assert student.config.num_hidden_layers == 2
    sd, td = student.state_dict(), teacher.state_dict()
    pre = {"bert": "bert.encoder.layer.", "opt": "model.decoder.layers.", "llama": "model.layers."}[family]
    for key, value in sd.items():
        src = key.replace(f"{pre}1.", f"{pre}2.") if key.startswith(pre) else key
        assert torch.equal(value, td[src]), key
    narrow = derive_student(teacher, num_layers=2, hidden_size=16)
    assert narrow.config.hidden_size == 16 and narrow.config.num_hidden_layers == 2
    ids = torch.tensor([[3, 4, 5]])
    assert narrow(ids, output_hidden_states=True).hidden_states[-1].shape[-1] == 16


def test_checks_vocab_and_tokenizer():
    check_logits(tiny_model("opt", 40), tiny_model("opt", 40, hidden_size=16))
    with pytest.raises(ValueError, match=r"same output space.*40.*38"):
        check_logits(tiny_model("opt", 40), tiny_model("opt", 38))
    a, b = word_tokenizer(["x y z"]), word_tokenizer(["x y w"])
    check_tokenizers(a, word_tokenizer(["x y z"]))
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        check_tokenizers(a, b)


def test_record_checks_read_the_file_once_and_still_name_the_line(tmp_path, monkeypatch):
    """``require_fields`` locates a record in its file only on the error path: checking 3,000 valid records re-reads
    nothing (it used to re-read the file once per record: 27 s of a 5-minute demo), and a bad record is still named
    with its line."""
    from repgeo._files import DataError
    from repgeo.distill.tasks import base

    rows = ["text,label"] + [f"text {i},{i % 2}" for i in range(3000)]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(rows) + "\n")
    reads = []
    real = base.read_text_utf8
    monkeypatch.setattr(base, "read_text_utf8", lambda p: reads.append(p) or real(p))
    records, _, _ = base.read_source(str(path), ["text", "label"], None)
    assert len(records) == 3000 and reads == []
    rows[1501] = ",1"  # record 1500 has an empty text, on line 1502
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"record 1500 \(line 1502\): field 'text' is empty"):
        base.read_source(str(path), ["text", "label"], None)
    assert len(reads) == 1


def test_fine_tuning_uses_fused_adamw_and_the_demo_students_too():
    """The teacher recipe and the short student runs use torch's fused AdamW (the same update in one kernel; on a
    CPU step of the demo's teacher it cut the optimiser from ~0.10 s to ~0.03 s)."""
    from repgeo.recipes.classifier import _fusable
    from repgeo.recipes.student import short_run_trainer

    assert short_run_trainer(10, 1e-4, 8, logging_steps=1)["optim"] == "adamw_torch_fused"
    model = tiny_model("bert", 50)
    assert _fusable(list(model.parameters()))
    assert not _fusable([torch.nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)])


def test_student_freeze_embeddings_leaves_only_the_input_embeddings_out_of_training(tmp_path):
    """``student.freeze_embeddings``: the input embedding table gets no gradient and no optimiser slot; every
    other student parameter still trains."""
    from repgeo.distill import build_trainer
    from repgeo.distill.toy import make_toy_setup
    from tests.test_distill_runs import _config

    setup = make_toy_setup(tmp_path / "setup", "classification")
    cfg = config_from_dict(_config(setup, tmp_path / "run", student={"freeze_embeddings": True},
                                   trainer={"max_steps": 1, "save_strategy": "no"}))
    trainer, _ = build_trainer(cfg, verbose=False)
    emb = trainer.model.get_input_embeddings().weight
    frozen = [n for n, p in trainer.model.named_parameters() if not p.requires_grad]
    assert not emb.requires_grad and frozen == ["bert.embeddings.word_embeddings.weight"]
    optimised = {id(p) for g in trainer.create_optimizer().param_groups for p in g["params"]}
    assert id(emb) not in optimised and len(optimised) >= len(list(trainer.model.parameters())) - 1
