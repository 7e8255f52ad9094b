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
# (mean of the five single prompts, best single prompt, majority-vote ensemble).
# 'superglue' is the SuperGLUE average. Tasks the table prints that are not listed here
# are left out rather than guessed.
TABLE3_SOURCE = "Table 3 (T5-XXL, SuperGLUE dev, 5 prompts)"
TABLE3_COLUMNS = ("average", "best", "ensemble")
TABLE3: dict[str, tuple[float, float, float]] = {
    "boolq": (91.1, 91.3, 91.7),
    "copa": (98.8, 100.0, 100.0),
    "rte": (92.6, 93.5, 93.5),
    "wic": (76.2, 76.6, 77.4),
    "wsc": (95.8, 96.2, 96.2),
    "superglue": (90.5, 91.0, 91.3),
}

# Table 2: zero-shot transfer between paraphrase tasks, T5-XXL, trained on the source and
# evaluated on the target's dev set without seeing it (mean of 3 runs).
TABLE2_SOURCE = "Table 2 (T5-XXL, zero-shot transfer, mean of 3 runs)"
TABLE2: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("qqp", "mrpc"): {"model_tuning": {"accuracy": 73.1, "f1": 81.2},
                      "prompt_tuning": {"accuracy": 76.3, "f1": 84.3}},
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


def table3(task: str, column: str) -> Published | None:
  """Table 3's `column` ('average', 'best', 'ensemble') for `task`, or None if unprinted."""
  if column not in TABLE3_COLUMNS:
    raise ValueError(f"Table 3 column {column!r}; expected one of {TABLE3_COLUMNS}")
  row = TABLE3.get(task)
  return None if row is None else Published(row[TABLE3_COLUMNS.index(column)], TABLE3_SOURCE)


def table2(source: str, target: str, method: str, metric: str) -> Published | None:
  """Table 2's `metric` ('accuracy', 'f1') for `method` trained on source, scored on target."""
  value = TABLE2.get((source, target), {}).get(method, {}).get(metric)
  return None if value is None else Published(value, TABLE2_SOURCE)
