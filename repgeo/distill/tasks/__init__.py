"""Tasks: how records are read, tokenised, batched, which logits the KD term compares, and how runs are scored.

A :class:`Task` object carries everything that differs between tasks -- its models' ``transformers`` class, the
teacher check, the student's label names, the Trainer's metric function, evaluation by generation -- so the
runner and the trainer ask the object and never compare task names.

* ``classification`` — sequence classification (BERT family): CSV or JSONL with a text and a label column;
  accuracy, F1 (binary, or macro for more classes) and Matthews correlation.
* ``instruction`` — instruction following (OPT / Llama causal LMs): JSONL with prompt and response; the task and
  KD losses cover response tokens only; scored by greedy generation with ROUGE-L and exact match.

Teacher and student with different tokenizers: classification gives the teacher its own tokenisation of each text
(:data:`TEACHER_KEYS`; :func:`teacher_inputs` / :func:`student_inputs` split a batch); the instruction task
refuses it (:attr:`Task.one_tokenizer` says why).
"""

from __future__ import annotations

from .base import TEACHER_KEYS, Task, load_records, student_inputs, teacher_inputs
from .classification import ClassificationTask
from .instruction import InstructionTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "instruction": InstructionTask}


def get_task(name: str) -> type[Task]:
    """The task class registered under ``name``."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}") from None


__all__ = ["TASKS", "TEACHER_KEYS", "ClassificationTask", "InstructionTask", "Task", "get_task", "load_records",
           "student_inputs", "teacher_inputs"]
