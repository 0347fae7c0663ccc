"""``repgeo demo``: the main job end to end, offline, in minutes.

A real pretrained teacher (all-MiniLM-L6-v2, :func:`repgeo.assets.minilm_path`) is fine-tuned on real labelled
text (Rotten Tomatoes snippets, :func:`repgeo.assets.rotten_tomatoes`) and cached; two-layer students are
distilled from it with KD only and with each feature loss (projection-MSE, CKA, Procrustes, FG) on the same data,
split, seed and initialisation; every student is audited layer by layer against the teacher on held-out texts;
the theory's counterexamples are certified; a report folder is written and a table printed. Any local or hub
model and any CSV / TSV / JSONL text-classification file can replace the packaged ones::

    from repgeo.demo import run_demo, settings_for
    result = run_demo(settings_for("fast", out="demo-out"))
"""

from .pipeline import DemoResult, audit_students, certify, run_demo
from .report import accuracy_table, format_table, mapped_geometry, print_summary, write_report
from .settings import METHODS, PRESETS, DemoSettings, settings_for

__all__ = [
    "METHODS",
    "PRESETS",
    "DemoResult",
    "DemoSettings",
    "accuracy_table",
    "audit_students",
    "certify",
    "format_table",
    "mapped_geometry",
    "print_summary",
    "run_demo",
    "settings_for",
    "write_report",
]
