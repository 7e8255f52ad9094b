"""Fuzz cases, part 3: SuperGLUE JSONL through the task source, infer and score inputs."""
from __future__ import annotations

import json
import pathlib

from cases import Loaded, Refused, case

from prompt_tuning_jax import infer, score

RTE = {"premise": "p", "hypothesis": "h", "idx": 0, "label": "entailment"}
WIC = {"word": "w", "sentence1": "a", "sentence2": "b", "start1": 0, "end1": 1, "start2": 0, "end2": 1,
       "idx": 0, "label": False}
MULTIRC = {"idx": 0, "passage": {"text": "t", "questions": [
    {"idx": 0, "question": "q", "answers": [{"idx": 0, "text": "a", "label": 1}]}]}}
RECORD = {"idx": 0, "passage": {"text": "Bob met Al.", "entities": [{"start": 0, "end": 2}]},
          "qas": [{"idx": 0, "query": "@placeholder met Al.", "answers": [{"text": "Bob"}]}]}


def _superglue(d: pathlib.Path, task: str, lines: list) -> tuple[pathlib.Path, object]:
  from prompt_tuning_jax.tasks import sources
  path = d / "train.jsonl"
  path.write_bytes(b"".join(l if isinstance(l, bytes) else (l + "\n").encode() for l in lines))
  source = sources.SuperGlueSource(task, local_dir=d, split_files={"train": "train.jsonl"})
  return path, lambda: list(source.get_dataset("train", shuffle=False).as_numpy_iterator())


@case("superglue rte: good rows, blank lines between")
def _(d):
  _, load = _superglue(d, "rte", [json.dumps(RTE), "", "  ", json.dumps(dict(RTE, idx=1, label="not_entailment"))])
  want = [{"premise": b"p", "hypothesis": b"h", "idx": 0, "label": 0},
          {"premise": b"p", "hypothesis": b"h", "idx": 1, "label": 1}]
  return load, Loaded(want)


_BAD_LINES = {
    "bad JSON": ("rte", "{\"premise\": ", "malformed JSON"),
    "a JSON list": ("rte", "[1, 2]", "JSON object"),
    "a JSON string": ("rte", "\"text\"", "JSON object"),
    "not UTF-8": ("rte", b"{\"premise\": \"\xff\"}\n", "not UTF-8"),
    "missing field": ("rte", json.dumps({"premise": "p", "idx": 1}), "hypothesis"),
    "premise is a number": ("rte", json.dumps(dict(RTE, premise=3)), "premise"),
    "premise is null": ("rte", json.dumps(dict(RTE, premise=None)), "premise"),
    "idx is a string": ("rte", json.dumps(dict(RTE, idx="1")), "idx"),
    "label unknown": ("rte", json.dumps(dict(RTE, label="maybe")), "maybe"),
    "wic start1 is a string": ("wic", json.dumps(dict(WIC, start1="0")), "start1"),
    "wic start1 is a bool": ("wic", json.dumps(dict(WIC, start1=True)), "start1"),
    "multirc questions is a string": ("multirc", json.dumps(dict(MULTIRC, passage={"text": "t", "questions": "q"})),
                                      "multirc"),
    "multirc answer text is a list": ("multirc", json.dumps(MULTIRC).replace('"text": "a"', '"text": ["a"]'),
                                      "answer"),
    "record entities without start": ("record", json.dumps(RECORD).replace('"start": 0, ', ""), "start"),
    "record query is a number": ("record", json.dumps(RECORD).replace('"@placeholder met Al."', "5"), "query"),
}
_GOOD = {"rte": RTE, "wic": WIC, "multirc": MULTIRC, "record": RECORD}

for _label, (_task, _line, _name) in _BAD_LINES.items():
  @case(f"superglue {_task}: {_label} at physical line 5")
  def _(d, _task=_task, _line=_line, _name=_name):
    good = json.dumps(_GOOD[_task])
    path, load = _superglue(d, _task, [good, "", good, "", _line])
    return load, Refused([f"{path}:5", _name])


@case("superglue rte: empty train.jsonl")
def _(d):
  path, load = _superglue(d, "rte", [])
  return load, Refused([str(path), "empty"])


# ----------------------------------------------------------------------------- infer / score
def _write(d: pathlib.Path, lines: list, name: str = "in.jsonl") -> pathlib.Path:
  path = d / name
  path.write_bytes(b"".join(l if isinstance(l, bytes) else (l + "\n").encode() for l in lines))
  return path


@case("infer inputs: good lines with a prompt selector")
def _(d):
  path = _write(d, ['{"inputs": "a"}', "", '{"inputs": "b", "prompt": "rte"}'])
  return (lambda: infer.read_inputs(str(path))), Loaded([("a", None), ("b", "rte")])


_INFER_BAD = {"bad JSON": "{\"inputs\": ", "a JSON string": "\"a\"", "a JSON list": "[\"a\"]", "a number": "3",
              "inputs null": "{\"inputs\": null}", "inputs a dict": "{\"inputs\": {\"t\": 1}}",
              "inputs missing": "{\"text\": \"a\"}", "prompt a list": "{\"inputs\": \"a\", \"prompt\": [1]}",
              "not UTF-8": b"{\"inputs\": \"\xfe\"}\n"}

for _label, _line in _INFER_BAD.items():
  @case(f"infer inputs: {_label} at physical line 3")
  def _(d, _line=_line):
    path = _write(d, ['{"inputs": "a"}', "", _line])
    return (lambda: infer.read_inputs(str(path))), Refused([f"{path}:3"])


@case("infer inputs: empty file")
def _(d):
  path = _write(d, ["", ""])
  return (lambda: infer.read_inputs(str(path))), Refused([str(path), "empty"])


@case("score pairs: good lines")
def _(d):
  path = _write(d, ['{"inputs": "a", "targets": "b"}', '{"inputs": "c", "targets": "d", "x": 1}'])
  return (lambda: score.read_pairs(str(path))), Loaded([{"inputs": "a", "targets": "b"},
                                                         {"inputs": "c", "targets": "d", "x": 1}])


_SCORE_BAD = {"targets a number": "{\"inputs\": \"a\", \"targets\": 1}", "targets missing": "{\"inputs\": \"a\"}",
              "inputs null": "{\"inputs\": null, \"targets\": \"b\"}", "a JSON list": "[]",
              "bad JSON": "{\"inputs\"", "not UTF-8": b"\xc3\x28\n"}

for _label, _line in _SCORE_BAD.items():
  @case(f"score pairs: {_label} at physical line 2")
  def _(d, _line=_line):
    path = _write(d, ['{"inputs": "a", "targets": "b"}', _line])
    return (lambda: score.read_pairs(str(path))), Refused([f"{path}:2"])


@case("score pairs: empty file")
def _(d):
  path = _write(d, [])
  return (lambda: score.read_pairs(str(path))), Refused([str(path), "empty"])
