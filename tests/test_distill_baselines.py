"""The two baselines of the paper: Patient-KD (``loss.metric: pkd``) and the reverse-KL KD term (``loss.kd``).

Each loss is checked against its formula written out here in numpy / scipy, on its properties (zero exactly when
it should be, the two KL directions differ), by gradient checks, and in tiny real ``transformers`` runs.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from repgeo.distill import DistillationArguments, FeatureLoss, build_trainer, config_from_dict
from repgeo.distill.config import ConfigError, config_yaml
from repgeo.distill.toy import make_toy_setup
from repgeo.distill.trainer import FEATURE_LOSS_FILE, kd_loss
from repgeo.metrics import pkd_loss
from tests.test_distill_runs import _config as _runs_config


def _config(setup, out, task="classification", **sections):
    """The toy run configuration of ``tests.test_distill_runs``, without evaluation during training."""
    trainer = {"eval_strategy": "no", **sections.pop("trainer", {})}
    return _runs_config(setup, out, task, trainer=trainer, **sections)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def pkd_by_hand(X: np.ndarray, Y: np.ndarray, W: np.ndarray | None = None) -> float:
    """Sun et al.'s sum over examples of ||y/|y| - x/|x| ||^2, divided by the number of examples."""
    Ym = Y if W is None else Y @ W.T
    return float(sum(np.sum((unit(Ym)[i] - unit(X)[i]) ** 2) for i in range(X.shape[0])) / X.shape[0])


# --------------------------------------------------------------------------- Patient-KD: the function


def test_pkd_equals_the_formula_numpy_and_torch(rng):
    X, Y, W = rng.normal(size=(7, 5)), rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    want = pkd_by_hand(X, Y, W)
    assert pkd_loss(X, Y, W) == pytest.approx(want, rel=1e-12)
    got = pkd_loss(torch.tensor(X), torch.tensor(Y), torch.tensor(W))
    assert float(got) == pytest.approx(want, rel=1e-12)
    Ysq = rng.normal(size=(7, 5))  # equal widths: no map (Sun et al.), i.e. the identity
    assert pkd_loss(X, Ysq) == pytest.approx(pkd_by_hand(X, Ysq), rel=1e-12)
    assert pkd_loss(X, Ysq) == pytest.approx(pkd_loss(X, Ysq, np.eye(5)), rel=1e-12)
    # = 2 - 2 mean cosine; not the Frobenius-normalised projection MSE (the per-row scale matters)
    cos = np.sum(unit(X) * unit(Ysq), axis=1)
    assert pkd_loss(X, Ysq) == pytest.approx(2 - 2 * cos.mean(), rel=1e-12)


def test_pkd_is_zero_exactly_for_a_positive_per_row_rescaling(rng):
    Y, W = rng.normal(size=(9, 4)), rng.normal(size=(6, 4))
    scale = rng.uniform(0.01, 100.0, size=(9, 1))
    X = (Y @ W.T) * scale
    assert pkd_loss(X, Y, W) == pytest.approx(0.0, abs=1e-12)
    assert float(pkd_loss(torch.tensor(X), torch.tensor(Y), torch.tensor(W))) == pytest.approx(0.0, abs=1e-12)
    flipped = X.copy()
    flipped[2] *= -1  # one row pointing the other way: its term is ||-u - u||^2 = 4
    assert pkd_loss(flipped, Y, W) == pytest.approx(4 / 9, rel=1e-10)
    rotated = X @ np.linalg.qr(rng.normal(size=(6, 6)))[0]  # a rotation is not forgiven (no invariances)
    assert pkd_loss(rotated, Y, W) > 0.1


def test_pkd_gradients_against_finite_differences(rng):
    X = torch.tensor(rng.normal(size=(5, 4)))
    Y = torch.tensor(rng.normal(size=(5, 3)), requires_grad=True)
    W = torch.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda y, w: pkd_loss(X, y, w), (Y, W))


def test_pkd_bad_inputs_name_the_problem(rng):
    X, Y = rng.normal(size=(4, 5)), rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match="without a map W"):
        pkd_loss(X, Y)
    with pytest.raises(ValueError, match=r"W must have shape \(p, q\) = \(5, 3\)"):
        pkd_loss(X, Y, np.ones((3, 5)))
    Y0 = Y.copy()
    Y0[1] = 0
    with pytest.raises(ValueError, match="Y W\\^T has an all-zero row"):
        pkd_loss(X, Y0, rng.normal(size=(5, 3)))
    X0 = X.copy()
    X0[2] = 0
    with pytest.raises(ValueError, match="X has an all-zero row"):
        pkd_loss(X0, rng.normal(size=(4, 5)))
    with pytest.raises(ValueError, match="closed_form' does not apply to pkd"):
        FeatureLoss("pkd", {1: 1}, projector="closed_form")
    for setting in ({"center": False}, {"normalize": "rows"}, {"normalize": None}):
        with pytest.raises(ValueError, match=r"do not apply to pkd: it puts every row on the unit sphere"):
            FeatureLoss("pkd", {1: 1}, **setting)
    FeatureLoss("pkd", {1: 1}, center=True, normalize="frobenius")  # the defaults, spelt out: accepted


# --------------------------------------------------------------------------- Patient-KD: the feature loss


def hidden(seed: int, dims: tuple[int, ...], batch: int = 6, seq: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, seq, d, generator=g, dtype=torch.float64) for d in dims]


def test_pkd_feature_loss_is_the_weighted_sum_over_pairs_of_cls_rows():
    """Equal widths: no projector (Sun et al.); each pair's loss is the formula on the [CLS] (first-token) rows."""
    teacher, student = hidden(0, (8,) * 5), hidden(1, (8,) * 3)
    fl = FeatureLoss("pkd", {1: 2, 2: 4}, student_dims=8, teacher_dims=8, pooling="cls", weights=[0.5, 2.0])
    assert len(fl.projectors) == 0 and not list(fl.parameters())
    out = fl(teacher, student)
    want = {}
    for s, t in ((1, 2), (2, 4)):
        want[s] = pkd_by_hand(teacher[t][:, 0].numpy(), student[s][:, 0].numpy())
        assert float(out.pairs[f"s{s}_t{t}"]) == pytest.approx(want[s], rel=1e-5)
    assert float(out.total) == pytest.approx(0.5 * want[1] + 2.0 * want[2], rel=1e-5)


def test_pkd_feature_loss_learns_a_projector_where_widths_differ():
    teacher, student = hidden(0, (12, 12, 12)), [h.float().requires_grad_(True) for h in hidden(1, (8, 8, 12))]
    fl = FeatureLoss("pkd", {1: 1, 2: 2}, student_dims={1: 8, 2: 12}, teacher_dims=12, pooling="mean")
    assert set(fl.projectors) == {"s1_t1"}  # the pair of equal widths is compared directly
    w = fl.projectors["s1_t1"].weight
    assert w.shape == (12, 8)
    assert torch.allclose(w @ w.T @ w, w, atol=1e-5)  # semi-orthogonal start, as proj_mse's
    out = fl(teacher, student)
    mean_rows = [h.mean(1).detach().double().numpy() for h in student]
    want = pkd_by_hand(teacher[1].mean(1).numpy(), mean_rows[1], w.detach().double().numpy())
    assert float(out.pairs["s1_t1"].detach()) == pytest.approx(want, rel=1e-5)
    out.total.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    for h in student[1:]:
        assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


# --------------------------------------------------------------------------- reverse KL: the function


def kl_rows_by_hand(s_logits: np.ndarray, t_logits: np.ndarray, T: float, direction: str) -> float:
    ps, pt = softmax(s_logits / T, axis=-1), softmax(t_logits / T, axis=-1)
    p, q = (pt, ps) if direction == "forward" else (ps, pt)
    return float(T * T * rel_entr(p, q).sum(axis=-1).mean())


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_kd_equals_scipy_on_masked_positions(rng, direction):
    B, L, V, T = 3, 6, 11, 2.5
    zs, zt = rng.normal(scale=3, size=(B, L, V)), rng.normal(scale=3, size=(B, L, V))
    mask = rng.random((B, L)) < 0.6
    mask[0, 0] = True
    want = kl_rows_by_hand(zs[mask], zt[mask], T, direction)
    s, t = torch.tensor(zs, dtype=torch.float32), torch.tensor(zt, dtype=torch.float32)
    m = torch.tensor(mask)
    got = kd_loss(s[m], t[m], T, direction)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(want, rel=1e-5)
    half = kd_loss(s[m].to(torch.bfloat16), t[m].to(torch.bfloat16), T, direction)
    assert half.dtype == torch.float32  # half-precision logits are compared in float32
    assert float(kd_loss(s[:0], t[:0], T, direction)) == 0.0  # no KD rows (e.g. no response tokens)


def test_reverse_differs_from_forward_and_is_zero_only_for_equal_distributions(rng):
    zs = torch.tensor(rng.normal(size=(4, 9)))
    zt = torch.tensor(rng.normal(scale=4, size=(4, 9)))  # a peaked teacher vs a flat student: asymmetric
    fwd, rev = float(kd_loss(zs, zt, 1.0)), float(kd_loss(zs, zt, 1.0, "reverse"))
    assert abs(fwd - rev) > 0.1 * max(fwd, rev)
    assert float(kd_loss(zt, zs, 1.0, "reverse")) == pytest.approx(fwd, rel=1e-12)  # KL(p||q) with roles swapped
    shift = torch.tensor(rng.normal(size=(4, 1)))  # softmax is unchanged by a per-row shift of the logits
    assert float(kd_loss(zt + shift, zt, 2.0, "reverse")) == pytest.approx(0.0, abs=1e-12)
    near = zt.clone()
    near[1, 3] += 1e-3
    assert float(kd_loss(near, zt, 2.0, "reverse")) > 0
    huge = torch.tensor([[1e4, -1e4, 0.0]])  # no log of a probability rounded to zero
    assert torch.isfinite(kd_loss(huge, -huge, 1.0, "reverse"))


def test_reverse_kd_gradcheck_float64(rng):
    zs = torch.tensor(rng.normal(size=(3, 5)), requires_grad=True)
    zt = torch.tensor(rng.normal(size=(3, 5)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kd_loss(a, b, 1.7, "reverse"), (zs, zt))


def test_kd_direction_errors_name_the_key():
    with pytest.raises(ValueError, match="kd: must be one of forward, reverse, got 'sideways'"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 1.0, "sideways")
    with pytest.raises(ValueError, match="kd: must be one of forward, reverse, got 'sideways'"):
        DistillationArguments(output_dir="unused", kd="sideways")


# --------------------------------------------------------------------------- configuration


@pytest.fixture(scope="module")
def cls_setup(tmp_path_factory):
    return make_toy_setup(tmp_path_factory.mktemp("cls"), "classification", n_train=48, n_eval=8)


def test_config_keys_and_their_errors(cls_setup, tmp_path):
    with pytest.raises(ConfigError, match=r"^loss\.kd: must be one of 'forward' \| 'reverse', got 'sideways'"):
        config_from_dict(_config(cls_setup, tmp_path / "a", loss={"kd": "sideways"}))
    with pytest.raises(ConfigError, match=r"^loss\.metric: unknown metric 'pdk'.*\(or the loss pkd\)"):
        config_from_dict(_config(cls_setup, tmp_path / "a", loss={"metric": "pdk"}))
    with pytest.raises(ConfigError, match=r"^loss\.projector: pkd needs 'learned'"):
        config_from_dict(_config(cls_setup, tmp_path / "a", loss={"metric": "pkd", "projector": "closed_form"}))
    with pytest.raises(ConfigError, match=r"^geometry\.metrics\[0\]: unknown metric 'pkd'"):  # a loss, not a metric
        config_from_dict(_config(cls_setup, tmp_path / "a", geometry={"metrics": ["pkd"]}))
    cfg = config_from_dict(_config(cls_setup, tmp_path / "a", loss={"metric": "pkd", "kd": "reverse"}))
    import yaml

    printed = yaml.safe_load(config_yaml(cfg))["loss"]
    assert printed["kd"] == "reverse" and printed["metric"] == "pkd"
    default = yaml.safe_load(config_yaml(config_from_dict(_config(cls_setup, tmp_path / "b"))))["loss"]
    assert default["kd"] == "forward"


# --------------------------------------------------------------------------- tiny real runs


def test_pkd_run_with_a_narrower_student_trains_saves_and_restores_its_projectors(cls_setup, tmp_path):
    """Student 16 wide, teacher 32: one learned projector per pair, relative alpha, feature_loss.pt in the
    checkpoint equal to the trained projectors (which moved), and restored on resume."""
    cfg = config_from_dict(_config(
        cls_setup, tmp_path / "run",
        loss={"metric": "pkd", "pooling": "cls", "alpha": 1.0, "alpha_relative": True},
        student={"keep_every": None, "num_layers": 2, "hidden_size": 16},
        trainer={"max_steps": 12, "learning_rate": 5e-3, "lr_scheduler_type": "constant", "save_steps": 12}))
    trainer, _ = build_trainer(cfg, verbose=False)
    assert set(trainer.feature_loss.projectors) == {"s1_t2", "s2_t4"}
    start = {k: v.clone() for k, v in trainer.feature_loss.state_dict().items()}
    info = json.loads((tmp_path / "run" / "alpha.json").read_text())
    assert 0 < info["feature_loss_init"] <= 2 * 4  # two pairs, each in [0, 4]
    assert info["alpha_eff"] == pytest.approx(1.0 / info["feature_loss_init"])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(np.isfinite(h["loss_feature"]) for h in logs)
    first, last = np.mean([h["loss_feature"] for h in logs[:3]]), np.mean([h["loss_feature"] for h in logs[-3:]])
    assert last < first, [h["loss_feature"] for h in logs]
    saved = torch.load(tmp_path / "run" / "checkpoint-12" / FEATURE_LOSS_FILE, weights_only=True)
    trained = trainer.feature_loss.state_dict()
    assert set(saved) == set(trained) == set(start)
    for k in saved:
        assert torch.equal(saved[k], trained[k].cpu()) and not torch.equal(saved[k], start[k].cpu()), k
    again, _ = build_trainer(dataclasses.replace(cfg, output_dir=str(tmp_path / "again")), verbose=False)
    again._load_from_checkpoint(str(tmp_path / "run" / "checkpoint-12"))
    for k, v in again.feature_loss.state_dict().items():
        assert torch.equal(v.cpu(), saved[k]), k


def _loss_terms_and_logits(trainer, n):
    """The loss terms the trainer logs for its first ``n`` training examples (student in eval mode, no dropout),
    with the batch and the student's and teacher's logits on it."""
    batch = trainer.task.collate([trainer.train_dataset[i] for i in range(n)])
    batch.pop("example_index")
    trainer.model.eval()
    trainer.compute_loss(trainer.model, batch)
    terms = trainer._eval_terms.pop()
    with torch.no_grad():
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        return batch, terms, trainer.model(**inputs).logits, trainer.teacher(**inputs).logits


def test_reverse_kd_in_a_classification_step(cls_setup, tmp_path):
    cfg = config_from_dict(_config(cls_setup, tmp_path / "run", loss={"kd": "reverse", "alpha": 0.0},
                                   student={"keep_every": None, "num_layers": 2, "hidden_size": 16},
                                   trainer={"max_steps": 1, "save_strategy": "no"}))
    trainer, _ = build_trainer(cfg, verbose=False)
    assert trainer.kd == "reverse"
    with torch.no_grad():  # a random tiny model's logits are ~1e-2, where KL is symmetric to second order:
        trainer.teacher.classifier.weight.mul_(300.0)  # a confident teacher makes the two directions differ
    _, terms, zs, zt = _loss_terms_and_logits(trainer, 6)
    zs, zt = zs.double().numpy(), zt.double().numpy()
    T = cfg.loss.temperature
    assert terms["loss_kd"] == pytest.approx(kl_rows_by_hand(zs, zt, T, "reverse"), rel=1e-4)
    assert abs(terms["loss_kd"] - kl_rows_by_hand(zs, zt, T, "forward")) > 0.05 * terms["loss_kd"]


def test_reverse_kd_in_a_tiny_instruction_run(tmp_path):
    """Reverse KL over the response-predicting positions only (the forward term's positions), then training."""
    setup = make_toy_setup(tmp_path / "setup", "instruction", family="llama", n_train=16, n_eval=4)
    cfg = config_from_dict(_config(setup, tmp_path / "run", task="instruction",
                                   loss={"kd": "reverse", "metric": "pkd", "pooling": "last"},
                                   trainer={"max_steps": 6, "save_strategy": "no", "learning_rate": 5e-3},
                                   generation={"max_new_tokens": 3, "num_samples": 2}))
    trainer, _ = build_trainer(cfg, verbose=False)
    with torch.no_grad():  # a confident teacher (the tiny random one's logits are ~0.5, where KL is ~symmetric)
        trainer.teacher.lm_head.weight.mul_(20.0)  # Llama: output embeddings not tied to the input ones
    batch, terms, zs, zt = _loss_terms_and_logits(trainer, 4)
    keep = batch["labels"][:, 1:] != -100  # position j predicts token j + 1: response tokens only
    assert 0 < int(keep.sum()) < int(batch["attention_mask"][:, 1:].sum())
    want = kl_rows_by_hand(zs[:, :-1][keep].double().numpy(), zt[:, :-1][keep].double().numpy(),
                           cfg.loss.temperature, "reverse")
    assert terms["loss_kd"] == pytest.approx(want, rel=1e-3, abs=1e-7)
    fwd = kl_rows_by_hand(zs[:, :-1][keep].double().numpy(), zt[:, :-1][keep].double().numpy(),
                          cfg.loss.temperature, "forward")
    assert abs(terms["loss_kd"] - fwd) > 0.05 * terms["loss_kd"]  # the reverse direction, not the forward one
    trainer.model.train()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 6 and all(np.isfinite(h["loss_kd"]) and h["loss_kd"] >= 0 for h in logs)
    assert np.mean([h["loss"] for h in logs[-2:]]) < np.mean([h["loss"] for h in logs[:2]])

