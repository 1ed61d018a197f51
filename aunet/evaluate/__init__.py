"""Evaluation (torch-free at import; PyTorch loads only to score a checkpoint): a model on a labeled set ->
AUC, AP, EER and accuracy at frame and video level, as the paper's Table 3.

``datasets`` reads labeled sets (CSV, Celeb-DF v2, FF++ test split, DFDC-Preview, or a labeled face cache) and
prepares their faces with aunet-prep's pipeline; ``scoring`` turns a checkpoint or an exported model into a
``Scorer`` and applies the video protocol; ``report`` writes metrics.json / metrics.md / scores.csv / roc.png;
``cli`` is ``aunet-eval``. Other rooms (the trainer's labeled validation) import from here, not from the modules.
"""
from aunet.evaluate.datasets import EvalError, LabeledFile, labeled_files, open_labeled, read_csv_list
from aunet.evaluate.report import markdown_report, write_outputs
from aunet.evaluate.scoring import Scorer, evaluate_cache, evaluate_source, load_scorer, torch_scorer

__all__ = ["EvalError", "LabeledFile", "Scorer", "evaluate_cache", "evaluate_source", "labeled_files", "load_scorer",
           "markdown_report", "open_labeled", "read_csv_list", "torch_scorer", "write_outputs"]
