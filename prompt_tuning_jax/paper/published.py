"""The numbers Lester, Al-Rfou and Constant (2021) publish, as data, each with its source.

Only numbers printed in the paper's tables are here, with the text as printed (`printed`:
Table 3 prints CB's best as "100.00 / 100.00", the rest with one decimal). Figure 1 (all
three curves: Model Tuning, Model Tuning (Multi-task), Prompt Tuning) and the Figure 3
ablations are plots without printed values, so their curves have no published numbers to
put beside ours; the one exception is T5-XXL, whose single-prompt SuperGLUE dev scores
(mean of five prompts) Table 3 prints. A value we compute from printed ones (the mean of a
multi-metric row, e.g. ReCoRD (92.7 + 93.4) / 2 = 93.05) is marked `derived` and is never
shown as the paper's. Scores are percentages, as in the paper.
"""
from __future__ import annotations

import dataclasses

PAPER = "Lester, Al-Rfou and Constant (2021), The Power of Scale for Parameter-Efficient Prompt Tuning"


@dataclasses.dataclass(frozen=True)
class Published:
  """One published number and where it is printed (`derived`: computed by us from printed ones)."""
  value: float
  source: str
  text: str | None = None  # as printed, e.g. "100.00"
  derived: bool = False

  @property
  def printed(self) -> str:
    """The number as the paper prints it; a derived value with the decimals it needs (93.05)."""
    if self.text is not None:
      return self.text
    return f"{self.value:.2f}".rstrip("0").rstrip(".") if self.derived else f"{self.value:.1f}"


# Figure 1's "Model Tuning (Multi-task)" curve: the paper prints no numbers for it (nor for
# the other two curves); none are stored, none are invented.
FIGURE1_PRINTED: dict[str, float] = {}


# Table 3: five prompts trained on one frozen T5-XXL, SuperGLUE dev. Per task:
# (mean of the five single prompts, best single prompt, majority-vote ensemble), each the
# task's score; multi-metric tasks print every metric (TABLE3_METRICS) and their score
# here is the mean of those metrics, as the SuperGLUE average takes it.
# 'superglue' is the SuperGLUE average.
TABLE3_SOURCE = "Table 3 (T5-XXL, SuperGLUE dev, 5 prompts)"
TABLE3_COLUMNS = ("average", "best", "ensemble")
# The text of each cell as printed (CB's best column prints two decimals).
TABLE3_PRINTED: dict[str, tuple[str, str, str]] = {
    "boolq": ("91.1", "91.3", "91.7"), "cb": ("99.3 / 99.0", "100.00 / 100.00", "100.0 / 100.0"),
    "copa": ("98.8", "100.0", "100.0"), "multirc": ("65.7 / 88.7", "66.3 / 89.0", "67.1 / 89.4"),
    "record": ("92.7 / 93.4", "92.9 / 93.5", "93.2 / 93.9"), "rte": ("92.6", "93.5", "93.5"),
    "wic": ("76.2", "76.6", "77.4"), "wsc": ("95.8", "96.2", "96.2"), "superglue": ("90.5", "91.0", "91.3"),
}
# The printed metric order of the multi-metric rows: "acc./F1", "EM/F1a", "EM/F1".
TABLE3_METRIC_ORDER = {"cb": ("accuracy", "macro_f1"), "multirc": ("em", "f1a"), "record": ("em", "f1")}
TABLE3_METRICS: dict[str, dict[str, tuple[float, float, float]]] = {
    "cb": {"accuracy": (99.3, 100.0, 100.0), "macro_f1": (99.0, 100.0, 100.0)},
    "multirc": {"em": (65.7, 66.3, 67.1), "f1a": (88.7, 89.0, 89.4)},
    "record": {"em": (92.7, 92.9, 93.2), "f1": (93.4, 93.5, 93.9)},
}
TABLE3: dict[str, tuple[float, float, float]] = {
    "boolq": (91.1, 91.3, 91.7),
    "copa": (98.8, 100.0, 100.0),
    "rte": (92.6, 93.5, 93.5),
    "wic": (76.2, 76.6, 77.4),
    "wsc": (95.8, 96.2, 96.2),
    "superglue": (90.5, 91.0, 91.3),
    **{task: tuple(round(sum(v[i] for v in m.values()) / len(m), 2) for i in range(3))
       for task, m in TABLE3_METRICS.items()},
}

# Table 2: zero-shot transfer between paraphrase tasks, T5-XXL, trained on the source and
# evaluated on the target's dev set without seeing it (mean of 3 runs).
TABLE2_SOURCE = "Table 2 (T5-XXL, zero-shot transfer, mean ± std of 3 runs)"
TABLE2: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("qqp", "mrpc"): {"model_tuning": {"accuracy": 73.1, "f1": 81.2},
                      "prompt_tuning": {"accuracy": 76.3, "f1": 84.3}},
    ("mrpc", "qqp"): {"model_tuning": {"accuracy": 74.9, "f1": 70.9},
                      "prompt_tuning": {"accuracy": 75.4, "f1": 69.7}},
}
TABLE2_STD: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("qqp", "mrpc"): {"model_tuning": {"accuracy": 0.9, "f1": 2.1},
                      "prompt_tuning": {"accuracy": 0.1, "f1": 0.3}},
    ("mrpc", "qqp"): {"model_tuning": {"accuracy": 1.3, "f1": 1.2},
                      "prompt_tuning": {"accuracy": 0.8, "f1": 0.3}},
}

# Table 1: domain shift, train on SQuAD, F1 on the in-domain dev set and on MRQA 2019's
# out-of-domain dev sets, T5-XXL, mean and std of 3 runs: dataset -> method -> (mean, std).
TABLE1_SOURCE = "Table 1 (T5-XXL, train on SQuAD, F1, mean ± std of 3 runs)"
TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "squad": {"model_tuning": (94.9, 0.2), "prompt_tuning": (94.8, 0.1)},
    "textbookqa": {"model_tuning": (54.3, 3.7), "prompt_tuning": (66.8, 2.9)},
    "bioasq": {"model_tuning": (77.9, 0.4), "prompt_tuning": (79.1, 0.3)},
    "race": {"model_tuning": (59.8, 0.6), "prompt_tuning": (60.7, 0.5)},
    "relationextraction": {"model_tuning": (88.4, 0.1), "prompt_tuning": (88.8, 0.2)},
    "duorc": {"model_tuning": (68.9, 0.7), "prompt_tuning": (67.7, 1.1)},
    "drop": {"model_tuning": (68.9, 1.7), "prompt_tuning": (67.1, 1.9)},
}

# Parameters of each frozen T5 1.1 plus a one-token prompt (the paper's x axis of
# Figure 1 and Figure 3; a P-token prompt adds P x d_model).
MODEL_PARAMS: dict[str, int] = {
    "small": 76_961_664,
    "base": 247_578_624,
    "large": 783_151_104,
    "xl": 2_849_759_232,
    "xxl": 11_135_336_448,
}


def table3(task: str, column: str, metric: str | None = None) -> Published | None:
  """Table 3's `column` ('average', 'best', 'ensemble') for `task`: its score, or one printed
  `metric` of a multi-metric task; None if unprinted."""
  if column not in TABLE3_COLUMNS:
    raise ValueError(f"Table 3 column {column!r}; expected one of {TABLE3_COLUMNS}")
  row = TABLE3.get(task) if metric is None else TABLE3_METRICS.get(task, {}).get(metric)
  if row is None:
    return None
  i = TABLE3_COLUMNS.index(column)
  if metric is None and task in TABLE3_METRICS:  # the mean of a multi-metric row: ours, not printed
    return Published(row[i], TABLE3_SOURCE, derived=True)
  if metric is None:
    return Published(row[i], TABLE3_SOURCE, text=TABLE3_PRINTED[task][i])
  text = TABLE3_PRINTED[task][i].split(" / ")[TABLE3_METRIC_ORDER[task].index(metric)]
  return Published(row[i], TABLE3_SOURCE, text=text)


def table3_printed(task: str, column: str) -> str | None:
  """Table 3's cell exactly as printed ("92.7 / 93.4" for ReCoRD's EM / F1), or None."""
  row = TABLE3_PRINTED.get(task)
  return None if row is None else row[TABLE3_COLUMNS.index(column)]


def table1(dataset: str, method: str) -> tuple[Published, Published] | None:
  """Table 1's (mean, std) F1 for `method` trained on SQuAD and scored on `dataset`."""
  row = TABLE1.get(dataset, {}).get(method)
  return None if row is None else (Published(row[0], TABLE1_SOURCE), Published(row[1], TABLE1_SOURCE))


def table2(source: str, target: str, method: str, metric: str) -> Published | None:
  """Table 2's mean `metric` ('accuracy', 'f1') for `method` trained on source, scored on target."""
  value = TABLE2.get((source, target), {}).get(method, {}).get(metric)
  return None if value is None else Published(value, TABLE2_SOURCE)


def table2_std(source: str, target: str, method: str, metric: str) -> Published | None:
  """Table 2's std over its 3 runs for the same cell."""
  value = TABLE2_STD.get((source, target), {}).get(method, {}).get(metric)
  return None if value is None else Published(value, TABLE2_SOURCE)
