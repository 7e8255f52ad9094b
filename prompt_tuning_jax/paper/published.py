"""The numbers Lester, Al-Rfou and Constant (2021) publish, as data, each with its source.

Only numbers printed in the paper's tables are here. Figure 1 and the Figure 3 ablations
are plots without printed values, so their curves have no published numbers to put
beside ours; the one exception is T5-XXL, whose single-prompt SuperGLUE dev scores
(mean of five prompts) Table 3 prints. Scores are percentages, as in the paper.
"""
from __future__ import annotations

import dataclasses

PAPER = "Lester, Al-Rfou and Constant (2021), The Power of Scale for Parameter-Efficient Prompt Tuning"


@dataclasses.dataclass(frozen=True)
class Published:
  """One published number and where it is printed."""
  value: float
  source: str


# Table 3: five prompts trained on one frozen T5-XXL, SuperGLUE dev. Per task:
# (mean of the five single prompts, best single prompt, majority-vote ensemble), each the
# task's score; multi-metric tasks print every metric (TABLE3_METRICS) and their score
# here is the mean of those metrics, as the SuperGLUE average takes it.
# 'superglue' is the SuperGLUE average.
TABLE3_SOURCE = "Table 3 (T5-XXL, SuperGLUE dev, 5 prompts)"
TABLE3_COLUMNS = ("average", "best", "ensemble")
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
TABLE2_SOURCE = "Table 2 (T5-XXL, zero-shot transfer, mean of 3 runs)"
TABLE2: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("qqp", "mrpc"): {"model_tuning": {"accuracy": 73.1, "f1": 81.2},
                      "prompt_tuning": {"accuracy": 76.3, "f1": 84.3}},
    ("mrpc", "qqp"): {"model_tuning": {"accuracy": 74.9, "f1": 70.9},
                      "prompt_tuning": {"accuracy": 75.4, "f1": 69.7}},
}
TABLE2_STD: dict[tuple[str, str], dict[str, dict[str, float]]] = {
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
  return None if row is None else Published(row[TABLE3_COLUMNS.index(column)], TABLE3_SOURCE)


def table1(dataset: str, method: str) -> tuple[Published, Published] | None:
  """Table 1's (mean, std) F1 for `method` trained on SQuAD and scored on `dataset`."""
  row = TABLE1.get(dataset, {}).get(method)
  return None if row is None else (Published(row[0], TABLE1_SOURCE), Published(row[1], TABLE1_SOURCE))


def table2(source: str, target: str, method: str, metric: str) -> Published | None:
  """Table 2's `metric` ('accuracy', 'f1') for `method` trained on source, scored on target."""
  value = TABLE2.get((source, target), {}).get(method, {}).get(metric)
  return None if value is None else Published(value, TABLE2_SOURCE)
