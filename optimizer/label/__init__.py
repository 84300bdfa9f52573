"""Labelling on graphopt's IR: model-assisted labels, uncertainty, active learning, label
errors and crowd aggregation (``graphopt label ...`` on the command line).

Example::

    from optimizer.label import LabelModel, find_label_issues, select

    labeller = LabelModel("model.onnx")                  # imported, optimized, checked
    pred = labeller.predict("data.npy")                  # labels, probabilities, embeddings
    mc = labeller.mc_dropout("data.npy", samples=20)     # 20 samples in one run per batch
    select(10, "bald", bald_scores=mc.stats.bald, probs=mc.mean)
    find_label_issues(given_labels, out_of_fold_probs).ranked

Modules: :mod:`~optimizer.label.data` (dataset readers), :mod:`~optimizer.label.inference`
(:class:`LabelModel`), :mod:`~optimizer.label.passes` (IR passes), :mod:`~optimizer.label.
uncertainty`, :mod:`~optimizer.label.active`, :mod:`~optimizer.label.confident` (confident
learning), :mod:`~optimizer.label.crowd`, :mod:`~optimizer.label.ray_backend`,
:mod:`~optimizer.label.report` and :mod:`~optimizer.label.cli`.
"""

from optimizer.label.active import STRATEGIES, Choice, Selection, k_center_greedy, select
from optimizer.label.confident import (
    LabelIssues,
    confident_joint,
    confident_thresholds,
    estimate_noise,
    find_label_issues,
    label_quality_scores,
)
from optimizer.label.crowd import (
    Aggregation,
    CrowdLabels,
    aggregate,
    dawid_skene,
    mace,
    majority_vote,
)
from optimizer.label.data import (
    ArrayDataset,
    Chunk,
    CsvDataset,
    Dataset,
    ImageFolderDataset,
    IterableDataset,
    NpzDataset,
    encode_labels,
    open_dataset,
    read_labels,
)
from optimizer.label.exceptions import LabelBackendError, LabelDataError, LabelModelError
from optimizer.label.inference import LabelModel, MCDropoutResult, Predictions, softmax
from optimizer.label.uncertainty import (
    MCStatistics,
    bald,
    entropy,
    least_confidence,
    margin,
    mc_statistics,
)

__all__ = [
    "STRATEGIES",
    "Aggregation",
    "ArrayDataset",
    "Choice",
    "Chunk",
    "CrowdLabels",
    "CsvDataset",
    "Dataset",
    "ImageFolderDataset",
    "IterableDataset",
    "LabelBackendError",
    "LabelDataError",
    "LabelIssues",
    "LabelModel",
    "LabelModelError",
    "MCDropoutResult",
    "MCStatistics",
    "NpzDataset",
    "Predictions",
    "Selection",
    "aggregate",
    "bald",
    "confident_joint",
    "confident_thresholds",
    "dawid_skene",
    "encode_labels",
    "entropy",
    "estimate_noise",
    "find_label_issues",
    "k_center_greedy",
    "label_quality_scores",
    "least_confidence",
    "mace",
    "majority_vote",
    "margin",
    "mc_statistics",
    "open_dataset",
    "read_labels",
    "select",
    "softmax",
]
