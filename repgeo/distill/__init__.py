"""Distillation runner: teacher -> student with any registered metric as the feature loss.

Built on the Hugging Face ``Trainer``; see :class:`DistillationTrainer` for the loss
``w_task * CE + w_kd * T^2 * KL(teacher_T || student_T) + alpha * sum_k w_k D(teacher_k, student_k)``.

Two ways in: a YAML run configuration (:func:`load_config` + :func:`run_distillation`, or ``repgeo distill``;
``data.dataset`` names a Hugging Face dataset), or the trainer itself, as with TRL::

    from repgeo.distill import ClassificationTask, DataConfig, DistillationArguments, DistillationTrainer

    args = DistillationArguments(output_dir="runs/x", max_steps=200, metric="procrustes", alpha=1.0)
    task = ClassificationTask(tokenizer, DataConfig(text_field="sentence", label_field="label"))
    trainer = DistillationTrainer(student, teacher, task=task, args=args,
                                  train_dataset=dataset_dict, eval_dataset=dataset_dict)  # splits train / validation
    trainer.train()
"""

from repgeo._files import DataError, FolderLockedError, IntegrityError

from .arguments import DistillationArguments
from .cache import TeacherCache
from .config import ConfigError, DataConfig, RunConfig, config_from_dict, config_yaml, load_config, save_config
from .feature_loss import FeatureLoss, FeatureLossOutput
from .geometry import GeometryProbe, plot_geometry
from .mapping import format_layer_map, load_layer_map, resolve_layer_map, save_layer_map
from .run import DistillResult, build_trainer, run_distillation
from .students import derive_student
from .tasks import ClassificationTask, InstructionTask, Task, get_task
from .trainer import DistillationTrainer, kd_loss

__all__ = [
    "ClassificationTask",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DistillResult",
    "DistillationArguments",
    "DistillationTrainer",
    "FeatureLoss",
    "FeatureLossOutput",
    "FolderLockedError",
    "GeometryProbe",
    "InstructionTask",
    "IntegrityError",
    "RunConfig",
    "Task",
    "TeacherCache",
    "build_trainer",
    "config_from_dict",
    "config_yaml",
    "derive_student",
    "format_layer_map",
    "get_task",
    "kd_loss",
    "load_config",
    "load_layer_map",
    "plot_geometry",
    "resolve_layer_map",
    "run_distillation",
    "save_config",
    "save_layer_map",
]
