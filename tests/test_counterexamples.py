"""Tests of repgeo.counterexamples: certificates across seeds and sizes, bounds, bad parameters, the audit,
the optimisation experiment, figures and the CLI's exit status."""

from __future__ import annotations

import argparse
from dataclasses import replace

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import repgeo.metrics.registry as registry
from repgeo.cli import counterexamples as cli_counterexamples
from repgeo.counterexamples import (
    Claim,
    audit_passed,
    certify_all,
    cka_antiparallel,
    cka_dominant_direction,
    cka_theorem1_prediction,
    cka_translation,
    count_eps_orthogonal,
    format_certificate,
    invariance_audit,
    invariance_matrix,
    make_teacher,
    optimize_student,
    procrustes_fg_equivalence,
    projection_invertible,
    projection_minibatch,
    projection_prediction,
    single_threaded,
)
from repgeo.counterexamples.certificate import CLAIM_COLUMNS
from repgeo.counterexamples.orders import order_sections
from repgeo.metrics import available, get


@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


def _failed(cx):
    return [(c.statement, c.value, c.relation, c.bound, c.tol) for c in cx.claims() if not c.passed]


# ------------------------------------------------------------------------------------- certificates hold

CASES = [
    (projection_invertible, {}),
    (projection_invertible, {"n": 40, "p": 24, "q": 9, "cond": 1.5}),
    (projection_invertible, {"n": 100, "p": 30, "cond": 1000.0}),
    (projection_minibatch, {}),
    (projection_minibatch, {"n": 16, "p": 64, "q": 512, "rank": 2}),
    (projection_minibatch, {"n": 64, "p": 200, "q": 256}),
    (cka_antiparallel, {}),
    (cka_antiparallel, {"n": 10, "p": 3, "q": 1, "m": 2, "eps": 0.01}),
    (cka_antiparallel, {"n": 60, "p": 40, "q": 39, "m": 39, "eps": 3.0}),
    (cka_translation, {}),
    (cka_translation, {"n": 5, "p": 2, "shift": 2.5}),
    (cka_translation, {"n": 200, "p": 64, "shift": 20.0}),
    (cka_dominant_direction, {"n": 300, "p": 16, "q": 12}),
    (procrustes_fg_equivalence, {}),
    (procrustes_fg_equivalence, {"n": 30, "p": 8, "q": 9, "delta": 0.02}),
]


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(("build", "kwargs"), CASES, ids=[f"{b.__name__}-{i}" for i, (b, _) in enumerate(CASES)])
def test_certificate_holds(build, kwargs, seed):
    cx = build(seed=seed, **kwargs)
    assert cx.holds(), _failed(cx)


def test_dominant_direction_default_holds():
    cx = cka_dominant_direction(seed=3)
    assert cx.holds(), _failed(cx)
    curve = cx.data["curve"]
    assert list(curve["ratio"]) == sorted(curve["ratio"])
    assert set(available()) <= set(curve.columns)


def test_certificate_lists_every_metric_on_every_pair():
    cx = cka_antiparallel()
    cert = cx.certify()
    assert list(cert.columns) == ["section", "item", "pair", "value", "relation", "bound", "tol", "passed", "why"]
    metrics = cert[cert["section"] == "metric"]
    for pair in ("a vs c", "b vs c", "a vs b"):
        assert set(metrics.loc[metrics["pair"] == pair, "item"]) == set(available())
    claims = cert[cert["section"] == "claim"]
    assert len(claims) == len(cx.claims()) >= 5
    assert claims["tol"].notna().all() and claims["relation"].isin(["<=", ">=", "=="]).all()
    assert claims["passed"].all()
    assert cx.metric_table().shape == (len(available()), 3)


def test_arrays_follow_the_theory_convention():
    for cx in (projection_invertible(), projection_minibatch(), cka_antiparallel(), procrustes_fg_equivalence()):
        for A in (cx.X, cx.Y):
            np.testing.assert_allclose(A.mean(axis=0), 0, atol=1e-12)
            assert np.linalg.norm(A) == pytest.approx(1.0, abs=1e-12)
    cx = cka_translation()
    assert np.linalg.norm(cx.X) == pytest.approx(1.0) and np.abs(cx.Y.mean(axis=0)).max() > 0.1


def test_claim_relations():
    assert Claim("", 1.0, "<=", 1.0, 0.0).passed
    assert not Claim("", 1.1, "<=", 1.0, 0.05).passed
    assert Claim("", 0.96, ">=", 1.0, 0.05).passed
    assert not Claim("", 0.9, ">=", 1.0, 0.05).passed
    assert Claim("", 1.0 + 1e-13, "==", 1.0, 1e-12).passed
    assert not Claim("", float("nan"), "<=", 1.0, 1.0).passed


# --------------------------------------------------------------------------------- the bounds themselves


def test_projection_margin_grows_with_condition_number():
    conds = [1.1, 2.0, 10.0, 100.0]
    measured = [projection_invertible(n=60, p=20, cond=k) for k in conds]
    dp = [get("procrustes").fn(c.X, c.Y) for c in measured]
    fgv = [get("fg").fn(c.X, c.Y) for c in measured]
    assert np.all(np.diff(dp) > 0) and np.all(np.diff(fgv) > 0)
    for k, d, f in zip(conds, dp, fgv, strict=True):
        # even width: D_P^2 = 2 - sqrt2 (k+1)/sqrt(k^2+1), D_FG = (k^2-1)/((k^2+1) sqrt q)
        assert d**2 == pytest.approx(2 - np.sqrt(2) * (k + 1) / np.sqrt(k * k + 1), abs=1e-9)
        assert f == pytest.approx((k * k - 1) / ((k * k + 1) * np.sqrt(20)), abs=1e-9)
        assert projection_prediction(20, k) == pytest.approx((d, f), abs=1e-9)


def test_projection_fg_identity_and_zero_loss_with_fitted_w():
    cx = projection_invertible(n=50, p=30, q=10, cond=5.0, seed=2)
    W = np.linalg.lstsq(cx.Y, cx.X, rcond=None)[0]
    np.testing.assert_allclose(cx.Y @ W, cx.X, atol=1e-12)
    lhs = np.linalg.norm(cx.X @ cx.X.T - cx.Y @ cx.Y.T)
    assert lhs == pytest.approx(np.linalg.norm(cx.Y @ (W @ W.T - np.eye(10)) @ cx.Y.T), abs=1e-12)
    assert get("proj_mse").fn(cx.X, cx.Y) <= 1e-12


def test_theorem1_bound_and_growth():
    n, m, eps = 100, 10, 0.3
    pred = cka_theorem1_prediction(n, m, eps)
    assert pred["cka_gap"] <= pred["cka_gap_bound"] == pytest.approx(eps**4 * m / n**2)
    assert 1 - pred["cka_gap"] == pytest.approx(0.999996, abs=5e-7)  # PAPER.md's reconstructed number
    cka, proc, fg = get("cka").fn, get("procrustes").fn, get("fg").fn
    by_eps = [cka_antiparallel(n=n, m=m, eps=e) for e in (0.1, 0.3, 1.0)]
    by_m = [cka_antiparallel(n=n, m=k, eps=eps) for k in (1, 10, 40)]
    for series in (by_eps, by_m):
        d = [proc(c.arrays["b"], c.arrays["c"]) for c in series]
        f = [fg(c.arrays["b"], c.arrays["c"]) for c in series]
        gap = [cka(c.arrays["a"], c.arrays["c"]) - cka(c.arrays["b"], c.arrays["c"]) for c in series]
        assert np.all(np.diff(d) > 0) and np.all(np.diff(f) > 0)
        # CKA's change is orders of magnitude below what Procrustes sees in this small-perturbation regime
        assert all(g < 1e-2 * dd for g, dd in zip(gap, d, strict=True))


def test_translation_is_seen_only_on_the_sphere():
    cx = cka_translation(shift=4.0, seed=5)
    sphere = {"center": False, "normalize": "rows"}
    assert get("cka").fn(cx.X, cx.Y) == pytest.approx(1.0, abs=1e-12)
    assert get("procrustes").fn(cx.X, cx.Y, **sphere) > 0.5
    assert get("fg").fn(cx.X, cx.Y, **sphere) > 0.5


def test_procrustes_fg_near_zero_orders_disagree():
    cx = procrustes_fg_equivalence(seed=4)
    proc, fg = get("procrustes").fn, get("fg").fn
    a, b = cx.arrays["near_a"], cx.arrays["near_b"]
    assert proc(cx.X, a) < proc(cx.X, b) and fg(cx.X, a) > fg(cx.X, b)
    sweep = cx.data["orders"]
    assert np.all(np.diff(sweep["procrustes"]) > 0) and np.all(np.diff(sweep["fg"]) > 0)


def test_count_eps_orthogonal():
    I = np.eye(5)
    assert count_eps_orthogonal(I, 0.0) == 10
    assert count_eps_orthogonal(np.ones((4, 3)), 0.5) == 0
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert count_eps_orthogonal(Y, 0.1) == 1
    assert count_eps_orthogonal(Y, 0.8) == 3
    assert count_eps_orthogonal(Y, 0.1, reference=np.array([[1.0, 0], [1, 0.01], [0, 1]])) == 0
    with pytest.raises(ValueError, match="eps"):
        count_eps_orthogonal(Y, -0.1)
    with pytest.raises(ValueError, match="zero"):
        count_eps_orthogonal(np.zeros((3, 2)), 0.1)


# ------------------------------------------------------------------------------------------ bad parameters


@pytest.mark.parametrize(
    ("build", "kwargs", "match"),
    [
        (cka_antiparallel, {"m": 64, "p": 64}, "m must be < p"),
        (cka_antiparallel, {"q": 64, "p": 64}, "q must be < p"),
        (cka_antiparallel, {"eps": -0.1}, "eps must be > 0"),
        (cka_antiparallel, {"n": 1}, "n must be >= 2"),
        (cka_antiparallel, {"n": 7}, "even"),
        (projection_invertible, {"q": 65, "p": 64}, "q must be <= p"),
        (projection_invertible, {"cond": 1.0}, "cond must be > 1"),
        (projection_invertible, {"n": 1}, "n must be >= 2"),
        (projection_invertible, {"n": 10, "p": 20}, "n must be >= q"),
        (projection_minibatch, {"n": 64, "q": 32}, "n <= q"),
        (cka_translation, {"shift": -1.0}, "shift"),
        (cka_translation, {"n": 1}, "n must be >= 3"),
        (cka_dominant_direction, {"ratios": (1.0, 2.0, 5.0)}, "decade"),
        (cka_dominant_direction, {"ratios": (5.0, 2.0, 50.0)}, "increasing"),
        (procrustes_fg_equivalence, {"q": 32, "p": 32}, "q must be > p"),
        (procrustes_fg_equivalence, {"delta": 0.5}, "delta"),
    ],
)
def test_bad_parameters_raise(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_bad_types_raise():
    with pytest.raises(TypeError, match="n must be an integer"):
        cka_antiparallel(n=10.5)
    with pytest.raises(TypeError, match="seed"):
        projection_invertible(seed="a")
    with pytest.raises(ValueError, match="q must be < p"):
        optimize_student(make_teacher(n=20, p=8, rank=4), "cka", q=8)


# ------------------------------------------------------------------------------------------ invariance audit


def test_invariance_audit_declared_invariances_hold():
    table = invariance_audit(n=60)
    assert audit_passed(table)
    assert set(table["metric"]) == set(available())
    changed = table.set_index(["metric", "transform", "level"])["changed"]
    assert changed[("cka", "invertible_linear", "cond 10")] and changed[("cka", "subset_translation", "half the rows")]
    assert not changed[("proj_mse", "invertible_linear", "cond 10")]
    assert changed[("procrustes", "anisotropic_scale", "D in [0.2, 5]")]
    noise = table[table["transform"] == "noise"]
    assert noise["changed"].all()
    wide = invariance_matrix(table)
    assert wide.shape == (len(available()), 10)


def _broken_orthogonal(X, Y=None, **kwargs):
    """A test double: declares orthogonal invariance but reads the student's first column."""
    Y = np.asarray(Y, dtype=float)
    return np.float64(abs(Y[:, 0]).sum() / np.abs(Y).sum())


@pytest.fixture
def broken_registry(monkeypatch):
    spec = replace(get("cka"), name="broken_orth", fn=_broken_orthogonal, kind="similarity")
    monkeypatch.setitem(registry._REGISTRY, "broken_orth", spec)
    return spec


def test_audit_catches_a_false_declaration(broken_registry):
    table = invariance_audit(n=40)
    assert not audit_passed(table)
    bad = table[(table["passed"] == False)]  # noqa: E712
    assert set(bad["metric"]) == {"broken_orth"} and "orthogonal" in set(bad["transform"])
    # the double also shows up in every certificate
    cert = cka_translation(n=20).certify()
    assert "broken_orth" in set(cert["item"])


def test_a_wrong_metric_breaks_the_certificate(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "cka", replace(get("cka"), fn=lambda X, Y=None, **kw: np.float64(0.5)))
    cx = cka_antiparallel()
    assert not cx.holds()
    assert not cx.certify().query("section == 'claim'")["passed"].all()


def test_certify_all_rows_names_and_callback(monkeypatch):
    """One row per claim of every case, in order; a repeated name gets _2; the callback sees each case once with
    its certificate; a broken metric shows as failed rows."""
    cases = [cka_translation(n=20), cka_translation(n=20, seed=1), projection_minibatch(n=8, p=12, q=10)]
    seen = []
    table = certify_all(cases, lambda cx, cert, name: seen.append((cx, len(cert), name)))
    assert [name for _, _, name in seen] == ["cka_translation", "cka_translation_2", "projection_minibatch"]
    assert [cx for cx, _, _ in seen] == cases
    assert all(n == len(cx.certify()) for cx, n, _ in seen)
    expected = [(name, c.statement, c.passed) for cx, _, name in seen for c in cx.claims()]
    assert list(zip(table["counterexample"], table["claim"], table["passed"], strict=True)) == expected
    assert list(table.columns) == CLAIM_COLUMNS and table["passed"].all()
    monkeypatch.setitem(registry._REGISTRY, "cka", replace(get("cka"), fn=lambda X, Y=None, **kw: np.float64(0.5)))
    broken = certify_all(cases[:1])
    assert not broken["passed"].all() and broken["passed"].dtype == bool


def test_format_certificate_puts_sections_before_the_claims():
    cx = cka_translation(n=20)
    text = format_certificate(cx, sections=order_sections(cx))
    assert text.index("metric values:") < text.index("orders of blindness") < text.index("claims:")
    assert text.count("PASS") == len(cx.claims()) and "FAIL" not in text
    assert format_certificate(cx) == format_certificate(cx, cx.certify())
    assert "orders of blindness" not in format_certificate(cx)


# ---------------------------------------------------------------------------------- optimisation experiment


def test_optimization_procrustes_drives_everything_down_and_projection_does_not():
    X = make_teacher(n=80, p=24, rank=6, seed=1)
    geo = optimize_student(X, "procrustes", q=6, steps=150, seed=1, record_every=50)
    proj = optimize_student(X, "proj_mse", q=6, steps=150, seed=1, record_every=50)
    h0, g, p_ = geo.history.iloc[0], geo.final, proj.final
    assert list(geo.history["step"]) == [0, 50, 100, 150]
    assert set(available()) | {"loss", "eps_orthogonal", "eps_orthogonal_kept"} <= set(geo.history.columns)
    assert g["procrustes"] < 0.05 and g["fg"] < 0.05 and g["cka"] > 0.99 and g["proj_mse"] < 0.01
    assert p_["proj_mse"] < 0.5 * h0["proj_mse"]
    assert p_["procrustes"] > 0.3  # low projection loss, geometry not matched
    assert geo.student.shape == (80, 6)


def test_optimization_closed_form_projection_runs():
    X = make_teacher(n=40, p=12, rank=4, seed=0)
    res = optimize_student(X, "proj_mse", q=4, steps=30, projection="closed", record_every=30)
    assert res.final["proj_mse"] < res.history.iloc[0]["proj_mse"]
    with pytest.raises(ValueError, match="projection"):
        optimize_student(X, "proj_mse", q=4, steps=1, projection="tinybert")


# ------------------------------------------------------------------------------------------ figures and CLI


def _png_ok(path):
    import matplotlib.image as mpimg

    from repgeo.counterexamples.figures import PIXELS

    img = mpimg.imread(path)
    assert img.shape[:2] == (PIXELS[1], PIXELS[0])
    assert img[..., :3].std() > 0.05  # not a blank image


def _args(tmp_path, **kw):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_counterexamples.add_parser(sub)
    argv = ["counterexamples", "--out", str(tmp_path / "figs"), "--steps", str(kw.get("steps", 10))]
    if kw.get("no_figures"):
        argv.append("--no-figures")
    return parser.parse_args(argv)


def test_cli_passes_prints_tables_and_writes_figures(tmp_path, capsys):
    args = _args(tmp_path)
    assert args.func is cli_counterexamples.run
    assert cli_counterexamples.run(args) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out and "all hold" in out
    assert "Invariance audit" in out and "Synthetic optimisation" in out
    figs = sorted((tmp_path / "figs").glob("*.png"))
    names = {f.stem for f in figs}
    assert {"projection_invertible", "projection_minibatch", "cka_antiparallel", "cka_translation",
            "cka_dominant_direction", "procrustes_fg", "invariance_audit", "optimization", "orders"} <= names
    assert "orders of blindness" in out and "sqrt(2(1 - CKA))" in out
    for f in figs:
        _png_ok(f)


def test_cli_exit_status_reflects_a_broken_claim(tmp_path, capsys, broken_registry):
    assert cli_counterexamples.run(_args(tmp_path, steps=0, no_figures=True)) == 1
    out = capsys.readouterr().out
    assert "broken_orth declares orthogonal-invariance" in out and "FAILED" in out
    assert not (tmp_path / "figs").exists()


def test_converged_optima_with_an_over_complete_teacher():
    """Teacher of rank 8 > q = 3 (unit Frobenius, singular values sigma): Procrustes and CKA are both maximised
    by the teacher's top-q part (student singular values proportional to sigma), so D_P = sqrt(2 - 2 sqrt(sum_{
    i<=q} sigma_i^2)) for both; FG's optimum shifts the top-q eigenvalues by c = (1 - sum_{i<=q} sigma_i^2)/q:
    D_FG^2 = q c^2 + sum_{i>q} sigma_i^4. The plateau criterion stops every run before the cap."""
    X = make_teacher(n=40, p=12, rank=8, seed=1)
    s, q = np.linalg.svd(X, compute_uv=False), 3
    dp = np.sqrt(2 - 2 * np.sqrt((s[:q] ** 2).sum()))
    c = (1 - (s[:q] ** 2).sum()) / q
    dfg = np.sqrt(q * c * c + (s[q:] ** 4).sum())
    runs = {m: optimize_student(X, m, q=q, steps=3000, seed=1, record_every=1000, plateau_window=50,
                                plateau_rtol=1e-8, record_metrics=["procrustes", "fg"], snapshot_steps=(50,),
                                snapshot_seconds=(1e-4, 1e4))
            for m in ("procrustes", "cka", "fg")}
    for m, r in runs.items():
        assert r.converged_step is not None and r.converged_step % 50 == 0 and r.converged_step < 3000, m
        assert r.final["step"] == r.converged_step
        assert set(r.snapshots) == {"step=50", "seconds=0.0001", "seconds=10000"}
        np.testing.assert_array_equal(r.snapshots["seconds=10000"], r.student)  # budget never reached
        assert np.all(np.diff(r.history["seconds"]) > 0)
    assert runs["procrustes"].final["procrustes"] == pytest.approx(dp, abs=1e-8)
    assert runs["cka"].final["procrustes"] == pytest.approx(dp, abs=1e-8)
    assert runs["fg"].final["fg"] == pytest.approx(dfg, abs=1e-8)
    assert runs["fg"].final["procrustes"] > dp + 1e-3  # a different optimum
    with pytest.raises(ValueError, match="plateau_window"):
        optimize_student(X, "fg", q=q, steps=10, plateau_window=0)
