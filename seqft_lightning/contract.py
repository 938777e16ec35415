"""The run-folder contract: every file name, CSV column and metric key a run writes and
``compare.py`` reads, and the one rule for which config keys do not change a result. No torch.
README.md, "Outputs of a run (the contract)", is its prose view.

Units and signs, once for the whole project:

* accuracies, precisions, recalls and F1 scores are fractions in [0, 1] in every file
  (the report shows percentages);
* losses are mean cross-entropy in nats per sample;
* ``forgetting`` is **positive when accuracy was lost** (the best earlier accuracy of a task
  minus its accuracy now); ``cl/bwt`` is **negative when accuracy was lost**;
* "undefined" (a group with no samples, forgetting of a task not yet trained, BWT of a single
  stage) is ``null`` in JSON and an empty cell in CSV, never ``nan`` and never 0;
* precision of a class with no predictions and recall of a class with no samples count as 0
  (torchmetrics' ``zero_division=0``), and such a class still counts in macro averages;
* stages are numbered from 0: stage 0 is the pretrained baseline, stage ``k >= 1`` the model after
  the ``k``-th training stage (``method.stages[k-1]``); tasks ``task_<j>`` and ``method.vectors``
  index ``method.stages`` from 0, so task ``j`` is trained in stage ``j + 1``."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

# -- files of a run folder (Hydra's job dir) --------------------------------------------------
METRICS_FILE = "metrics.json"  # written last, atomically: its presence means the run completed
STAGES_FILE = "stages.csv"  # long format, one row per (stage, evaluated group)
CURVES_FILE = "curves.csv"  # training dynamics
#: merging / negation: the lambda search on calibration, columns ``lambda, acc, acc_target, acc_retained``
#: (task negation adds ``acc_forget`` and ``acc_other``)
CALIBRATION_FILE = "calibration.csv"
#: merging: the same lambda grid on the *test* split (same columns), written after lambda was chosen,
#: for the report's trade-off plot only (selection never reads it).
LAMBDA_TEST_FILE = "lambda_test.csv"
RUN_INFO_FILE = "run_info.json"  # device, threads, wall time (kept out of metrics.json)
#: a sweep job refused by a user error writes ``{"error": "<one line>", "exit_status": 2}`` here
#: (and no metrics.json); the sweep goes on with its other jobs
ERROR_FILE = "error.json"
TRAIN_LOG_FILE = "train.log"
CONFIG_FILE = "config.json"  # the resolved, result-relevant config (written before any work)
CONFUSION_DIR = "confusion"
CHECKPOINT_DIR = "checkpoints"
FINAL_CHECKPOINT = "final.pt"
TASK_VECTORS_CHECKPOINT = "task_vectors.pt"


def confusion_file(stage: int) -> str:
    """Relative path of the test confusion matrix after ``stage`` (rows true, columns predicted)."""
    return f"{CONFUSION_DIR}/stage_{int(stage)}.csv"


# -- CSV columns -------------------------------------------------------------------------------
#: ``stages.csv``: ``evaluated`` is ``all``, ``target``, ``retained``, ``class_<k>`` or ``task_<j>``;
#: ``trained_classes`` is ``"3"``, ``"3+4+7"``, ``"pretrain"``, ``"merged"`` or ``"negated"``.
#: ``forgetting`` is filled on ``task_<j>`` rows once task j has been trained and followed by a
#: stage (see :func:`seqft_lightning.cl_metrics.forgetting_matrix`), empty otherwise.
STAGE_COLUMNS = ("stage", "trained_classes", "evaluated", "acc", "precision", "recall", "f1", "loss", "forgetting")
CURVE_COLUMNS = ("stage", "epoch", "step", "split", "metric", "value")
TRAINED_PRETRAIN, TRAINED_MERGED, TRAINED_NEGATED = "pretrain", "merged", "negated"

# -- metric keys (metrics.json "baseline", "final" and "per_stage" entries) --------------------
TEST, VAL = "test", "val"
#: The two parts of the held-out calibration split, as metric prefixes: every choice reads the
#: selection part (``calibration/...``); the estimation part (``estimation/...``) is read by none.
SELECTION_PART, ESTIMATION_PART = "calibration", "estimation"
#: the selection rule as one number to maximise (:func:`seqft_lightning.selection.score`): what a sweeper optimises
SELECTION_SCORE = f"{SELECTION_PART}/selection_score"
#: metrics.json top-level key: ``null``, or the first diverged training epoch
#: (``stage``, ``epoch``, ``train_loss``, ``reason``).
DIVERGENCE = "divergence"
GROUP_METRICS = ("acc", "precision", "recall", "f1", "loss", "acc_target", "acc_retained")
CL_AVG_ACC, CL_FORGETTING, CL_BWT = "cl/avg_acc", "cl/forgetting", "cl/bwt"


def metric_key(split: str, name: str) -> str:
    """``metric_key("test", "acc_target") == "test/acc_target"``."""
    return f"{split}/{name}"


def class_metric_key(split: str, name: str, k: int) -> str:
    """``class_metric_key("test", "acc", 3) == "test/acc_class_3"`` (acc of a class = its recall)."""
    return f"{split}/{name}_class_{int(k)}"


def split_metric_keys(split: str, num_classes: int) -> set[str]:
    """Every metric key a recorded stage has on ``split`` (:func:`seqft_lightning.metrics.flat_metrics`)."""
    per_class = {class_metric_key(split, name, k) for name in ("acc", "precision", "f1", "loss")
                 for k in range(num_classes)}
    return {metric_key(split, name) for name in GROUP_METRICS} | per_class


# -- retired config keys ----------------------------------------------------------------------
#: Keys earlier versions took -> what replaced them (``train.py`` names it instead of "not a setting").
RETIRED_KEYS = {
    "method.select_metric": "the study's one selection rule replaced it: remove it and set selection.rule=target_at_retained "
                            "(default) or selection.rule=overall",
    "method.merger.scaling_factor": "it was renamed to method.merger.lambda_",
    "method.merger.top_k": "it was renamed to method.merger.keep_fraction",
}


# -- which config keys change a result -------------------------------------------------------
#: Dotted keys that never change what a run computes: whether to skip a finished run, whether a
#: baseline may come from the cache (a hit equals a miss bit for bit), and console switches.
NON_RESULT_KEYS = frozenset({"resume", "pretrain.cache", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                             "trainer.log_every_n_steps", "trainer.default_root_dir", "stack_size"})
#: Top-level groups that never change a result: where files go, Hydra itself, loggers, callbacks.
NON_RESULT_GROUPS = frozenset({"paths", "hydra", "logger", "callbacks"})


def affects_results(key: str) -> bool:
    """Whether the dotted config ``key`` can change a run's numbers: the one rule of the result hash
    (resume), the baseline cache key, sweep folder names and compare's variant labels. Locations
    (any ``*_dir`` key, e.g. ``data.data_dir``) do not."""
    key = key.lstrip("+~")
    parts = re.split(r"[./]", key)  # `hydra/launcher=joblib` is a Hydra group override
    return (key not in NON_RESULT_KEYS and parts[0] not in NON_RESULT_GROUPS
            and not any(part.endswith("_dir") for part in parts))


def result_config(node: Any, prefix: str = "") -> Any:
    """``node`` (a plain, resolved config container) without the keys that do not affect results."""
    if isinstance(node, Mapping):
        return {k: result_config(v, f"{prefix}{k}.") for k, v in node.items() if affects_results(f"{prefix}{k}")}
    if isinstance(node, list):
        return [result_config(v, prefix) for v in node]
    return node


NO_RETENTION = "none"


def retention_name(cfg: Mapping[str, Any]) -> str:
    """Lower-case class name of ``retention._target_`` (``seqft_lightning.retention.EWC`` -> ``"ewc"``),
    the name the pipeline writes in metrics.json; the no-op base class ``Retention``
    (``retention=none``) and an absent group are ``"none"``."""
    retention = cfg.get("retention")
    target = retention.get("_target_") if isinstance(retention, Mapping) else None
    name = str(target or "").rsplit(".", 1)[-1].lower()
    return NO_RETENTION if name in ("", "retention") else name


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are leaves."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        is_node = isinstance(value, Mapping) and value
        flat.update(flatten(value, f"{prefix}{key}.") if is_node else {f"{prefix}{key}": value})
    return flat


def result_overrides(overrides: Iterable[str]) -> list[str]:
    """The command-line overrides (``key=value``) that affect results, in order."""
    return [o for o in overrides if affects_results(o.split("=", 1)[0])]


def is_seed_key(key: str) -> bool:
    """Whether the dotted ``key`` is a seed (``seed``, ``data.split_seed``, ``retention.seed``, ...): seeds vary over
    the repeats of one variant and never tell variants or knobs apart."""
    last = key.rsplit(".", 1)[-1]
    return last == "seed" or last.endswith("_seed")
