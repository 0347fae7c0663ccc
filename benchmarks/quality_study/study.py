"""The protocol's stages (``teacher`` → ``lr`` → ``sweep`` → ``pilot`` → ``power`` → ``main`` → ``confirm_power`` →
``confirm`` → ``report``), resumable.

Every run is looked up in the run log first (:class:`~.runs.RunLog`, keyed by its :class:`~.runs.RunSpec`): a
restarted stage trains only what is missing. Decisions (chosen α per loss, the comparator, the seed count) are
written to ``<work>/decisions.json`` once the runs they rest on are complete, and are *frozen*: a later
invocation reads them instead of recomputing, so nothing decided on dev can change after test scores exist.
With ``execute=False`` (``--plan``) nothing is trained: each missing run is listed with its estimated seconds,
and decisions that need missing runs are assumed (the initial grid, the preset's ``min_seeds``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .alpha_grid import choose, grid_ratio, is_interior, next_alpha
from .data import Prepared, prepare
from .power import sd_upper_limit, seeds_for_power
from .regimes import COMPARATOR_CANDIDATES, GEOMETRIC, METHODS, PRESETS, Regime
from .runs import TEST_STAGES, RunLog, RunSpec, epoch_steps, run_one, setup_key

STAGES = ("teacher", "lr", "sweep", "pilot", "power", "main", "confirm_power", "confirm", "report")
SWEEP_SEED0, PILOT_SEED0, CONFIRM_SEED0 = 100, 200, 1000  # sweep 100.., pilot 200.., main 0.., confirmation 1000..


class Study:
    """One preset's study in the work folder ``work`` (see the module docstring)."""

    def __init__(self, preset_name: str, work: Path, *, execute: bool = True, log: Callable[[str], None] = print,
                 limit_regimes: int | None = None, worker: bool = False) -> None:
        self.name, self.preset, self.work = preset_name, PRESETS[preset_name], Path(work)
        self.regimes: list[Regime] = self.preset.regimes[:limit_regimes]
        self.limit_regimes = limit_regimes
        self.execute, self.log, self.worker = execute, log, worker  # worker: trains runs for .pool, decides nothing
        self.work.mkdir(parents=True, exist_ok=True)
        self.reload_runs()
        self.pending: list[tuple[str, RunSpec, float]] = []  # (stage, spec, estimated seconds): --plan
        self._prepared: dict[str, Prepared] = {}
        self.decisions: dict[str, Any] = self._read_decisions()

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    def reload_runs(self) -> None:
        """Read the run log again (worker processes append to it); only the deciding process repairs it."""
        self.runs = RunLog(self.work / "runs.jsonl", repair=self.execute and not self.worker)

    def _read_decisions(self) -> dict[str, Any]:
        path = self.work / "decisions.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _decide(self, regime: str, key: str, value: Any) -> Any:
        """Record a decision (atomically) unless one is recorded already; the recorded one."""
        from repgeo.files import atomic_write_bytes

        mine = self.decisions.setdefault(regime, {})
        if key not in mine and self.execute and not self.worker:
            mine[key] = value
            mine.setdefault("decided_at", {})[key] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            atomic_write_bytes(self.work / "decisions.json", (json.dumps(self.decisions, indent=1) + "\n").encode())
        return mine.get(key, value)

    def prepared(self, r: Regime) -> Prepared:
        if r.name not in self._prepared:
            self._prepared[r.name] = prepare(self.preset, r, self.work, self.log, references=not self.worker)
            p = self._prepared[r.name]
            if self.worker:
                return p
            self._record_teacher(r, p)
            self._decide(r.name, "references", {"teacher": p.teacher_scores, "student_init": p.student_init_scores,
                                                "primary": p.primary, "n": p.n, "teacher_seconds": p.teacher_seconds,
                                                "labels": len(p.labels) if p.labels else None})
        return self._prepared[r.name]

    def _record_teacher(self, r: Regime, p: Prepared) -> None:
        """Append the teacher's fingerprint and scores to ``<work>/teachers.jsonl`` the first time this teacher is
        seen: a teacher fine-tuned again in another session (another machine) need not be bit-identical, and each
        run row records the fingerprint of the teacher it was distilled from (``"teacher"``)."""
        path = self.work / "teachers.jsonl"
        seen = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
        fingerprint = p.teacher_fingerprint
        if self.execute and not any(x["regime"] == r.name and x["fingerprint"] == fingerprint for x in seen):
            with path.open("a") as f:
                f.write(json.dumps({"regime": r.name, "fingerprint": fingerprint, "scores": p.teacher_scores,
                                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")

    def current_rows(self) -> list[dict[str, Any]]:
        """The recorded runs of this preset's regimes under their current settings (:func:`~.runs.setup_key`)."""
        setups = {r.name: setup_key(r, self.preset) for r in self.regimes}
        return [x for x in self.runs.rows.values() if setups.get(x["regime"]) == x.get("setup")]

    def spec(self, r: Regime, method: str, seed: int, alpha: float, stage: str, lr: float | None = None) -> RunSpec:
        """Run ``method`` at ``seed`` and relative α ``alpha`` in ``stage``, at learning rate ``lr`` (default: the
        regime's, :meth:`lr_of`)."""
        return RunSpec(r.name, method, seed, alpha, stage, setup_key(r, self.preset), lr or self.lr_of(r))

    def lr_of(self, r: Regime) -> float:
        """The students' learning rate: the ``lr`` stage's decision; before it (``--plan``) the grid's middle
        point; without a grid the preset's ``lr``."""
        grid = sorted(self.preset.lr_grid)
        if not grid:
            return self.preset.lr
        return float(self.decisions.get(r.name, {}).get("lr", {}).get("lr", grid[len(grid) // 2]))

    def do(self, r: Regime, spec: RunSpec) -> dict[str, Any] | None:
        """The run's row: from the log, or trained now (``execute``); None when it is missing (``--plan``)."""
        if spec.key in self.runs.rows:
            return self.runs.rows[spec.key]
        if not self.execute:
            self.pending.append((spec.stage, spec, self.estimate(r, spec)))
            return None
        row = run_one(self.preset, self.prepared(r), spec, self.work)
        self.runs.add(row)
        self.log(f"  {r.name} {spec.stage} {spec.method} seed {spec.seed} α {spec.alpha:g}: dev {row['dev_acc']:.3f}"
                 + (f" test {row['test_acc']:.3f}" if spec.stage in TEST_STAGES else "")
                 + f" ({row['epochs']} epochs, plateau at step {row['steps_to_plateau']}, "
                 f"{row['sec_per_step']:.2f} s/step, {row['run_seconds']:.0f} s)")
        return row

    def estimate(self, r: Regime, spec: RunSpec) -> float:
        """Estimated seconds of a run: steps (epochs as measured in this regime's runs, else ``patience + 2``)
        × seconds per step (measured median, else the regime's), plus per-run overhead (measured in the same
        stage, else the regime's ``run_overhead`` and, in the main stage, ``geometry_seconds``)."""
        rows = [x for x in self.runs.rows.values() if x["regime"] == r.name]
        per_step = float(np.median([x["sec_per_step"] for x in rows])) if rows else r.sec_per_step
        epochs = float(np.mean([x["epochs"] for x in rows])) if rows else min(r.max_epochs, r.patience + 2)
        steps = epochs * epoch_steps(r, self.preset)
        same = [x for x in rows if x["stage"] == spec.stage]
        if same:
            overhead = float(np.mean([x["run_seconds"] - x["steps"] * x["sec_per_step"] for x in same]))
        else:
            geometry = spec.stage == "main" and spec.seed < self.preset.min_seeds
            overhead = r.run_overhead + (r.geometry_seconds if geometry else 0.0)
        return steps * per_step + overhead

    # -- stages --------------------------------------------------------------------------------------------------
    def teacher(self) -> None:
        """Fine-tune (or load) each regime's teacher, build its student and score both."""
        if self.execute:
            for r in self.regimes:
                self.prepared(r)

    def _sweep_seeds(self) -> range:
        return range(SWEEP_SEED0, SWEEP_SEED0 + self.preset.sweep_seeds)

    def _dev_means(self, r: Regime, method: str, alpha: float, seeds: range, lr: float | None = None) -> float | None:
        rows = [self.do(r, self.spec(r, method, s, alpha, "sweep", lr)) for s in seeds]
        return None if any(x is None for x in rows) else float(np.mean([x["dev_acc"] for x in rows]))

    def lr(self) -> None:
        """Per regime with a ``lr_grid``: KD on the sweep seeds at every learning rate of the grid (dev), extended
        like the α grid (:mod:`.alpha_grid`, ratio of the grid) until the best mean is interior; the choice is
        decided before any feature loss runs, and every later run uses it (KD's sweep runs at it are reused)."""
        if not self.preset.lr_grid:
            return
        for r in self.regimes:
            grid, means, added = sorted(self.preset.lr_grid), {}, 0
            ratio = grid_ratio(grid)
            for x in grid:
                means[x] = self._dev_means(r, "kd", 0.0, self._sweep_seeds(), x)
            while all(v is not None for v in means.values()):
                nxt = next_alpha(means, ratio, added=added, max_extend=self.preset.max_extend)
                if nxt is None:
                    d = self._decide(r.name, "lr", {"means": {f"{x:g}": v for x, v in sorted(means.items())},
                                                    "lr": choose(means), "interior": is_interior(means)})
                    self.log(f"{r.name} learning rate: {d['means']} -> {d['lr']:g}"
                             + ("" if d["interior"] else " (at the grid's edge: extension limit reached)"))
                    break
                means[nxt] = self._dev_means(r, "kd", 0.0, self._sweep_seeds(), nxt)
                added += 1

    def _sweep_loss(self, r: Regime, m: str) -> dict[str, Any] | None:
        """The α grid of one feature loss, extended until its choice is interior (:mod:`.alpha_grid`)."""
        grid, means = sorted(self.preset.alpha_grid), {}
        ratio = grid_ratio(grid)
        for a in grid:
            means[a] = self._dev_means(r, f"kd+{m}", a, self._sweep_seeds())
        added = 0
        while all(v is not None for v in means.values()):
            nxt = next_alpha(means, ratio, added=added, max_extend=self.preset.max_extend)
            if nxt is None:
                return {"means": {str(a): v for a, v in sorted(means.items())}, "alpha": choose(means),
                        "interior": is_interior(means), "extended": added}
            means[nxt] = self._dev_means(r, f"kd+{m}", nxt, self._sweep_seeds())
            added += 1
        return None

    def sweep(self) -> None:
        """Per regime: the α grid of every feature loss and the reference methods on the sweep seeds (dev); then
        the comparator, chosen on dev among :data:`~.regimes.COMPARATOR_CANDIDATES` at their chosen α."""
        for r in self.regimes:
            refs = ("kd", "rkd") if r.family == "causal" else ("kd",)
            ref_means = {m: self._dev_means(r, m, 0.0, self._sweep_seeds()) for m in refs}
            alphas = {m: self._sweep_loss(r, m) for m in self.preset.feature_methods}
            if any(v is None for v in [*ref_means.values(), *alphas.values()]):
                continue  # decided once every sweep run exists
            alphas = self._decide(r.name, "alpha", alphas)
            for m, a in alphas.items():
                self.log(f"{r.name} α sweep {m}: {a['means']} -> α = {a['alpha']:g}"
                         + ("" if a["interior"] else " (at the grid's edge: extension limit reached)"))
            dev = {**ref_means, **{f"kd+{m}": a["means"][str(a["alpha"])] for m, a in alphas.items()}}
            candidates = {m: v for m, v in dev.items() if m in COMPARATOR_CANDIDATES}
            comparator = self._decide(r.name, "comparator", {"method": max(candidates, key=candidates.get),
                                                             "dev": candidates})
            best = max((m for m in alphas), key=lambda m: dev[f"kd+{m}"])
            self._decide(r.name, "best_feature", best)
            self.log(f"{r.name}: comparator (best non-geometric on dev) = {comparator['method']}")

    def _alpha(self, r: Regime, method: str) -> float:
        """The chosen α of a method's feature loss (``rkd+best``: the best feature loss's), or 0."""
        feature = method.split("+", 1)[1] if "+" in method else None
        if feature is None:
            return 0.0
        d = self.decisions.get(r.name, {})
        if feature == "best":
            feature = d.get("best_feature", GEOMETRIC[0])
        return float(d.get("alpha", {}).get(feature, {}).get("alpha", sorted(self.preset.alpha_grid)[
            len(self.preset.alpha_grid) // 2]))

    def _resolve(self, r: Regime, method: str) -> str:
        if method.endswith("+best"):
            return method.replace("best", self.decisions.get(r.name, {}).get("best_feature", GEOMETRIC[0]))
        return method

    def _primary_pairs(self, r: Regime) -> list[tuple[str, str]]:
        comparator = self.decisions.get(r.name, {}).get("comparator", {}).get("method", "kd")
        return [(f"kd+{g}", comparator) for g in GEOMETRIC if g in self.preset.feature_methods]

    def pilot(self) -> None:
        """``pilot_seeds`` more seeds (dev only) of the primary comparison's methods at the chosen α."""
        for r in self.regimes:
            methods = dict.fromkeys(m for pair in self._primary_pairs(r) for m in pair)
            for s in range(PILOT_SEED0, PILOT_SEED0 + self.preset.pilot_seeds):
                for m in methods:
                    self.do(r, self.spec(r, m, s, self._alpha(r, m), "pilot"))

    def _pilot_rows(self, r: Regime, method: str) -> dict[int, float]:
        a = self._alpha(r, method)
        setup = setup_key(r, self.preset)
        return {x["seed"]: x["dev_acc"] for x in self.runs.rows.values()
                if x["regime"] == r.name and x["method"] == method and x["stage"] in ("sweep", "pilot")
                and x["alpha"] == a and x.get("setup") == setup and x.get("lr") == self.lr_of(r)}

    def _comparisons(self) -> int:
        """The primary comparisons of the preset: the family the seeds are sized for and Holm corrects over."""
        return sum(len(self._primary_pairs(r)) for r in self.regimes)

    def _seeds_for(self, sd: float, df: int, low: int, high: int) -> tuple[float, int, int]:
        """``(upper, needed, seeds)``: the ``sd_confidence`` upper limit of a paired SD ``sd`` with ``df`` degrees of
        freedom, the seeds 80 % power at ``delta`` needs there (:func:`~.power.seeds_for_power`, 2 when the SD is 0),
        and that count bounded to [low, high]."""
        pre = self.preset
        upper = sd_upper_limit(sd, df, pre.sd_confidence)
        needed = (seeds_for_power(upper, delta=pre.delta, level=pre.level, comparisons=self._comparisons(),
                                  power=pre.power) if upper > 0 else 2)
        return upper, needed, int(min(max(needed, low), high))

    def power(self) -> None:
        """Per regime: the paired SD of the primary comparisons on the sweep + pilot seeds (dev), and the seeds for
        80 % power to detect ``delta`` at the Holm-corrected level over every primary comparison of the preset."""
        pre = self.preset
        for r in self.regimes:
            if "comparator" not in self.decisions.get(r.name, {}):
                continue
            sds, pairs = [], 0
            for a, b in self._primary_pairs(r):
                xa, xb = self._pilot_rows(r, a), self._pilot_rows(r, b)
                seeds = sorted(set(xa) & set(xb))
                sds.append(float(np.std([xa[s] - xb[s] for s in seeds], ddof=1)) if len(seeds) > 1 else math.nan)
                pairs = len(seeds)
            if pairs < pre.sweep_seeds + pre.pilot_seeds or any(math.isnan(x) for x in sds):
                continue  # pilot incomplete
            sd = max(sds)
            upper, needed, seeds = self._seeds_for(sd, pairs - 1, pre.min_seeds, pre.max_seeds)
            d = self._decide(r.name, "power", {"paired_sd": sd, "paired_sd_upper": upper,
                                               "sd_confidence": pre.sd_confidence, "pairs": pairs,
                                               "comparisons": self._comparisons(), "level": pre.level,
                                               "delta": pre.delta, "power": pre.power, "seeds_needed": needed,
                                               "seeds": seeds, "capped": needed > seeds})
            self.log(f"{r.name}: paired SD {100 * sd:.2f} points over {pairs} seeds (upper limit "
                     f"{100 * upper:.2f}) -> {needed} seeds needed, running {d['seeds']}")

    def methods(self, r: Regime) -> list[str]:
        extra = ["rkd", "rkd+best"] if r.family == "causal" else []
        return [m for m in (*METHODS, *extra) if "+" not in m or m.split("+")[1] in (
            *self.preset.feature_methods, "best")]

    def _prior_seeds(self) -> int:
        """The seed count ``--plan`` assumes before the pilot: from the preset's ``prior_sd``."""
        pre = self.preset
        n = seeds_for_power(pre.prior_sd, delta=pre.delta, level=pre.level, comparisons=self._comparisons(),
                            power=pre.power)
        return int(min(max(n, pre.min_seeds), pre.max_seeds))

    def main(self) -> None:
        """Dev and test scores and final geometry: the primary comparison's methods (the geometric losses and the
        comparator) on the decided seeds, then every other method on the first ``min_seeds`` of them (the table
        and the secondary comparisons); seeds in order, primary methods first, so a stopped stage has complete
        seeds of the primary comparison."""
        for r in self.regimes:
            d = self.decisions.get(r.name, {})
            if "power" not in d and self.execute:
                raise RuntimeError(f"{r.name}: no seed count decided yet; run the stages up to 'power' first")
            seeds = d.get("power", {}).get("seeds") or self._prior_seeds()
            primary = list(dict.fromkeys(m for pair in self._primary_pairs(r) for m in pair))
            others = [m for m in dict.fromkeys(self._resolve(r, m) for m in self.methods(r)) if m not in primary]
            for s in range(seeds):
                for m in primary:
                    self.do(r, self.spec(r, m, s, self._alpha(r, m), "main"))
            for s in range(min(seeds, self.preset.min_seeds)):
                for m in others:
                    self.do(r, self.spec(r, m, s, self._alpha(r, m), "main"))

    def confirm_power(self) -> None:
        """Per regime, once every primary seed of the main stage exists: whether a confirmation runs, and on how
        many fresh seeds. None when every primary verdict is conclusive (significant, or the family-wise interval
        excludes +1 point) or the preset allows none (``confirm_max_seeds`` = 0); otherwise sized like the power
        stage (same δ, level, family and power) from the largest paired SD the main stage observed **on test**, at
        its ``sd_confidence`` upper limit (n − 1 degrees of freedom). Only the SDs are read, not which way the
        differences went, and the confirmation is analysed alone, on seeds no earlier stage used, so its verdict
        is not a second look at the main stage's data."""
        from .statistics import summarize

        pre = self.preset
        summary = summarize(self.current_rows(), self.decisions, delta=pre.delta, level=pre.level)
        for r in self.regimes:
            d = self.decisions.get(r.name, {})
            tests = summary.get(r.name, {}).get("tests", {})
            seeds = d.get("power", {}).get("seeds")
            if not tests or seeds is None or any(t["n"] < seeds for t in tests.values()):
                self.log(f"{r.name}: the main stage's primary seeds are incomplete; no confirmation decided yet")
                continue
            inconclusive = [name for name, t in tests.items() if t["verdict"] == "inconclusive"]
            sd = max(t["sd"] for t in tests.values())
            decision: dict[str, Any] = {"inconclusive": inconclusive, "main_seeds": seeds, "paired_sd_test": sd,
                                        "seeds": 0, "seed0": CONFIRM_SEED0}
            if inconclusive and pre.confirm_max_seeds > 0 and sd > 0:
                upper, needed, fresh = self._seeds_for(sd, seeds - 1, 2, pre.confirm_max_seeds)
                decision.update(paired_sd_test_upper=upper, sd_confidence=pre.sd_confidence, seeds_needed=needed,
                                seeds=fresh, capped=needed > pre.confirm_max_seeds)
            d = self._decide(r.name, "confirm_power", decision)
            self.log(f"{r.name}: " + (f"confirmation on {d['seeds']} fresh seeds (paired test SD "
                                      f"{100 * d['paired_sd_test']:.2f} points)" if d["seeds"] else
                                      "no confirmation (" + ("the main stage is conclusive" if not inconclusive
                                                             else "the preset allows none") + ")"))

    def confirm(self) -> None:
        """The primary methods on the decided fresh seeds (``confirm_power``), scored on dev and test."""
        for r in self.regimes:
            c = self.decisions.get(r.name, {}).get("confirm_power")
            if c is None:
                if self.execute:
                    self.log(f"{r.name}: no confirmation decided yet; run the stages up to 'confirm_power' first")
                continue
            primary = list(dict.fromkeys(m for pair in self._primary_pairs(r) for m in pair))
            for s in range(c["seed0"], c["seed0"] + c["seeds"]):
                for m in primary:
                    self.do(r, self.spec(r, m, s, self._alpha(r, m), "confirm"))

    def run(self, stages: list[str], *, workers: int = 1, threads: int = 1) -> None:
        """Run ``stages`` in order; with ``workers`` > 1 each stage's runs are trained by a pool of processes
        sharing ``threads`` (:mod:`.pool`), the decisions still made here."""
        from .pool import PARALLEL_STAGES, Pool

        pool = Pool(self, workers, threads) if workers > 1 and set(stages) & set(PARALLEL_STAGES) else None
        try:
            for stage in stages:
                if stage != "report":
                    self.log(f"stage {stage}")
                    if pool is not None and stage in PARALLEL_STAGES:
                        pool.train_stage(stage)
                    getattr(self, stage)()
        finally:
            if pool is not None:
                pool.close()


def stages_to_run(stage: str | None, until: str | None) -> list[str]:
    """``--stage S``: S alone; ``--until S``: every stage up to S; neither: all."""
    if stage is not None and until is not None:
        raise ValueError("give --stage or --until, not both")
    for name, value in (("--stage", stage), ("--until", until)):
        if value is not None and value not in STAGES:
            raise ValueError(f"{name} must be one of {', '.join(STAGES)}, got {value!r}")
    if stage is not None:
        return [stage]
    return list(STAGES[: STAGES.index(until) + 1]) if until else list(STAGES)
