"""Distillation quality study v2 (issue #14): does a geometric feature loss (Procrustes, FG) distil a narrower
pretrained student better than the best non-geometric method, with converged students, α chosen on dev and
enough seeds to decide?

    python -m benchmarks.quality_study --preset cpu2 --plan            # pending runs, estimated seconds, total
    python -m benchmarks.quality_study --preset cpu2 --until power     # teacher, α sweep, pilot, seed count
    python -m benchmarks.quality_study --preset cpu2                   # every stage (resumes), then the report
    python -m benchmarks.quality_study --quick                         # the smoke run a test runs
    python -m benchmarks.quality_study --preset cpu2-smoke             # the primary regime's pipeline, tiny sizes

(``python benchmarks/distill_quality.py ...`` runs the same; ``--preset cpu --report`` re-renders the first study's
stored results.) Modules, one concern each: :mod:`.regimes` (regimes, presets, methods), :mod:`.data` (splits,
teacher, student initialisation, scorers), :mod:`.teachers` (teacher settings, the pinned teacher),
:mod:`.plateau` (the stopping rule), :mod:`.runs` (one run, the run log), :mod:`.alpha_grid` (the α grid rule),
:mod:`.power` (seeds for power, Holm, verdicts), :mod:`.geometry` (the final geometry probe), :mod:`.statistics`
(paired tests, summaries), :mod:`.study` (the stages), :mod:`.pool` (a stage's runs in worker processes,
``--workers``), :mod:`.report` (markdown, plot, summary paragraph),
:mod:`.report_v1` (the first study's report), :mod:`.__main__` (command line).

Protocol.

1. **Regimes** (the first of a preset is the *primary* one). Primary: Rotten Tomatoes; teacher
   all-mpnet-base-v2 (12 blocks, 768 wide) fine-tuned on the task (linear warm-up/decay, word embeddings frozen
   on CPU, cached by its settings, ``repgeo.demo.teacher``); student the *pretrained* all-MiniLM-L6-v2 (384 wide:
   d_s < d_t, so the projection-MSE projector is a real 768 × 384 map), truncated to ``student_layers`` of its 6
   blocks (evenly spread, first and last kept) to fit the CPU budget, with its own tokenizer (each model tokenises
   the text itself) and a linear-probe initialised head; mean-pooled features on the uniform layer map. ``gpu2``
   is the primary regime at GPU sizes (6-block student, 4,000 texts); ``gpu2-all`` adds banking77, BoolQ
   (``text`` = question ``[SEP]`` passage, cut to 256 tokens), the v1 same-width contrast (MiniLM teacher → its
   blocks 0, 2, 4) and the instruction regime (SmolLM2-135M-Instruct → 10 of its blocks, ROUGE-L and exact
   match). The v1 held-out-task column (0 for every method) is dropped.
2. **Converged training** (:mod:`.plateau`): AdamW at a constant learning rate after a warm-up of a tenth of an
   epoch; the dev score is measured at every epoch end; training stops after ``patience`` (cpu2: 2) epochs
   without a gain over the best, or at ``max_epochs`` (cpu2: 8); the **best-on-dev weights are kept**. Each run
   records its dev curve, epochs and *steps to the plateau* (the steps at the end of the best epoch). The
   students' **learning rate** is chosen first, on dev (the ``lr`` stage): KD on the sweep seeds at every point
   of the preset's ``lr_grid``, extended like the α grid until the best is interior; every later run uses it.
3. **Methods**: ``ft`` (task loss), ``kd`` (+ KL on the logits, T = 2), ``kd+proj_mse`` (learned projector,
   TinyBERT-style), ``kd+cka``, ``kd+pkd`` (Patient-KD: L2-normalised pooled rows, MSE), ``kd+procrustes``,
   ``kd+fg``; instruction regimes add ``rkd`` (MiniLLM-style reverse KL, ``loss.kd: reverse``) and ``rkd+<the
   best feature loss on dev>`` at that loss's α.
4. **α** (:mod:`.alpha_grid`): relative α (``loss.alpha_relative``: each feature term starts at α); per regime and
   feature loss, a geometric grid (cpu2 / gpu2: 0.1, 0.3, 1 — at α = 1 the pretrained narrow student collapsed with
   Procrustes and Patient-KD in the sizing runs), every point on the same ``sweep_seeds`` (3) seeds, scored on dev;
   the chosen α (best mean dev) must be interior — the grid is extended one point beyond the edge (÷ or × the grid's
   ratio) until it is, at most ``max_extend`` (3) points; a choice left at an edge is flagged. The **comparator**
   ("best non-geometric") is the best on dev among ``kd``, ``kd+proj_mse``, ``kd+cka``, ``kd+pkd`` (and ``rkd``) at
   their chosen α, on the sweep seeds (a feature loss's dev mean at its chosen α carries that choice's optimism; KD
   has no α to choose). These decisions are written to ``<work>/decisions.json`` with a timestamp before the main
   stage exists and are never recomputed.
5. **Power** (:mod:`.power`): the pilot adds ``pilot_seeds`` (2) seeds of the primary methods (Procrustes, FG, the
   comparator) at the chosen α; with the sweep's seeds at that α these are ≥ 5 paired dev differences per primary
   comparison. The larger paired SD of the two, taken at its one-sided 80 % upper confidence limit (``sd_confidence``;
   from 5 pairs ≈ 1.56 × the estimate), gives the seed count: the smallest n with 80 % power to detect a
   1-point paired difference with a two-sided paired t-test at level 0.05 / m, m = the primary comparisons of the
   preset (Holm's strictest step; formula in :mod:`.power`), bounded by ``min_seeds`` and ``max_seeds``
   (recorded as capped). The SD estimate, its upper limit, its pairs and the seed count are in the results, and
   the report's *power check* sets them beside the paired SDs the main stage observed. (The cpu2 decision was
   made from the point estimate, before this rule: 1.5 points from 5 pairs → 25 seeds, where the main runs then
   showed 2–3 points.) The verdicts below stay valid either way (an underpowered comparison ends
   "inconclusive", never falsely conclusive).
6. **Main** (test split, used only here): the primary methods (Procrustes, FG, the comparator) on seeds 0 … n − 1,
   every other method on the first ``min_seeds`` (5) of them (the table, secondary comparisons on their common
   seeds); each run also giving its final geometry
   (:mod:`.geometry`: the audit's bias-aware estimators, ≥ max(4 × width, 1000) rows — token rows with a shared
   tokenizer, one mean-pooled row per text otherwise) and its cost per step (seconds, measured: training time
   less the per-epoch dev scoring, over the steps).
7. **Result** of each primary comparison (geometric loss − comparator, paired by seed): mean difference, 95 %
   t-interval, Holm-adjusted p over all primary comparisons, and a verdict: "significant gain", "significant
   loss", "conclusive: CI excludes +1 point" (read on the family-wise Bonferroni interval, level 0.05 / m, so
   that the m primary intervals hold together), or "inconclusive". Comparisons with projection-MSE, CKA and
   Patient-KD are reported as secondary (unadjusted).
8. **Confirmation** (``confirm_power`` → ``confirm``; presets with ``confirm_max_seeds`` > 0): once the main
   stage's primary seeds are complete, if any primary verdict is inconclusive the primary methods run again on
   fresh seeds (1000 …), as many as 80 % power at 1 point needs at the ``sd_confidence`` upper limit of the
   largest paired SD the main stage observed **on test** (only its spread is read, not the differences' sign or
   size), capped at ``confirm_max_seeds``. The confirmation is analysed alone with the same tests, Holm family and
   verdicts: a new test on new seeds, not a second look at the main stage's data. The main stage's verdicts stay
   as they were; the report shows both.

Stages and resume: ``teacher`` → ``lr`` → ``sweep`` → ``pilot`` → ``power`` → ``main`` → ``confirm_power`` →
``confirm`` → ``report`` (``--stage S``
runs S alone, ``--until S`` every stage up to S); every finished run is appended (flushed, fsynced) to
``<work>/runs.jsonl``, keyed by its settings (method, seed, α, stage, and a hash of the regime's and preset's
settings other than the cost estimates: an edited preset does not reuse old runs), so a killed command restarted
with the same arguments trains only what is missing; a work folder is locked while a study runs in it; the teacher a
regime's runs used is pinned (``<work>/<regime>/teacher.json``). ``--plan`` lists every pending run with its
estimated seconds (measured seconds per step of the regime's finished runs, else the preset's) and the total.
Results: ``benchmarks/results/distill_quality_v2_<preset>.json`` / ``.md`` / ``.png``.
"""
