"""CTranslate2 Whisper weights -> Flax variables of `chatanyone_jax.audio.whisper.WhisperEncoder`.

`read_ct2` parses the bytes of a CTranslate2 `model.bin` (binary format version 6) with NumPy;
`convert_whisper_encoder` maps its `encoder/*` variables onto the encoder and infers the sizes from
them. Reading the file from its package is `data.whisper_weights`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from chatanyone_jax.audio.whisper import WhisperEncoder, positions

# CTranslate2's DataType enum; bfloat16 (5) is widened to float32.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
CT2_VERSION = 6


def read_ct2(data: bytes) -> dict[str, np.ndarray]:
  """Variables of a CTranslate2 model.bin, {name: array} (read-only views of `data`; aliases resolved)."""
  offset = 0

  def unpack(fmt: str):
    nonlocal offset
    (value,) = struct.unpack_from("<" + fmt, data, offset)
    offset += struct.calcsize("<" + fmt)
    return value

  def string() -> str:
    nonlocal offset
    n = unpack("H")
    s = data[offset:offset + n - 1].decode()  # NUL-terminated
    offset += n
    return s

  version = unpack("I")
  if version != CT2_VERSION:
    raise ValueError(f"CTranslate2 binary version {version}; this reader handles version {CT2_VERSION}")
  string()  # spec name
  unpack("I")  # spec revision
  out = {}
  for _ in range(unpack("I")):
    name = string()
    shape = [unpack("I") for _ in range(unpack("B"))]
    dtype = np.dtype(_CT2_DTYPES[unpack("B")])
    nbytes = unpack("I")
    a = np.frombuffer(data, dtype, nbytes // dtype.itemsize, offset).reshape(shape)
    if dtype == np.uint16:  # bfloat16 bits
      a = (a.astype(np.uint32) << 16).view(np.float32)
    out[name] = a
    offset += nbytes
  for _ in range(unpack("I")):
    alias = string()
    out[alias] = out[string()]
  return out


def convert_whisper_encoder(variables: Mapping[str, np.ndarray],
                            dtype: Any = np.float32) -> tuple[WhisperEncoder, dict[str, Any]]:
  """CTranslate2 Whisper variables -> (encoder of the matching size, {"params": ...} in `dtype`).

  CTranslate2 fuses q / k / v into `self_attention/linear_0` ((3D, D), Whisper's key has no bias: zeros
  there) and stores torch Linear / Conv1d layouts ((out, in), (out, in, k)). Every `encoder/` variable
  is used; the stored position table is checked against `positions` instead of being loaded.
  """
  enc = {k[len("encoder/"):]: np.asarray(v) for k, v in variables.items() if k.startswith("encoder/")}
  if "conv1/weight" not in enc:
    raise ValueError("no Whisper encoder variables (encoder/conv1/weight) in this model")
  used = set()

  def take(name: str) -> np.ndarray:
    used.add(name)
    return enc[name].astype(np.float32)

  width = enc["conv1/weight"].shape[0]
  num_heads = int(take("num_heads"))
  num_layers = sum(f"layer_{i}/ffn/linear_0/weight" in enc for i in range(len(enc)))
  mlp_dim = enc["layer_0/ffn/linear_0/weight"].shape[0]
  head_dim = width // num_heads
  table = take("position_encodings/encodings")
  if not np.allclose(table, positions(*table.shape), atol=2e-3):  # fp16 storage
    raise ValueError("the stored position encodings are not Whisper's sinusoids")
  module = WhisperEncoder(width=width, num_heads=num_heads, num_layers=num_layers, mlp_dim=mlp_dim,
                          max_frames=table.shape[0])

  conv = lambda p: {"kernel": take(p + "/weight").transpose(2, 1, 0), "bias": take(p + "/bias")}
  dense = lambda p: {"kernel": take(p + "/weight").T, "bias": take(p + "/bias")}
  norm = lambda p: {"scale": take(p + "/gamma"), "bias": take(p + "/beta")}
  params: dict[str, Any] = {"conv1": conv("conv1"), "conv2": conv("conv2"), "ln_post": norm("layer_norm")}
  for i in range(num_layers):
    p = f"layer_{i}/"
    qkv_w = take(p + "self_attention/linear_0/weight").reshape(3, num_heads, head_dim, width)
    qkv_b = take(p + "self_attention/linear_0/bias").reshape(3, num_heads, head_dim)
    out_w = take(p + "self_attention/linear_1/weight")  # (D, D) = (out, heads * head_dim)
    attn = {name: {"kernel": qkv_w[j].transpose(2, 0, 1), "bias": qkv_b[j]}
            for j, name in enumerate(("query", "key", "value"))}
    attn["out"] = {"kernel": out_w.T.reshape(num_heads, head_dim, width),
                   "bias": take(p + "self_attention/linear_1/bias")}
    params[f"block{i}"] = {"attn_ln": norm(p + "self_attention/layer_norm"), "attn": attn,
                           "mlp_ln": norm(p + "ffn/layer_norm"), "fc1": dense(p + "ffn/linear_0"),
                           "fc2": dense(p + "ffn/linear_1")}
  unused = sorted(set(enc) - used)
  if unused:
    raise ValueError(f"encoder variables not mapped (another architecture?): {unused[:12]}")
  cast = lambda a: np.ascontiguousarray(a, dtype)
  return module, {"params": jax.tree.map(cast, params)}
