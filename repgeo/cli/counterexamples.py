"""repgeo counterexamples: build and certify the theory's counterexamples, audit the invariances, run the
synthetic optimisation experiment, print every table, write the figures, and exit non-zero if any claim fails.

Exit status: 0 when every certificate claim and every declared invariance holds, 1 otherwise. The optimisation
experiment is reported (its outcome is empirical, not a theorem) and does not affect the status.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import RawFormatter, count

DEFAULT_OUT = "counterexamples-figures"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``counterexamples`` subcommand to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "counterexamples",
        help="build and certify the theory's counterexamples (status 1 if a claim fails)",
        description=__doc__,
        formatter_class=RawFormatter,
    )
    _arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG figures")
    parser.add_argument("--no-figures", action="store_true", help="do not write figures")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every construction")
    parser.add_argument("--steps", type=count(0), default=300,
                        help="Adam steps of the optimisation experiment (0 skips it)")


def run(args: argparse.Namespace) -> int:
    """Run everything; return 0 if every claim holds, 1 otherwise."""
    from repgeo.counterexamples import single_threaded

    with single_threaded():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    out = None if args.no_figures else Path(args.out)
    n_claims, n_failed = _certificates(args.seed, out)
    n_declared, n_broken = _invariances(args.seed, out)
    if args.steps > 0:
        _optimisation(args.steps, args.seed, out)
    n_claims, n_failed = n_claims + n_declared, n_failed + n_broken
    status = "all hold" if n_failed == 0 else f"{n_failed} FAILED"
    print(f"claims checked: {n_claims}, {status}")
    if out is not None:
        print(f"figures written to {out}/")
    return 0 if n_failed == 0 else 1


def _certificates(seed: int, out: Path | None) -> tuple[int, int]:
    """Print every construction's certificate (with its orders of blindness); figures into ``out``. Returns the
    numbers of claims checked and failed."""
    import pandas as pd

    from repgeo.counterexamples import all_counterexamples, certify_all, format_certificate
    from repgeo.counterexamples.orders import order_sections

    cases = all_counterexamples(seed=seed)
    if out is not None:
        from repgeo.counterexamples.figures import plot_counterexample, plot_orders, save

        save(plot_orders([cx for cx in cases if cx.name != "projection_invertible_lowrank"]), out / "orders.png")

    def show(cx: Any, cert: pd.DataFrame, name: str) -> None:
        print(format_certificate(cx, cert, sections=order_sections(cx)), end="\n\n")
        if out is not None:
            save(plot_counterexample(cx), out / f"{name}.png")

    claims = certify_all(cases, show)
    return len(claims), int((~claims["passed"]).sum())


def _invariances(seed: int, out: Path | None) -> tuple[int, int]:
    """Print the invariance audit; its figure into ``out``. Returns the numbers of declared invariances checked
    and violated."""
    from repgeo.counterexamples import audit_passed, invariance_audit, invariance_matrix
    from repgeo.counterexamples.certificate import format_value

    audit = invariance_audit(seed=seed)
    print("== Invariance audit: |change of each metric| under each transform of the student ==")
    print(invariance_matrix(audit).map(lambda v: f"{v:.0e}").to_string())
    declared = audit[audit["declared"] == True]  # noqa: E712
    broken = declared[~declared["passed"].astype(bool)]
    print(f"declared invariances checked: {len(declared)}, violated: {len(broken)}")
    for r in broken.itertuples():
        print(f"  FAIL  {r.metric} declares {r.transform}-invariance but changed by {format_value(r.change)} "
              f"{r.error}")
    print()
    if out is not None:
        from repgeo.counterexamples.figures import plot_invariance, save

        save(plot_invariance(audit), out / "invariance_audit.png")
    assert audit_passed(audit) == broken.empty
    return len(declared), len(broken)


def _optimisation(steps: int, seed: int, out: Path | None) -> None:
    """Run and print the synthetic optimisation experiment (reported, not certified); its figure into ``out``."""
    import pandas as pd

    from repgeo.counterexamples import optimization_experiment, optimization_summary
    from repgeo.counterexamples.certificate import format_value

    results = optimization_experiment(steps=steps, seed=seed)
    summary = optimization_summary(results)
    cols = ["loss", "procrustes", "fg", "cka", "proj_mse", "eps_orthogonal_kept", "teacher_eps_orthogonal"]
    print(f"== Synthetic optimisation (n=200, p=64, over-complete rank-48 teacher, q=16, {steps} Adam steps, one "
          "seed; reported, not certified; benchmarks/synthetic_51.py runs it to convergence over 10 seeds) ==")
    with pd.option_context("display.width", 200):
        print(summary[cols].map(format_value).to_string())
    order = summary["eps_orthogonal_kept"].sort_values(ascending=False)
    print("eps-orthogonal teacher pairs kept, most first: "
          + ", ".join(f"{k} {int(v)}" for k, v in order.items()), end="\n\n")
    if out is not None:
        from repgeo.counterexamples.figures import plot_optimization, save

        save(plot_optimization(results), out / "optimization.png")
