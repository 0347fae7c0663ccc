"""repgeo counterexamples: build and certify the theory's counterexamples, audit the invariances, run the
synthetic optimisation experiment, print every table, write the figures, and exit non-zero if any claim fails.

Exit status: 0 when every certificate claim and every declared invariance holds, 1 otherwise. The optimisation
experiment is reported (its outcome is empirical, not a theorem) and does not affect the status.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

DEFAULT_OUT = "counterexamples-figures"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``counterexamples`` subcommand to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "counterexamples",
        help="build and certify the theory's counterexamples (exit 1 if a claim fails)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the PNG figures (default: {DEFAULT_OUT})")
    parser.add_argument("--no-figures", action="store_true", help="do not write figures")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every construction (default: 0)")
    parser.add_argument("--steps", type=int, default=300,
                        help="Adam steps of the optimisation experiment (default: 300; 0 skips it)")


def _fmt(v: object) -> str:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if f != f:
        return "nan"
    if f == 0:
        return "0"
    return f"{f:.4g}" if 1e-3 <= abs(f) < 1e4 else f"{f:.2e}"


def _format_orders(table: Any, parameter: str, sphere: bool) -> str:
    """One line per distance: its values at the ends of the sweep and its fitted order (or "blind")."""
    from repgeo.counterexamples.orders import DISTANCES, LABELS, orders

    fitted = orders(table)
    where = " on the sphere" if sphere else ""
    lines = [f"orders of blindness{where} ({parameter} from {table['eps'].iloc[0]:g} to {table['eps'].iloc[-1]:g}):"]
    for name in DISTANCES:
        s = fitted[name]
        order = "blind at every order" if s != s else f"order {s:.2f}"
        lines.append(f"  {LABELS[name]:>27s}: {_fmt(table[name].iloc[0])} .. {_fmt(table[name].iloc[-1])}  {order}")
    return "\n".join(lines)


def format_certificate(cx: Any) -> str:
    """A certificate as text: statement, metric table, claims with PASS/FAIL."""
    cert = cx.certify()
    lines = [f"== {cx.title} ==", textwrap.fill(cx.statement, 110), "", "metric values:"]
    table = cx.metric_table()
    lines.append(table.map(_fmt).to_string())
    errors = cert[(cert["section"] == "metric") & (cert["why"] != "")]
    for r in errors.itertuples():
        lines.append(f"  note: {r.item} on {r.pair}: {r.why}")
    for key in ("orders", "orders_sphere"):
        if key in cx.data:
            lines.append(_format_orders(cx.data[key], cx.data["order_parameter"], key == "orders_sphere"))
    lines.append("claims:")
    for r in cert[cert["section"] == "claim"].itertuples():
        mark = "PASS" if r.passed else "FAIL"
        where = f" [{r.pair}]" if r.pair else ""
        lines.append(f"  {mark}  {r.item}{where}: {_fmt(r.value)} {r.relation} {_fmt(r.bound)} "
                     f"(tol {_fmt(r.tol)})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run everything; return 0 if every claim holds, 1 otherwise."""
    from repgeo.counterexamples._core import single_threaded

    with single_threaded():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from repgeo.counterexamples import (
        all_counterexamples,
        audit_passed,
        invariance_audit,
        invariance_matrix,
        optimization_experiment,
        optimization_summary,
    )

    out = None if args.no_figures else Path(args.out)
    if out is not None:
        from repgeo.counterexamples.figures import (
            plot_counterexample,
            plot_invariance,
            plot_optimization,
            plot_orders,
            save,
        )
    n_claims = n_failed = 0
    cases = all_counterexamples(seed=args.seed)
    if out is not None:
        save(plot_orders([cx for cx in cases if cx.name != "projection_invertible_lowrank"]), out / "orders.png")
    for cx in cases:
        print(format_certificate(cx), end="\n\n")
        claims = cx.claims()
        n_claims += len(claims)
        n_failed += sum(not c.passed for c in claims)
        if out is not None:
            save(plot_counterexample(cx), out / f"{cx.name}.png")

    audit = invariance_audit(seed=args.seed)
    print("== Invariance audit: |change of each metric| under each transform of the student ==")
    print(invariance_matrix(audit).map(lambda v: f"{v:.0e}").to_string())
    declared = audit[audit["declared"] == True]  # noqa: E712
    broken = declared[~declared["passed"].astype(bool)]
    n_claims += len(declared)
    n_failed += len(broken)
    print(f"declared invariances checked: {len(declared)}, violated: {len(broken)}")
    for r in broken.itertuples():
        print(f"  FAIL  {r.metric} declares {r.transform}-invariance but changed by {_fmt(r.change)} {r.error}")
    print()
    if out is not None:
        save(plot_invariance(audit), out / "invariance_audit.png")
    assert audit_passed(audit) == broken.empty

    if args.steps > 0:
        results = optimization_experiment(steps=args.steps, seed=args.seed)
        summary = optimization_summary(results)
        cols = ["loss", "procrustes", "fg", "cka", "proj_mse", "eps_orthogonal_kept", "teacher_eps_orthogonal"]
        print(f"== Synthetic optimisation (n=200, p=64, over-complete rank-48 teacher, q=16, {args.steps} Adam "
              "steps, one seed; reported, not certified; benchmarks/synthetic_51.py runs it to convergence over "
              "10 seeds) ==")
        with pd.option_context("display.width", 200):
            print(summary[cols].map(_fmt).to_string())
        order = summary["eps_orthogonal_kept"].sort_values(ascending=False)
        print("eps-orthogonal teacher pairs kept, most first: "
              + ", ".join(f"{k} {int(v)}" for k, v in order.items()), end="\n\n")
        if out is not None:
            save(plot_optimization(results), out / "optimization.png")

    status = "all hold" if n_failed == 0 else f"{n_failed} FAILED"
    print(f"claims checked: {n_claims}, {status}")
    if out is not None:
        print(f"figures written to {out}/")
    return 0 if n_failed == 0 else 1
