"""ChatAnyone in JAX: audio-driven, real-time portrait video.

`chatanyone_jax` holds models and pure functions only (no file I/O, flags or
device placement); training lives in `train/`, inference in `infer/` and
media / record handling in `data/`.
"""

__version__ = "0.1.0"
