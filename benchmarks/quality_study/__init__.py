"""Distillation quality study: geometric feature losses (Procrustes, FG) vs projection-MSE and CKA, on real
labelled data obtainable offline, across tasks and seeds, with an α sweep on validation and paired tests.

    python -m benchmarks.quality_study --preset cpu     # about 2.5 hours on 2 quiet CPU cores (resumable)
    python -m benchmarks.quality_study --preset gpu     # one large GPU; several hours, not yet measured
    python -m benchmarks.quality_study --quick          # the smoke run a test runs (a few minutes on CPU)

(``python benchmarks/distill_quality.py ...`` runs the same.) Modules, one concern each: :mod:`.regimes` (tasks,
students, presets), :mod:`.data` (splits, instruction records, data files), :mod:`.teachers` (teachers, pinned per
regime), :mod:`.runs` (one student per run, the run log), :mod:`.geometry` (the final geometry probe),
:mod:`.statistics` (paired tests, summaries), :mod:`.report` (markdown and plot), :mod:`.study` (the protocol),
:mod:`.__main__` (command line).

Protocol (one *regime* = one task + one student + a training length):

1. Encoder regimes: the teacher, all-MiniLM-L6-v2 with a classification head, is fine-tuned on the task's
   training split (linear-probe initialised head, then the whole model; cached by settings) —
   ``repgeo.demo.teacher``. The student is derived from it (``keep_every``: teacher blocks 0, k, 2k, …; or a
   narrower, freshly initialised copy), its head re-fitted by a linear probe. Scored by test accuracy.
2. Causal regimes (the paper's OPT / instruction-following setting): labelled sets templated into instruction
   tasks (``repgeo.assets.study.instruction_records``: prompt -> the label in words). The teacher,
   SmolLM2-135M-Instruct, is fine-tuned on the training tasks' instructions (response tokens only; cached); the
   student keeps ``num_layers`` of its 30 blocks (evenly spread, first and last kept). Scored by greedy generation:
   ROUGE-L (the table's number) and exact match on held-out examples of the training tasks, and the same on a
   held-out *task* (``heldout``, never trained on). Every method starts from the same student.
3. Methods, through the ``repgeo distill`` engine (``DistillationTrainer``, teacher logits and features cached):
   ``ft`` (task loss only), ``kd`` (+ logit KD, T = 2), ``kd+proj_mse`` / ``kd+cka`` / ``kd+procrustes`` /
   ``kd+fg`` (+ α × feature loss on mean-pooled mapped layers). α is *relative*: divided by the loss's value at
   initialisation, so one grid treats every loss alike (``repgeo.distill.alpha``).
4. α is chosen per feature loss on the validation split of the first regime, with the same grid and seeds for
   every loss, and used in every regime (relative α is what makes it transfer); the test split is used once, for
   the final numbers.
5. Each method runs with ``seeds`` seeds (seed = data order, dropout and the projector's initialisation; the
   student's starting weights are shared). Paired tests across seeds compare each geometric loss with the best
   non-geometric method of the regime (by mean test score), and with projection-MSE and CKA: mean difference
   with a 95 % t-interval, paired t-test and Wilcoxon signed-rank p-values, Cohen's d_z.
6. Ablations on the first regime: token-level instead of pooled features, and a linearly decaying α.
7. Final geometry of every run between mapped teacher and student layers: the audit's bias-aware estimators on
   at least ``max(4 × width, 1000)`` token rows grouped by text, with rows and widths reported (:mod:`.geometry`).

Every finished run is appended to ``<work>/runs.jsonl`` (keyed by its settings), so an interrupted study resumes
where it stopped, with the teacher its recorded runs used (pinned in ``<work>/<regime>/teacher.json``).
Results: ``benchmarks/results/distill_quality[_<preset>].json`` and ``.md``, and a plot.
"""
