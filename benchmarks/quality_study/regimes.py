"""The study's regimes (task + student + training length), presets and methods."""

from __future__ import annotations

from dataclasses import dataclass

FEATURE_METHODS = ("proj_mse", "cka", "procrustes", "fg")
GEOMETRIC = ("procrustes", "fg")
METHODS = ("ft", "kd", *(f"kd+{m}" for m in FEATURE_METHODS))


@dataclass
class Regime:
    """One task + student + training length.

    ``family="encoder"``: ``task`` is a classification set, the teacher MiniLM, the student ``keep_every`` or
    ``narrow_width``. ``family="causal"``: ``task`` is ``+``-joined classification sets templated into instruction
    tasks (:func:`repgeo.assets.study.instruction_records`), ``heldout`` a set held out as an unseen task, the
    teacher SmolLM2-135M-Instruct (``teacher="toy"``: a tiny random Llama, for ``--quick``) fine-tuned on the
    instructions, the student ``num_layers`` of its blocks (evenly spread, first and last kept). ``n_*`` are
    totals over the tasks (split evenly); the held-out task gets ``n_test`` examples.
    """

    task: str
    seeds: int
    n_train: int
    n_dev: int
    n_test: int
    student_steps: int
    keep_every: int = 2  # 6-layer teacher -> blocks 0, 2, 4
    narrow_width: int | None = None
    teacher_steps: int = 200
    max_length: int = 64
    family: str = "encoder"
    heldout: str | None = None
    num_layers: int | None = None
    teacher: str = "smollm2"
    batch: int | None = None  # default: the preset's

    @property
    def name(self) -> str:
        if self.family == "causal":
            held = f"->{self.heldout}" if self.heldout else ""
            return f"instruct({self.task}{held})/L{self.num_layers}/{self.student_steps}steps"
        student = f"narrow{self.narrow_width}" if self.narrow_width else f"keep{self.keep_every}"
        return f"{self.task}/{student}/{self.student_steps}steps"


@dataclass
class Preset:
    regimes: list[Regime]
    alpha_grid: tuple[float, ...] = (0.3, 1.0, 3.0)
    sweep_seeds: int = 2
    ablation_seeds: int = 5
    ablations: tuple[tuple[str, str, str], ...] = (("procrustes", "tokens", "constant"),
                                                   ("procrustes", "mean", "linear"), ("fg", "mean", "linear"))
    batch: int = 32
    lr: float = 1e-4
    teacher_lr: float = 5e-5
    causal_teacher_lr: float = 1e-4
    temperature: float = 2.0


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        regimes=[Regime("rotten_tomatoes", 2, 96, 48, 48, 4, teacher_steps=4, max_length=24),
                 Regime("rotten_tomatoes", 1, 64, 16, 16, 4, family="causal", num_layers=2, teacher="toy",
                        teacher_steps=40, max_length=48, batch=8)],
        alpha_grid=(1.0,), sweep_seeds=1, ablation_seeds=1, ablations=(("procrustes", "mean", "linear"),),
        batch=16, causal_teacher_lr=3e-3),
    "cpu": Preset(regimes=[
        Regime("rotten_tomatoes", 10, 3000, 500, 1000, 60, teacher_steps=150),
        Regime("banking77", 5, 4000, 500, 1000, 60, teacher_steps=200),
        Regime("rotten_tomatoes+banking77+hwu64", 5, 600, 60, 150, 60, family="causal", heldout="clinc",
               num_layers=10, teacher_steps=120, max_length=64, batch=8),
    ], alpha_grid=(0.3, 1.0, 3.0), sweep_seeds=1, ablation_seeds=5,
        ablations=(("procrustes", "tokens", "constant"), ("procrustes", "mean", "linear"))),
    # sized for one large GPU but not yet measured on one: on an H200 a student step measured ~20 ms and the pooled
    # feature losses 12-33 ms (latency-bound, benchmarks/loss_overhead.py), so ~50 ms a step, ~20 s a run
    "gpu": Preset(regimes=[
        Regime("rotten_tomatoes", 10, 8927, 1000, 2000, 300, teacher_steps=600, max_length=96),
        Regime("banking77", 10, 9003, 1000, 3080, 300, teacher_steps=800),
        Regime("trec", 5, 4849, 532, 490, 300, teacher_steps=400),
        Regime("rotten_tomatoes", 5, 8927, 1000, 2000, 300, teacher_steps=600, narrow_width=192, max_length=96),
        Regime("rotten_tomatoes+banking77+hwu64", 10, 6000, 300, 600, 300, family="causal", heldout="clinc",
               num_layers=10, teacher_steps=600, max_length=96, batch=32),
        Regime("rotten_tomatoes+banking77+hwu64", 5, 6000, 300, 600, 300, family="causal", heldout="clinc",
               num_layers=6, teacher_steps=600, max_length=96, batch=32),
    ], alpha_grid=(0.1, 0.3, 1.0, 3.0, 10.0), sweep_seeds=2, ablation_seeds=10, batch=64),
}
