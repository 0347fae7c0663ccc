"""``DistillationTrainer``: a ``transformers.Trainer`` whose loss distils a frozen teacher into the student.

The loss of a batch is::

    L = w_task * CE(student)  +  w_kd * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))  +  alpha * L_feat

where ``z_t``, ``z_s`` are the teacher's and student's logits at the task's KD positions (every example for
classification, response-predicting positions for instruction following; KL averaged over those rows; with
``kd="reverse"`` the KL runs the other way, ``KL(student_T || teacher_T)``: see :func:`kd_loss`) and
``L_feat = sum_k w_k D(teacher layer t_k, student layer s_k)`` is the :class:`FeatureLoss`. Every term is logged
separately (``loss_task``, ``loss_kd``, ``loss_feature`` and one ``loss_feature/<pair>`` per layer pair, averaged
over the logging interval and the ranks). The teacher is frozen, in eval mode, and run under ``no_grad`` (or
replaced by a :class:`~repgeo.distill.cache.TeacherCache`). The feature loss's projectors (projection-MSE) get
their own optimizer parameter group (``projector_lr``, no weight decay) and are saved as ``feature_loss.pt`` in
every checkpoint and restored on resume. Gradient clipping (``max_grad_norm``) covers the student only.

Every checkpoint ends with ``repgeo_checkpoint.json``: the size and sha256 of each of its files (weights,
optimizer, scheduler, RNG states, projectors, trainer state), written after all of them and before older
checkpoints are rotated away. :func:`checkpoint_problem` verifies a checkpoint against it before a resume.

Every term is a per-batch mean, so the trainer tells the base class not to rescale by token counts
(``model_accepts_loss_kwargs = False``); gradient accumulation then averages micro-batches. Under data
parallelism the feature loss sees the global batch (rows gathered with gradient); the CE and KD terms are
averaged over ranks by DDP.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from transformers import TrainerCallback
from transformers.trainer_utils import rotate_checkpoints

from repgeo._files import IntegrityError, atomic_path, verify_folder, write_manifest

from .arguments import TRAINER_SETTINGS, DistillationArguments, setting
from .checks import check_layer_map, check_logits, check_projectors, check_tokenizers, check_vocab_covers, hidden_sizes
from .feature_loss import FeatureLoss
from .gather import all_reduce_mean
from .hfdata import is_dataset_dict, is_hf_dataset, pick_split
from .mapping import resolve_layer_map
from .schema import KD_DIRECTIONS
from .tasks import student_inputs, teacher_inputs

FEATURE_LOSS_FILE = "feature_loss.pt"
CHECKPOINT_MANIFEST = "repgeo_checkpoint.json"


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            direction: str = "forward") -> torch.Tensor:
    """The logit KD term, ``T^2`` times a KL divergence between the temperature-``T`` softmaxes of the rows::

        forward:  T^2 * (1/N) sum_rows KL(p_t || p_s) = T^2 * (1/N) sum_rows sum_v p_t (log p_t - log p_s)
        reverse:  T^2 * (1/N) sum_rows KL(p_s || p_t) = T^2 * (1/N) sum_rows sum_v p_s (log p_s - log p_t)

    with ``p = softmax(z / T)`` of the student's (``s``) and teacher's (``t``) logits and ``N`` rows (the task's KD
    positions: examples, or response-predicting tokens). ``forward`` is Hinton et al.'s KD (mass-covering);
    ``reverse`` is mode-seeking: the token-level surrogate of MiniLLM (Gu et al. 2024) on teacher-forced positions.
    It is *not* MiniLLM's objective, which minimises the sequence-level reverse KL of the student's own samples by
    policy gradient. Both directions: log-softmax on both sides (no log of a rounded-to-zero probability), float32
    for half-precision logits (float64 stays float64), the same ``batchmean`` averaging over rows; 0 for no rows.
    """
    if direction not in KD_DIRECTIONS:
        raise ValueError(f"kd: must be one of {', '.join(KD_DIRECTIONS)}, got {direction!r}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    if student_logits.shape[0] == 0:
        return student_logits.new_zeros((), dtype=dtype)
    s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    if direction == "reverse":  # kl_div(input, target) = KL(target || input)
        s, t = t, s
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


class _TermMeter:
    """Running sums of the loss terms between two logs."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def pop(self, prefix: str = "") -> dict[str, float]:
        if not self.count:
            return {}
        keys = sorted(self.sums)
        values = all_reduce_mean(torch.stack([self.sums[k] for k in keys]) / self.count)
        self.sums, self.count = {}, 0
        return {f"{prefix}{k}": float(v) for k, v in zip(keys, values.tolist(), strict=True)}


class _ZeroFeatureGrads(TrainerCallback):
    """The base trainer zeroes the student's gradients only; the projectors' are zeroed here."""

    def __init__(self, feature_loss: FeatureLoss) -> None:
        self.feature_loss = feature_loss

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.feature_loss.zero_grad(set_to_none=True)


def build_feature_loss(settings: Any, layer_map: dict[int, int], student_dims: list[int], teacher_dims: list[int],
                       weights: Any = None) -> FeatureLoss:
    """The :class:`FeatureLoss` of ``settings`` (anything with ``metric``, ``pooling``, ``center``, ``normalize`` and
    ``projector``: a run configuration's ``loss`` section or :class:`DistillationArguments`) between hidden states
    of the given widths (index 0: embeddings)."""
    return FeatureLoss(
        settings.metric, layer_map, student_dims=dict(enumerate(student_dims)),
        teacher_dims=dict(enumerate(teacher_dims)), pooling=settings.pooling, weights=weights,
        center=settings.center, normalize=settings.normalize, projector=settings.projector,
    )


def feature_loss_from_args(args: DistillationArguments, student: Any, teacher: Any) -> FeatureLoss:
    """:func:`build_feature_loss` of ``args`` with ``args.layer_map`` resolved between ``student`` and ``teacher``."""
    s_dims, t_dims = hidden_sizes(student), hidden_sizes(teacher)
    layer_map = resolve_layer_map(args.layer_map, len(s_dims) - 1, len(t_dims) - 1)
    return build_feature_loss(args, layer_map, s_dims, t_dims)


class DistillationTrainer(transformers.Trainer):
    """Trainer for teacher -> student distillation (see the module docstring for the loss).

    Parameters beyond ``transformers.Trainer``'s: ``teacher``; ``task`` (a :mod:`repgeo.distill.tasks` object
    giving the KD positions and token masks); ``feature_loss`` (or None); ``alpha``, ``w_task``, ``w_kd``,
    ``temperature``; ``kd`` (``"forward"`` or ``"reverse"``: the KL direction of the KD term, :func:`kd_loss`);
    ``feature_tokens`` (``"all"`` or ``"response"``); ``projector_lr`` (default: the
    student's learning rate); ``teacher_cache``; ``student_tokenizer`` (checked against ``processing_class``,
    the task's tokenizer: the student's, also the teacher's unless the task has a ``teacher_tokenizer``, whose
    ids the batches then carry for the teacher, see :mod:`repgeo.distill.tasks`); ``geometry`` (a
    :class:`~repgeo.distill.geometry.GeometryProbe`, run at every evaluation); ``generation``
    (``{"max_new_tokens", "num_samples"}``, instruction task only).

    ``args`` may be a :class:`~repgeo.distill.arguments.DistillationArguments`: the loss settings left unset here
    are read from it, and without a ``feature_loss`` one is built from it (when ``alpha > 0``). With plain
    ``TrainingArguments`` the unset settings take :class:`DistillationArguments`' defaults and there is no feature
    loss unless one is given.

    ``train_dataset`` / ``eval_dataset`` may be a ``datasets.Dataset`` (its rows go through the task's
    tokenisation, :meth:`Task.dataset <repgeo.distill.tasks.Task.dataset>`, with the column names of
    ``task.data_cfg``) or a ``DatasetDict``, whose ``train_split`` / ``eval_split`` is used.
    """

    def __init__(
        self,
        model: transformers.PreTrainedModel,
        teacher: transformers.PreTrainedModel,
        *,
        task: Any,
        feature_loss: FeatureLoss | None = None,
        alpha: float | None = None,
        w_task: float | None = None,
        w_kd: float | None = None,
        temperature: float | None = None,
        feature_tokens: str | None = None,
        projector_lr: float | None = None,
        kd: str | None = None,
        teacher_cache: Any | None = None,
        student_tokenizer: Any | None = None,
        geometry: Any | None = None,
        generation: dict[str, Any] | None = None,
        train_split: str = "train",
        eval_split: str = "validation",
        **kwargs: Any,
    ) -> None:
        args = kwargs.get("args")
        alpha, w_task, w_kd, temperature, feature_tokens, projector_lr, kd = (
            setting(args, name, value) for name, value in zip(TRAINER_SETTINGS, (
                alpha, w_task, w_kd, temperature, feature_tokens, projector_lr, kd), strict=True))
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if kd not in KD_DIRECTIONS:
            raise ValueError(f"kd: must be one of {', '.join(KD_DIRECTIONS)}, got {kd!r}")
        for key, split in (("train_dataset", train_split), ("eval_dataset", eval_split)):  # train first: labels
            if is_hf_dataset(kwargs.get(key)):
                named = f"{key}[{split}]" if is_dataset_dict(kwargs[key]) else key
                kwargs[key] = task.dataset(pick_split(kwargs[key], split, key.replace("dataset", "split")), name=named)
        kwargs.setdefault("data_collator", task.collate)
        kwargs.setdefault("processing_class", task.tokenizer)
        kwargs.setdefault("compute_metrics", task.compute_metrics)
        super().__init__(model=model, **kwargs)
        self.teacher = teacher
        self.task = task
        if feature_loss is None and alpha > 0 and isinstance(self.args, DistillationArguments):
            feature_loss = feature_loss_from_args(self.args, model, teacher)
        self.feature_loss = feature_loss if alpha > 0 else None
        self.alpha, self.w_task, self.w_kd, self.temperature, self.kd = alpha, w_task, w_kd, temperature, kd
        self.alpha_info: dict[str, Any] = {}  # how build_trainer set alpha (the content of alpha.json)
        self.feature_tokens = feature_tokens
        self.projector_lr = projector_lr
        self.teacher_cache = teacher_cache
        self.geometry = geometry
        self.generation = generation or {}
        # every term is a per-batch mean: no token-count rescaling by the base class
        self.model_accepts_loss_kwargs = False
        self._train_terms, self._eval_terms = _TermMeter(), _TermMeter()
        self._check(student_tokenizer)
        teacher.to(self.args.device)
        teacher.eval()
        teacher.requires_grad_(False)
        if self.feature_loss is not None:
            self.feature_loss.to(self.args.device)
            self.add_callback(_ZeroFeatureGrads(self.feature_loss))

    # ------------------------------------------------------------------ checks
    def _check(self, student_tokenizer: Any | None) -> None:
        tok = self.processing_class
        check_tokenizers(tok, student_tokenizer)
        if tok is not None:
            teacher_tok = getattr(self.task, "teacher_tokenizer", None)
            check_vocab_covers(tok if teacher_tok is None else teacher_tok, self.teacher, "teacher")
            check_vocab_covers(tok, self.model, "student")
        if self.w_kd > 0:
            check_logits(self.teacher, self.model)
        if self.feature_loss is not None:
            s_dims, t_dims = hidden_sizes(self.model), hidden_sizes(self.teacher)
            check_layer_map(self.feature_loss.layer_map, len(s_dims) - 1, len(t_dims) - 1)
            check_projectors(self.feature_loss, s_dims, t_dims)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model)
        params = list(self.feature_loss.parameters()) if self.feature_loss is not None else []
        if params and not any(params[0] is q for g in optimizer.param_groups for q in g["params"]):
            lr = self.projector_lr if self.projector_lr is not None else self.args.learning_rate
            optimizer.add_param_group({"params": params, "weight_decay": 0.0, "lr": lr})
        return optimizer

    # ------------------------------------------------------------------ loss
    def _teacher_outputs(
        self, inputs: dict[str, torch.Tensor], teacher_in: dict[str, torch.Tensor], index: torch.Tensor | None,
        token_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, dict[int, torch.Tensor] | None]:
        """The teacher's KD logit rows and feature rows of a batch: from the teacher cache while training, else by
        running it on ``teacher_in`` (its own ids and mask: :func:`~repgeo.distill.tasks.teacher_inputs`)."""
        need_kd = self.w_kd > 0
        need_feat = self.feature_loss is not None
        if not (need_kd or need_feat):
            return None, None
        if self.teacher_cache is not None and index is not None and self.model.training:
            hit = self.teacher_cache.lookup(index, device=inputs["input_ids"].device)
            if hit is not None:
                return hit
        self.teacher.eval()
        with torch.no_grad():
            out = self.teacher(**teacher_in, output_hidden_states=need_feat)
            logits = self.task.kd_logits(out.logits, inputs) if need_kd else None
            feats = (
                self.feature_loss.teacher_features(out.hidden_states, teacher_in["attention_mask"], token_mask)
                if need_feat
                else None
            )
        return logits, feats

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs = dict(inputs)
        index = inputs.pop("example_index", None)
        teacher_in = teacher_inputs(inputs)  # the teacher's own ids when it reads the text through its tokenizer
        inputs = student_inputs(inputs)
        token_mask = self.task.feature_mask(inputs, self.feature_tokens)
        outputs = model(**inputs, output_hidden_states=self.feature_loss is not None)
        terms: dict[str, torch.Tensor] = {}
        ce = outputs.loss.float()
        terms["loss_task"] = ce
        total = self.w_task * ce
        t_logits, t_feats = self._teacher_outputs(inputs, teacher_in, index, token_mask)
        if t_logits is not None:
            kd = kd_loss(self.task.kd_logits(outputs.logits, inputs), t_logits, self.temperature, self.kd)
            terms["loss_kd"] = kd
            total = total + self.w_kd * kd
        if self.feature_loss is not None:
            fl = self.feature_loss(t_feats, outputs.hidden_states, inputs.get("attention_mask"), token_mask)
            terms["loss_feature"] = fl.total
            terms.update({f"loss_feature/{k}": v for k, v in fl.pairs.items()})
            total = total + self.alpha * fl.total
        (self._train_terms if model.training else self._eval_terms).add(terms)
        if return_outputs:
            return total, type(outputs)(loss=total.detach(), logits=outputs.logits)
        return total

    def prediction_step(self, model: Any, inputs: Any, prediction_loss_only: bool, ignore_keys: Any = None) -> Any:
        if self.task.scored_by_generation:  # not by stored logits
            prediction_loss_only = True
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # ------------------------------------------------------------------ logging and evaluation
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self._check_feature_inputs()
        if "loss" in logs:
            logs.update(self._train_terms.pop())
        super().log(logs, start_time)

    def _check_feature_inputs(self) -> None:
        """Evaluate the feature loss's deferred input checks of every batch since the last log (one host sync at a
        point where the Trainer synchronises anyway) and stop with a ``ValueError`` naming the step if one failed."""
        if self.feature_loss is None:
            return
        try:
            self.feature_loss.raise_if_invalid()
        except ValueError as exc:
            raise ValueError(f"feature loss at or before step {self.state.global_step}: {exc}") from None

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        self._eval_terms = _TermMeter()
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        self._check_feature_inputs()
        extra = self._eval_terms.pop(prefix=f"{metric_key_prefix}_")
        scores = self.task.eval_scores(
            self.accelerator.unwrap_model(self.model), eval_dataset if eval_dataset is not None else self.eval_dataset,
            generation=self.generation, batch_size=self.args.per_device_eval_batch_size,
        )
        extra.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        if self.geometry is not None:
            extra.update(self.geometry.measure(self.teacher, self.accelerator.unwrap_model(self.model),
                                               step=self.state.global_step))
        if extra:
            self.log(dict(extra))
            metrics.update(extra)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # feature_loss.pt first, the checksum manifest last; older checkpoints are rotated away only once the new
        # one is complete (the base class would rotate right after trainer_state.json, before the manifest)
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
        if self.feature_loss is not None and self.args.should_save:
            self.save_feature_loss(folder)
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every rank's RNG state is on disk
        if self.args.should_save:
            write_manifest(folder, CHECKPOINT_MANIFEST, step=self.state.global_step)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def save_feature_loss(self, folder: str) -> None:
        """Write the feature loss's state (projectors) as ``feature_loss.pt`` in ``folder``, atomically (a temporary
        file renamed into place: an interrupted or failed write leaves no partial file)."""
        if self.feature_loss is not None:
            os.makedirs(folder, exist_ok=True)
            with atomic_path(os.path.join(folder, FEATURE_LOSS_FILE)) as tmp:
                torch.save(self.feature_loss.state_dict(), tmp)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.feature_loss is None or not list(self.feature_loss.parameters()):
            return
        path = os.path.join(resume_from_checkpoint, FEATURE_LOSS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {resume_from_checkpoint} has no {FEATURE_LOSS_FILE} (projectors)")
        state = torch.load(path, map_location=self.args.device, weights_only=True)
        self.feature_loss.load_state_dict(state)


def checkpoint_problem(folder: str | os.PathLike[str], with_projectors: bool) -> str | None:
    """Why the ``checkpoint-N`` folder cannot be resumed from (None when it can): its writing was interrupted (no
    ``repgeo_checkpoint.json``), a file differs in size or sha256 from what was written, or ``feature_loss.pt`` is
    missing while the feature loss has parameters. Each message names the file."""
    try:
        manifest = verify_folder(folder, CHECKPOINT_MANIFEST, deep=True)
    except IntegrityError as exc:
        return str(exc)
    if with_projectors and FEATURE_LOSS_FILE not in manifest["files"]:
        return f"{os.path.join(folder, FEATURE_LOSS_FILE)} is missing (the projectors were not saved)"
    return None


def checkpoint_complete(folder: str | os.PathLike[str], with_projectors: bool) -> bool:
    """Whether a ``checkpoint-N`` folder was written to the end and is intact (see :func:`checkpoint_problem`)."""
    return checkpoint_problem(folder, with_projectors) is None
