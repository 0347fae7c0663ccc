"""Benchmarks: standalone speed / overhead scripts (``python benchmarks/<name>.py``) and the distillation quality
study as a package (:mod:`benchmarks.quality_study`)."""
