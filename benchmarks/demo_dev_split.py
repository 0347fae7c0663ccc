"""Choose the ``repgeo demo`` defaults on a dev split: the demo's own test texts (seed 0, 4,000 / 1,000) are removed
from the Rotten Tomatoes snippets, and a training set and a dev set are drawn from the rest with ``--seed``. The
teacher is fine-tuned (or loaded from ``--cache``), the students of ``--students`` are distilled from the same
linear-probe initialisation, and each student's dev accuracy is compared with that initialisation on the same
texts (:func:`repgeo.demo.teacher.paired_difference`). One JSON line per student is appended to ``--results``.

    python benchmarks/demo_dev_split.py --seed 0 --teacher-lr 1e-4 --students kd:1e-4:125,procrustes:1e-4:125

What it measured (2 seeds) is summarised in the docstring of :mod:`repgeo.demo.settings`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-steps", type=int, default=125)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--students", default="kd:1e-4:125", help="method:lr:steps,... (methods of repgeo demo)")
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-dev", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", help="where fine-tuned teachers are cached (default: <repgeo cache>/demo-dev)")
    p.add_argument("--freeze-embeddings", action="store_true", help="teacher and students keep their word embeddings")
    p.add_argument("--results", default="benchmarks/results/demo_dev_split.jsonl")
    a = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(a.threads)
    from repgeo.assets import cache_dir, minilm_path, rotten_tomatoes
    from repgeo.demo.data import load_data, split
    from repgeo.demo.settings import settings_for
    from repgeo.demo.students import init_student, run_student, silence_transformers
    from repgeo.demo.teacher import prepare_teacher
    from repgeo.recipes.classifier import encode, label_ids, predict
    from repgeo.recipes.scoring import paired_difference

    silence_transformers()
    frame = rotten_tomatoes()
    base = settings_for("default")
    demo_test = set(split(frame, base.n_train, base.n_test, seed=base.seed).test["text"])
    work = Path(tempfile.mkdtemp(prefix="repgeo-demo-dev-"))
    csv = work / "dev_universe.csv"
    frame[~frame["text"].isin(demo_test)].to_csv(csv, index=False)
    s = settings_for("default", data=str(csv), seed=a.seed, n_train=a.n_train, n_test=a.n_dev,
                     teacher_steps=a.teacher_steps, teacher_lr=a.teacher_lr, threads=a.threads,
                     freeze_embeddings=a.freeze_embeddings)
    data = load_data(str(csv), n_train=s.n_train, n_test=s.n_test, seed=a.seed)
    train_path, dev_path = data.write(work / "data")
    cache = Path(a.cache) if a.cache else cache_dir() / "demo-dev"
    teacher = prepare_teacher(str(minilm_path()), data, s, cache_dir=cache, progress=False, log=print)
    print(json.dumps({"seed": a.seed, "teacher_lr": a.teacher_lr, "teacher_steps": a.teacher_steps,
                      "freeze_embeddings": a.freeze_embeddings, "teacher_dev_accuracy": teacher.accuracy,
                      "teacher_seconds": teacher.seconds}), flush=True)
    y = label_ids(data.test["label"], data.labels)
    dev_ids = encode(teacher.tokenizer, data.test["text"], s.max_length)
    init, init_path = init_student(teacher, data, s, work / "student-init")
    init_pred = predict(init, dev_ids, teacher.tokenizer.pad_token_id)
    for item in filter(None, a.students.split(",")):
        method, lr, steps = item.split(":")
        st = dataclasses.replace(s, student_lr=float(lr), student_steps=int(steps))
        t0 = time.perf_counter()
        run = run_student(st, method, narrow=False, teacher_path=teacher.path, student_path=init_path,
                          train_path=train_path, test_path=dev_path, labels=data.labels, test_ids=dev_ids,
                          test_labels=data.test["label"], runs_dir=work / "runs", cache_dir=work / "cache",
                          progress=False, log=print)
        d = paired_difference(run.predictions, init_pred, y)
        row = {"seed": a.seed, "teacher_lr": a.teacher_lr, "teacher_steps": a.teacher_steps,
               "freeze_embeddings": a.freeze_embeddings,
               "teacher_dev_accuracy": teacher.accuracy, "init_dev_accuracy": float((init_pred == y).mean()),
               "method": method, "student_lr": float(lr), "student_steps": int(steps), "dev_accuracy": run.accuracy,
               "delta": d.delta, "paired_se": d.se, "seconds": time.perf_counter() - t0}
        print(json.dumps(row), flush=True)
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        with open(a.results, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
