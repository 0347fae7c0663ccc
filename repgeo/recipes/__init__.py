"""Recipes built on the core packages, reused by the demo and the studies.

* :mod:`repgeo.recipes.classifier` — sequence classifiers: load, tokenise, predict, linear-probe head
  initialisation, fine-tuning;
* :mod:`repgeo.recipes.scoring` — accuracy standard errors, paired differences of two classifiers;
* :mod:`repgeo.recipes.student` — one student distilled through the ``repgeo distill`` engine, returned with its
  α calibration and histories.
"""
