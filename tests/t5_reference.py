"""T5's own postprocessors and QA metrics (`pip install --no-deps t5==0.9.4`), the reference
for our scoring. Loaded by file so t5's package __init__ (which needs babel, mesh-tf, ...) never
runs; a missing install fails loudly instead of skipping."""
import functools
import importlib.util
import os


def _load(relpath: str, name: str):
  spec = importlib.util.find_spec("t5")
  if spec is None or not spec.submodule_search_locations:
    raise RuntimeError("the reference needs T5: /work/venvs/<venv>/bin/pip install --no-deps t5==0.9.4")
  path = os.path.join(spec.submodule_search_locations[0], relpath)
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def postprocessors():
  return _load("data/postprocessors.py", "t5_reference_postprocessors")


def qa_utils():
  return _load("evaluation/qa_utils.py", "t5_reference_qa_utils")


@functools.lru_cache(maxsize=None)  # loaded once: it registers gin configurables
def preprocessors():
  """t5.data.preprocessors (squad, prefix_lm, ...); needs `babel`, which it imports."""
  return _load("data/preprocessors.py", "t5_reference_preprocessors")
