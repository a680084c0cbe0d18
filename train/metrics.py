"""Metrics: TensorBoard event files (tensorboardX, no TensorFlow) plus a JSON-lines copy of the scalars.

`tensorboard --logdir WORKDIR/tensorboard` shows them. `metrics.jsonl` holds the same scalars, one JSON
object per step, for scripts and tests. Only process 0 writes (`MetricWriter(..., enabled=False)` on the
others).
"""

from __future__ import annotations

import json
import os
import pathlib
import struct

import numpy as np


class MetricWriter:
  """TensorBoard events + `metrics.jsonl` in `workdir`; a no-op where `enabled` is False (processes > 0)."""

  def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self.events = SummaryWriter(logdir=str(workdir / "tensorboard"), flush_secs=10)
    self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    for k, v in scalars.items():
      self.events.add_scalar(k, v, global_step=int(step))
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    """(H, W, 3) float images in [0, 1] (e.g. a source | driving | generated grid)."""
    if not self.enabled:
      return
    for k, v in images.items():
      self.events.add_image(k, np.clip(np.asarray(v, np.float32), 0, 1), global_step=int(step),
                            dataformats="HWC")

  def flush(self) -> None:
    if self.enabled:
      self.events.flush()

  def close(self) -> None:
    if self.enabled:
      self.events.close()
      self._jsonl.close()


def _events(path: str | os.PathLike):
  """The Event protos of one event file, in order (TFRecord framing: length, crc, data, crc)."""
  from tensorboardX.proto import event_pb2

  data = pathlib.Path(path).read_bytes()
  i = 0
  while i < len(data):
    (n,) = struct.unpack_from("<Q", data, i)
    yield event_pb2.Event.FromString(data[i + 12:i + 12 + n])
    i += 16 + n


def read_events(path: str | os.PathLike) -> list[tuple[int, dict[str, float]]]:
  """Scalars of one event file as [(step, {tag: value})], merged per step."""
  by_step: dict[int, dict[str, float]] = {}
  for event in _events(path):
    for v in event.summary.value:
      if v.WhichOneof("value") == "simple_value":
        by_step.setdefault(int(event.step), {})[v.tag] = v.simple_value
  return sorted(by_step.items())


def read_image_tags(path: str | os.PathLike) -> dict[int, list[tuple[str, int, int]]]:
  """Images of one event file as {step: [(tag, height, width)]}."""
  out: dict[int, list[tuple[str, int, int]]] = {}
  for event in _events(path):
    for v in event.summary.value:
      if v.WhichOneof("value") == "image":
        out.setdefault(int(event.step), []).append((v.tag, v.image.height, v.image.width))
  return out
