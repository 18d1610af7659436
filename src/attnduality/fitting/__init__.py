"""Certified convex heads fitted on your own features: the library behind ``attnduality fit``.

* :mod:`.core`: the heads (:data:`HEADS`), :class:`FitError`, building a head's estimator and the fit every input
  shares (status, duality-gap certificate, scores, recovered twin);
* :mod:`.npz`: :func:`fit_features`, on the arrays ``X``, ``y`` of an ``.npz`` archive;
* :mod:`.hf`: :func:`fit_hf`, on token features of a local Hugging Face model for a CSV of texts
  (:func:`read_texts_csv`) or a folder of images (:func:`read_image_folder`).
"""

from __future__ import annotations

from .core import HEADS, FitError, Head, auto_task, check_options, fit_and_summarise, head_estimator
from .hf import IMAGE_SUFFIXES, fit_hf, read_image_folder, read_texts_csv
from .npz import fit_features

__all__ = [
    "HEADS",
    "IMAGE_SUFFIXES",
    "FitError",
    "Head",
    "auto_task",
    "check_options",
    "fit_and_summarise",
    "fit_features",
    "fit_hf",
    "head_estimator",
    "read_image_folder",
    "read_texts_csv",
]
