"""The study's regimes (task + teacher + student + training), presets and methods."""

from __future__ import annotations

from dataclasses import dataclass

#: feature losses; "non-geometric" ones are the comparator's candidates, the geometric ones are under test
FEATURE_METHODS = ("proj_mse", "cka", "pkd", "procrustes", "fg")
GEOMETRIC = ("procrustes", "fg")
METHODS = ("ft", "kd", *(f"kd+{m}" for m in FEATURE_METHODS))
#: instruction regimes add MiniLLM-style reverse KL (``loss.kd: reverse``) alone and with the best feature loss
REVERSE = ("rkd", "rkd+best")
#: the comparator ("best non-geometric") is chosen on dev among these, before any test score is computed
COMPARATOR_CANDIDATES = ("kd", "kd+proj_mse", "kd+cka", "kd+pkd", "rkd")


@dataclass
class Regime:
    """One task + teacher + student + training.

    ``family="encoder"``: ``task`` a classification set; ``teacher`` ``"minilm"`` (all-MiniLM-L6-v2) or
    ``"mpnet"`` (all-mpnet-base-v2), fine-tuned on the task; ``student`` ``"derived"`` (teacher blocks 0, k, 2k,
    …: ``keep_every``, or ``narrow_width`` freshly initialised) or ``"pretrained"`` (all-MiniLM-L6-v2, its own
    tokenizer, ``student_layers`` of its 6 blocks evenly spread, first and last kept). ``family="causal"``:
    ``task`` ``+``-joined classification sets templated into instruction tasks, teacher ``"smollm2"`` (``"toy"``:
    a tiny random Llama) fine-tuned on them, the student ``student_layers`` of its blocks. Students train until
    the dev plateau (:mod:`.plateau`: ``patience``, ``max_epochs``). ``sec_per_step`` / ``teacher_sec_per_step``:
    the measured (or, where marked in the preset, estimated) seconds per step, for ``--plan``, with
    ``run_overhead`` and ``geometry_seconds`` (used until the regime has finished runs of its own).
    """

    task: str
    n_train: int
    n_dev: int
    n_test: int
    family: str = "encoder"
    teacher: str = "minilm"
    student: str = "derived"
    keep_every: int = 2
    narrow_width: int | None = None
    student_layers: int | None = None
    teacher_steps: int = 200
    teacher_freeze_embeddings: bool = False
    max_length: int = 64
    max_epochs: int = 8
    patience: int = 1
    batch: int | None = None  # default: the preset's
    sec_per_step: float = 0.5
    teacher_sec_per_step: float = 1.0
    run_overhead: float = 10.0  # seconds a run spends outside training steps (loading, dev scoring)
    geometry_seconds: float = 30.0  # the final geometry of a main-stage run

    @property
    def name(self) -> str:
        if self.family == "causal":
            return f"instruct({self.task})/{self.teacher}->L{self.student_layers}"
        if self.student == "pretrained":
            student = f"minilm-L{self.student_layers or 6}"
        else:
            student = f"narrow{self.narrow_width}" if self.narrow_width else f"keep{self.keep_every}"
        return f"{self.task}/{self.teacher}->{student}"


@dataclass
class Preset:
    """The study's settings: regimes (the first is the primary one), the α grid and its extension, the sweep's
    seeds, the pilot's extra seeds, the power target and the bounds on the main stage's seeds."""

    regimes: list[Regime]
    alpha_grid: tuple[float, ...] = (0.3, 1.0, 3.0)
    max_extend: int = 3
    sweep_seeds: int = 3
    pilot_seeds: int = 2
    min_seeds: int = 5
    max_seeds: int = 40
    delta: float = 0.01  # the effect that matters: 1 point
    prior_sd: float = 0.015  # paired SD assumed by --plan until the pilot has measured it (v1: ~1.5 points)
    power: float = 0.8
    sd_confidence: float = 0.8  # the seeds are sized at this upper confidence limit of the pilot's SD (power.py)
    confirm_max_seeds: int = 0  # fresh seeds a confirmation may take when the main stage is inconclusive (0: none)
    level: float = 0.05
    batch: int = 32
    lr: float = 1e-4  # the students' learning rate when ``lr_grid`` is empty
    lr_grid: tuple[float, ...] = ()  # else chosen on dev with KD on the sweep seeds (the ``lr`` stage)
    teacher_lr: float = 5e-5
    causal_teacher_lr: float = 1e-4
    temperature: float = 2.0
    feature_methods: tuple[str, ...] = FEATURE_METHODS


_GPU = {"run_overhead": 4.0, "geometry_seconds": 8.0}  # estimated on one H200 (not measured)

PRESETS: dict[str, Preset] = {
    # the test's smoke run: the primary regime's pipeline on MiniLM (same tokenizer), tiny sizes
    "quick": Preset(
        regimes=[Regime("rotten_tomatoes", 64, 48, 48, teacher="minilm", student="pretrained", student_layers=2,
                        teacher_steps=4, max_length=24, max_epochs=2)],
        alpha_grid=(1.0,), max_extend=1, sweep_seeds=1, pilot_seeds=1, min_seeds=2, max_seeds=2, batch=16,
        feature_methods=("cka", "pkd", "procrustes")),
    # the primary regime on 2 CPU cores: MPNet teacher (12 x 768) -> pretrained MiniLM truncated to 3 of 6 blocks
    # (384 wide, its own tokenizer). Measured on the shared 2-core machine, 1 thread, load ~3: student step 0.59 s
    # (kd) / 0.61 s (kd+procrustes); MPNet fine-tuning step ~14 s (embeddings frozen). Overheads: estimates.
    "cpu2": Preset(
        regimes=[Regime("rotten_tomatoes", 1500, 500, 1066, teacher="mpnet", student="pretrained", student_layers=3,
                        teacher_steps=150, teacher_freeze_embeddings=True, max_length=64, max_epochs=8, patience=2,
                        sec_per_step=0.4, teacher_sec_per_step=14.0, run_overhead=20.0, geometry_seconds=60.0)],
        alpha_grid=(0.1, 0.3, 1.0), lr_grid=(2.5e-5, 5e-5, 1e-4), sweep_seeds=3, pilot_seeds=2, min_seeds=5,
        max_seeds=30, confirm_max_seeds=80),
    # the primary regime's pipeline (MPNet teacher, MiniLM-L3 student with its own tokenizer) at tiny sizes, every
    # stage: a smoke run of minutes, not a test (it needs the study assets)
    "cpu2-smoke": Preset(
        regimes=[Regime("rotten_tomatoes", 64, 32, 32, teacher="mpnet", student="pretrained", student_layers=3,
                        teacher_steps=2, teacher_freeze_embeddings=True, max_length=32, max_epochs=2)],
        alpha_grid=(1.0,), max_extend=0, sweep_seeds=1, pilot_seeds=1, min_seeds=2, max_seeds=2, batch=16,
        feature_methods=("pkd", "procrustes")),
    # the primary regime at GPU sizes (the full 6-block MiniLM student, 4,000 texts) for ONE H200 session: run with
    # `--workers 8 --threads 16` (8 students share the GPU; each is launch-bound, not compute-bound). Costs are
    # ESTIMATES (no per-run cost measured on a GPU: ~0.03 s a step, 4 s a run outside the steps, 8 s of geometry):
    # --plan gives ~150 runs, ~40 min in one process, ~8 min if 8 workers overlap 5x -- unmeasured, so it resumes
    # across sessions (commit runs.jsonl and decisions.json, as for cpu2)
    "gpu2": Preset(
        regimes=[Regime("rotten_tomatoes", 4000, 1000, 2551, teacher="mpnet", student="pretrained",
                        student_layers=6, teacher_steps=600, max_length=96, max_epochs=8, patience=2,
                        sec_per_step=0.03, teacher_sec_per_step=0.08, **_GPU)],
        alpha_grid=(0.1, 0.3, 1.0), lr_grid=(2.5e-5, 5e-5, 1e-4), sweep_seeds=3, pilot_seeds=2, min_seeds=5,
        max_seeds=30, confirm_max_seeds=80, batch=64),
    # every v2 regime at GPU sizes (the same estimates): hours of one H200, resumable across sessions
    "gpu2-all": Preset(
        regimes=[Regime("rotten_tomatoes", 4000, 1000, 2551, teacher="mpnet", student="pretrained",
                        student_layers=6, teacher_steps=600, max_length=96, max_epochs=6, sec_per_step=0.03,
                        teacher_sec_per_step=0.08, **_GPU),
                 Regime("banking77", 4000, 1000, 3080, teacher="mpnet", student="pretrained", student_layers=6,
                        teacher_steps=900, max_length=64, max_epochs=8, sec_per_step=0.03,
                        teacher_sec_per_step=0.08, **_GPU),
                 Regime("boolq", 4000, 942, 3270, teacher="mpnet", student="pretrained", student_layers=6,
                        teacher_steps=900, max_length=256, max_epochs=6, sec_per_step=0.06,
                        teacher_sec_per_step=0.2, **_GPU),
                 Regime("rotten_tomatoes", 4000, 1000, 2551, teacher="minilm", student="derived", keep_every=2,
                        teacher_steps=600, max_length=96, max_epochs=6, sec_per_step=0.02,
                        teacher_sec_per_step=0.05, **_GPU),
                 Regime("rotten_tomatoes+banking77+hwu64", 6000, 300, 600, family="causal", teacher="smollm2",
                        student_layers=10, teacher_steps=600, max_length=96, max_epochs=4, batch=32,
                        sec_per_step=0.06, teacher_sec_per_step=0.1, **_GPU)],
        alpha_grid=(0.1, 0.3, 1.0), sweep_seeds=3, pilot_seeds=2, min_seeds=5, max_seeds=15, batch=64),
}
