"""The soft prompt: initializers, the wrapper that attaches it to the frozen T5, and the
files it is shared in.

Its parameter path is named here, once; every other name derives from it: the T5X
variable, the trainable-parameter regex, the original release's numpy file name.
"""
import re

PROMPT_PATH = ("encoder", "prompt", "prompt", "prompt")  # T5X tree path of the [P, d] prompt
PROMPT_VARIABLE = "/".join(PROMPT_PATH)  # 'encoder/prompt/prompt/prompt'
PROMPT_PATTERN = re.escape("/".join(PROMPT_PATH[:2])) + "/.*"  # the prompt subtree (a bank too)
NUMPY_PROMPT_FILE = ".".join(PROMPT_PATH)  # numpy_checkpoints/checkpoint_<step>/<this>
