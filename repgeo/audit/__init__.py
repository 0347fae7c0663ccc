"""Teacher/student audit: layer-by-layer similarity table with uncertainty, heatmaps and a report.

    from repgeo.audit import audit, plot_heatmap
    df = audit(teacher, student, texts, tokenizer=tok, teacher_layers=[2, 4, 6], student_layers=[1, 2],
               metrics=["procrustes", "cka", "fg"], pooling="mean")
    plot_heatmap(df, "procrustes")

Conventions: :mod:`repgeo.audit.core`; uncertainty (bootstrap, permutation, jackknife):
:mod:`repgeo.audit.uncertainty`.
"""

from .core import audit
from .data import load_model, read_texts
from .plots import plot_heatmap, plot_profile, write_report
from .table import DEFAULT_METRICS, audit_features

__all__ = [
    "DEFAULT_METRICS",
    "audit",
    "audit_features",
    "load_model",
    "plot_heatmap",
    "plot_profile",
    "read_texts",
    "write_report",
]
