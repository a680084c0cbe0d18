"""Grain input pipelines over the preprocessed records (`data.records`): render pairs and motion windows.

`render_pairs` (stage 2: the renderer) yields a source and a driving frame of one clip with their
keypoints, hand image and masks; `motion_windows` (stage 1: the motion generators) yields T + H
consecutive frames of coefficients and keypoints with their audio and a reference window. Both are
`grain.python.DataLoader`s (`make_loader`): an `IndexSampler` (seeded shuffle, endless or `num_epochs`,
split per JAX process with `ShardByJaxProcess`), per-example transforms, `Batch`, and `worker_count`
worker processes (0 = in process, as in the tests). Their iterators are checkpointed beside the model by
`train.checkpoint` (`grain.python.PyGrainCheckpointSave`), so a resumed run continues with the next
unseen batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence

import grain.python as grain
import numpy as np
from PIL import Image

from data import records
from data.crops import face_mask, mouth_mask
from data.encoding import decode_image
from data.lookahead import audio_valid as lookahead_valid
from data.lookahead import lookahead_audio
from data.silence import SILENCE_RAMP, LipGap, silence_audio, silence_span

# ---------------------------------------------------------------- helpers


def _image(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
  """Encoded image -> (H, W, C) float32 in [0, 1], resized to `size` (H, W) if given."""
  return decode_image(data, size).astype(np.float32) / 255.0


def crop_size(meta: dict, crop: str) -> tuple[int, int]:
  """(H, W) of the stored `crop` ("body" or "head") in the records whose `records.read_meta` is `meta`."""
  if crop == "body":
    return tuple(meta["body_size"])
  return (meta["head_size"], meta["head_size"])


# Grain's default read options (16 threads, 500 records ahead) suit remote disks. Our reads are local, each
# deserialising a tfds example under the GIL: a new iterator read 500 records whatever it went on to use (a
# 3-step run of batch 8 uses 24). A few batches ahead keep the reads ahead of the steps.
READ_AHEAD_BATCHES = 4
MAX_READ_THREADS = 16


def read_options(batch_size: int, read_ahead_batches: int = READ_AHEAD_BATCHES) -> grain.ReadOptions:
  """`read_ahead_batches` batches of records read ahead, by at most one thread per core (16 at most)."""
  buffer = batch_size * read_ahead_batches
  threads = max(1, min(MAX_READ_THREADS, os.cpu_count() or 1, buffer))
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer)


def make_loader(source, operations: Sequence, *, batch_size: int, seed: int, shuffle: bool = True,
                num_epochs: int | None = None, worker_count: int = 0,
                shard_options: grain.ShardOptions | None = None, drop_remainder: bool = True,
                read_ahead_batches: int = READ_AHEAD_BATCHES) -> grain.DataLoader:
  """A DataLoader over `source` with the given per-example operations, then `Batch`.

  Args:
    shard_options: default `ShardByJaxProcess(drop_remainder=True)`: process i of n reads every n-th
      record, so hosts never see the same example in an epoch.
    read_ahead_batches: how far each process (each grain worker process when `worker_count` > 0) reads
      records ahead of the batch being built, in batches (`read_options`).
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if read_ahead_batches <= 0:
    raise ValueError(f"read_ahead_batches must be positive, got {read_ahead_batches}")
  if shard_options is None:
    shard_options = grain.ShardByJaxProcess(drop_remainder=True)
  sampler = grain.IndexSampler(num_records=len(source), shard_options=shard_options, shuffle=shuffle,
                               num_epochs=num_epochs, seed=seed)
  ops = list(operations) + [grain.Batch(batch_size=batch_size, drop_remainder=drop_remainder)]
  return grain.DataLoader(data_source=source, sampler=sampler, operations=ops, worker_count=worker_count,
                          shard_options=shard_options,
                          read_options=read_options(batch_size, read_ahead_batches))


# ---------------------------------------------------------------- render pairs


@dataclasses.dataclass(frozen=True)
class RenderPairConfig:
  """Render-pair settings.

  Attributes:
    crop: "body" (upper512x768: control keypoints X_head ⊕ X_body, hands) or "head" (head512 / refine).
    input_size: (H, W) of source / driving / hand image (the renderer's input); None = output size / 2.
    output_size: (H, W) of driving_target and the masks; None = the stored crop size.
    max_gap: the source frame is at most this many frames from the driving one (None: anywhere in
      the clip); never the driving frame itself unless the clip has one frame.
  """

  crop: str = "body"
  input_size: tuple[int, int] | None = None
  output_size: tuple[int, int] | None = None
  max_gap: int | None = None

  def __post_init__(self):
    if self.crop not in ("body", "head"):
      raise ValueError(f"crop must be 'body' or 'head', got {self.crop!r}")


class PairRecords(grain.RandomMapTransform):
  """Driving frame record -> (source record, driving record) of the same clip (random source)."""

  def __init__(self, frames_source, max_gap: int | None):
    self.frames = frames_source
    self.max_gap = max_gap

  def random_map(self, driving: dict, rng: np.random.Generator) -> dict:
    start, length = int(driving["clip_start"]), int(driving["clip_length"])
    f = int(driving["frame_index"])
    lo, hi = 0, length - 1
    if self.max_gap is not None:
      lo, hi = max(0, f - self.max_gap), min(length - 1, f + self.max_gap)
    if hi > lo:
      j = int(rng.integers(lo, hi))  # [lo, hi) then skip the driving frame: uniform over the others
      j = j + 1 if j >= f else j
    else:
      j = f
    return {"source": self.frames[start + j], "driving": driving}


class DecodePair(grain.MapTransform):
  """Decodes the two records into the arrays of the module docstring."""

  def __init__(self, config: RenderPairConfig, stored_size: tuple[int, int]):
    self.config = config
    self.stored_size = tuple(stored_size)
    out = tuple(config.output_size or stored_size)
    self.output_size = out
    self.input_size = tuple(config.input_size or (out[0] // 2, out[1] // 2))

  def map(self, pair: dict) -> dict:
    src, drv = pair["source"], pair["driving"]
    body = self.config.crop == "body"
    key = "body_jpeg" if body else "head_jpeg"
    kp = "head_kp" if body else "head_kp_head"
    driving_full = _image(drv[key], self.output_size)
    out = {
        "source": _image(src[key], self.input_size),
        "driving": np.asarray(Image.fromarray((driving_full * 255 + 0.5).astype(np.uint8)).resize(
            (self.input_size[1], self.input_size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0),
            np.float32) / 255.0,
        "driving_target": driving_full,
        "kp_head_source": np.asarray(src[kp], np.float32),
        "kp_head_driving": np.asarray(drv[kp], np.float32),
        "clip_index": np.int32(drv["clip_index"]),
        "source_index": np.int32(src["clip_start"] + src["frame_index"]),
        "driving_index": np.int32(drv["clip_start"] + drv["frame_index"]),
    }
    if body:
      masks = _image(drv["mask_png"], self.output_size)  # (H, W, 3): face, hands, person
      out.update(
          face_mask=masks[..., 0:1], hand_mask=masks[..., 1:2], person_mask=masks[..., 2:3],
          hand_image=_image(drv["hand_jpeg"], self.input_size),
          hand_present=np.asarray(drv["hand_present"], bool),
          body_kp_source=np.asarray(src["body_kp"], np.float32),
          body_kp_driving=np.asarray(drv["body_kp"], np.float32),
          body_visibility_source=np.asarray(src["body_visibility"], np.float32),
          body_visibility_driving=np.asarray(drv["body_visibility"], np.float32))
    h, w = self.output_size
    # The face-mesh points are in pixels of the stored crop: scale them to the output size.
    sh, sw = self.stored_size
    pts = np.asarray(drv["face" if body else "face_head"], np.float32) * np.array([w / sw, h / sh, w / sw],
                                                                                  np.float32)
    if not body:
      out["face_mask"] = face_mask(pts, (h, w))[..., None].astype(np.float32) / 255.0
    out["mouth_mask"] = mouth_mask(pts, (h, w))[..., None].astype(np.float32) / 255.0
    return out


def render_pairs(root: str | os.PathLike, *, batch_size: int, split: str = "train", seed: int = 0,
                 config: RenderPairConfig = RenderPairConfig(), shuffle: bool = True,
                 num_epochs: int | None = None, worker_count: int = 0,
                 shard_options: grain.ShardOptions | None = None) -> grain.DataLoader:
  """Batches of (source, driving) pairs of the same clip for the renderer (stage 2).

  Keys (B = batch_size; Hi, Wi the input size, Ho, Wo the output size of `config`):
    source, driving           (B, Hi, Wi, 3) float32 in [0, 1]
    driving_target            (B, Ho, Wo, 3) (the stored crop size by default)
    kp_head_source / _driving (B, 32, 3) head-template keypoints, grid units of the crop
    body_kp_source / _driving (B, 21, 3), body_visibility_source / _driving (B, 21)   [body crop only]
    hand_image                (B, Hi, Wi, 3) rendered hands of the driving frame       [body crop only]
    hand_present              (B, 2) bool                                               [body crop only]
    face_mask, hand_mask, person_mask (B, Ho, Wo, 1) float32 in [0, 1] of the driving frame
    mouth_mask                (B, Ho, Wo, 1) the driving frame's outer-lip hull, grown (`crops.mouth_mask`)
    clip_index, source_index, driving_index (B,) int32
  With `crop="head"` the images are the head crops (face refine / head512) and there is no body or hand
  entry (hand_mask and person_mask are absent; face_mask is the face-mesh hull in the head crop).
  """
  meta = records.read_meta(root)
  frames = records.data_source(root, "frames", split)
  stored = crop_size(meta, config.crop)
  decode = DecodePair(config, stored)
  return make_loader(frames, [PairRecords(frames, config.max_gap), decode], batch_size=batch_size, seed=seed,
                     shuffle=shuffle, num_epochs=num_epochs, worker_count=worker_count,
                     shard_options=shard_options)


# ---------------------------------------------------------------- motion windows


@dataclasses.dataclass(frozen=True)
class MotionWindowConfig:
  """Motion-window settings: T (window) + H (history) frames per example, one start every `stride`.

  short_min_frames: clips shorter than T + H with at least this many frames (0: none) give one padded
  window each, so that word-level clips (LRC-AR: 36 frames) train the model too. The clip ends at the
  window's end when it has T frames or more (the history is cut short), else it fills the window from
  its first frame on with no history at all; positions outside the clip repeat its edge frames and are
  flagged in "valid" (the loss skips them, the model gets its null history). Padding with a mask keeps
  every window one real utterance (no seam between clips, as sampling across clips would have) at the
  one window length inference uses (shorter windows would be a second program and model).
  """

  window: int = 40
  history: int = 10
  stride: int = 5
  short_min_frames: int = 0

  @property
  def length(self) -> int:
    return self.window + self.history


class WindowIndex:
  """Random-access source of (clip, start) pairs: every start of a whole T + H window in every clip, and
  one negative start (a padded window, `MotionWindowConfig.short_min_frames`) per short clip."""

  def __init__(self, clip_frames: Sequence[int], config: MotionWindowConfig, name: str = ""):
    self.config = config
    self.name = name
    rows = []
    for c, n in enumerate(clip_frames):
      for s in range(0, n - config.length + 1, config.stride):
        rows.append((c, s))
      if 0 < config.short_min_frames <= n < config.length:
        rows.append((c, n - config.length if n >= config.window else -config.history))
    if not rows:
      raise ValueError(f"no clip has {config.length} frames (window {config.window} + history "
                       f"{config.history}); preprocess longer videos, lower the window or set "
                       f"short_min_frames")
    self.rows = np.asarray(rows, np.int64)

  def __len__(self) -> int:
    return len(self.rows)

  def __repr__(self) -> str:  # grain checks it when restoring an iterator: stable across processes
    c = self.config
    return (f"WindowIndex({self.name}, windows={len(self.rows)}, window={c.window}, history={c.history}, "
            f"stride={c.stride}, short_min_frames={c.short_min_frames})")

  def __getitem__(self, i: int) -> dict:
    c, s = self.rows[i]
    return {"clip": int(c), "start": int(s), "row": int(i)}


class CutWindow(grain.RandomMapTransform):
  """(clip, start) -> the window's arrays, plus a random reference window of the same clip.

  Decoded clip records are kept in an LRU cache of `cache` clips per worker: decoding a record costs far
  more than cutting a window, and shuffled windows revisit every clip.

  Silence augmentation (`silence_prob` > 0): with that probability a window's fixed span
  (`silence_span`, 0.4-1.2 s of the generated T frames) becomes faint noise and its expression target eases
  into the clip's most closed mouth (the frame of least inner-lip gap) and back, SILENCE_RAMP frames each
  way, the pose untouched. The training clips are nearly all speech: without it the model never sees a
  pause and keeps talking through one. With cached speech features it needs `silent_speech_features`,
  the cache of the silenced audio (`data.speech_features`, variant "silent").

  Look-ahead augmentation (`lookahead_prob` > 0; `data.lookahead`): with that probability (among the
  windows not silenced) a window's audio is zeros after its fixed cut, as the low-latency stream's audio
  after its look-ahead, and "audio_valid" is False there; with cached speech features it needs
  `lookahead_speech_features` (variant "lookahead").
  """

  def __init__(self, clips_source, config: MotionWindowConfig, samples_per_frame: float, cache: int = 256,
               speech_features: str | os.PathLike | None = None, silence_prob: float = 0.0,
               silent_speech_features: str | os.PathLike | None = None, lookahead_prob: float = 0.0,
               lookahead_speech_features: str | os.PathLike | None = None):
    for name, prob, variant in (("silence_prob", silence_prob, silent_speech_features),
                                ("lookahead_prob", lookahead_prob, lookahead_speech_features)):
      if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name} is a probability (0 = off), got {prob}")
      if prob > 0 and speech_features is not None and variant is None:
        what, cache = (("the silenced audio", "silent") if name == "silence_prob" else
                       ("the audio cut after each window's look-ahead", "lookahead"))
        raise ValueError(f"{name} > 0 with cached speech features needs the cache of {what} "
                         f"(data.speech_features.ensure(..., variant={cache!r}))")
    self.clips = clips_source
    self.config = config
    self.spf = samples_per_frame
    self.cache = cache
    paths = {None: speech_features, "silent": silent_speech_features, "lookahead": lookahead_speech_features}
    self.speech_paths = {k: str(v) for k, v in paths.items() if v is not None}  # cache variant -> .npy
    self.silence_prob = float(silence_prob)
    self.lookahead_prob = float(lookahead_prob)
    self._read = functools.lru_cache(maxsize=cache)(self._read_clip)
    self._speech = {}
    self._lip_gap = None

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_read"]
    state["_speech"] = {}  # memory-mapped again in each worker
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._read = functools.lru_cache(maxsize=state.get("cache", 256))(self._read_clip)

  def speech(self, row: int, variant: str | None = None) -> np.ndarray:
    """The cached speech features of a window row (`data.speech_features`), float32; variant "silent": of
    the row's audio with its silence span, "lookahead": cut after its look-ahead."""
    if variant not in self._speech:
      self._speech[variant] = np.load(self.speech_paths[variant], mmap_mode="r")
    return np.asarray(self._speech[variant][row], np.float32)

  def closed_mouth(self, clip: dict) -> np.ndarray:
    """(n_exp,) the expression of the clip's frame with the least inner-lip gap."""
    if self._lip_gap is None:
      self._lip_gap = LipGap()
    gap = self._lip_gap(clip["exp"], clip["identity"])
    return np.asarray(clip["exp"][int(np.argmin(gap))], np.float32)

  def silence(self, row: int, clip: dict, exp: np.ndarray, audio: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exp, audio, weight) of a window with its silence span: the expression eased into the clip's closed
    mouth inside the span by weight (H+T,) in [0, 1] (ramps of SILENCE_RAMP frames, none where the span ends
    with the window)."""
    a, b = silence_span(row, self.config)
    f = np.arange(exp.shape[0])
    w = np.clip(np.minimum((f - a + 1) / SILENCE_RAMP, (b - f) / SILENCE_RAMP), 0.0, 1.0)
    if b >= exp.shape[0]:
      w = np.where(f >= a, np.clip((f - a + 1) / SILENCE_RAMP, 0.0, 1.0), 0.0)
    exp = exp + w[:, None] * (self.closed_mouth(clip)[None] - exp)
    return exp.astype(np.float32), silence_audio(audio, row, self.config, 0, self.spf), w.astype(np.float32)

  def _read_clip(self, c: int) -> dict:
    return self.clips[c]

  def reference_start(self, n: int, start: int, rng: np.random.Generator) -> int:
    t, length = self.config.window, self.config.length
    starts = np.arange(0, max(n - t + 1, 1))  # a clip shorter than T: its start (padded, ref_valid False)
    free = starts[(starts + t <= start) | (starts >= start + length)]
    if free.size:
      return int(rng.choice(free))
    dist = np.abs(starts - start)
    return int(starts[np.argmax(dist)])

  def random_map(self, item: dict, rng: np.random.Generator) -> dict:
    c, s = item["clip"], item["start"]
    clip = self._read(c)
    n = int(clip["num_frames"])
    length, t = self.config.length, self.config.window
    frames = np.arange(s, s + length)
    valid = (frames >= 0) & (frames < n)
    take = np.clip(frames, 0, n - 1)  # a padded window repeats the clip's edge frames
    motion = np.concatenate([clip["exp"], clip["pose"]], -1).astype(np.float32)
    a = int(round(s * self.spf))
    num = int(round(length * self.spf))
    audio = np.zeros(num, np.float32)  # silence outside the clip
    lo = max(a, 0)
    chunk = clip["audio"][lo:a + num].astype(np.float32) / 32768.0
    audio[lo - a:lo - a + chunk.size] = chunk
    r = self.reference_start(n, s, rng)
    ref = np.clip(np.arange(r, r + t), 0, n - 1)
    silent = self.silence_prob > 0 and rng.random() < self.silence_prob
    ahead = not silent and self.lookahead_prob > 0 and rng.random() < self.lookahead_prob
    exp, window = clip["exp"][take], motion[take]
    heard = np.ones((t,), bool)
    quiet = np.zeros((length,), np.float32)
    if silent:
      exp, audio, quiet = self.silence(item["row"], clip, exp, audio)
      window[:, :exp.shape[-1]] = exp  # motion = exp ⊕ pose
    elif ahead:
      audio = lookahead_audio(audio, item["row"], self.config, 0, self.spf)
      heard = lookahead_valid(item["row"], self.config)
    variant = "silent" if silent else "lookahead" if ahead else None
    extra = {"speech": self.speech(item["row"], variant)} if None in self.speech_paths else {}
    return {**extra,
        "motion": window, "exp": exp, "pose": clip["pose"][take],
        "scale": clip["scale"][take], "head_kp": clip["head_kp"][take], "body_kp": clip["body_kp"][take],
        "body_visibility": clip["body_visibility"][take], "hand_coeffs": clip["hand_coeffs"][take],
        "hand_present": np.asarray(clip["hand_present"][take], bool), "audio": audio, "valid": valid,
        "identity": np.asarray(clip["identity"], np.float32),
        "ref_motion": motion[ref], "ref_exp": clip["exp"][ref], "ref_valid": np.bool_(n >= t),
        "clip_index": np.int32(c), "start": np.int32(s), "ref_start": np.int32(r),
        "silenced": np.bool_(silent), "silence": quiet, "audio_valid": heard,
    }


def motion_windows(root: str | os.PathLike, *, batch_size: int, split: str = "train", seed: int = 0,
                   config: MotionWindowConfig = MotionWindowConfig(), shuffle: bool = True,
                   num_epochs: int | None = None, worker_count: int = 0,
                   shard_options: grain.ShardOptions | None = None,
                   speech_features: str | os.PathLike | None = None, silence_prob: float = 0.0,
                   silent_speech_features: str | os.PathLike | None = None, lookahead_prob: float = 0.0,
                   lookahead_speech_features: str | os.PathLike | None = None) -> grain.DataLoader:
  """Batches of motion windows with their audio for stage 1: T + H consecutive frames of one clip.

  The first H frames are the history, the last T the window to generate. Keys (B = batch_size):
    motion (B, T+H, 58) = exp (52) ⊕ pose (6: pitch, yaw, roll in degrees, translation in body units)
    exp (B, T+H, 52), pose (B, T+H, 6), scale (B, T+H)
    head_kp (B, T+H, 32, 3), body_kp (B, T+H, 21, 3), body_visibility (B, T+H, 21)
    hand_coeffs (B, T+H, 130), hand_present (B, T+H, 2)
    audio (B, round((T+H) · 16000 / 30)) float32 16 kHz samples of exactly those frames
    identity (B, n_id)
    valid (B, T+H) bool: frames of the clip (False: padding of a short clip's window, start < 0)
    ref_motion (B, T, 58), ref_exp (B, T, 52): a reference window of the same clip, chosen not to overlap
      the main one when the clip is long enough (else as far from it as the clip allows); ref_valid (B,)
      bool: False when the clip is shorter than T (its frames then padded)
    clip_index, start, ref_start (B,) int32
    speech (B, n, D) float32: with speech_features (the .npy of `data.speech_features` for this split and
      config), the cached features of each window
    silenced (B,) bool: the window has its silence span (`CutWindow`, silence_prob; then the silenced
      audio's features come from silent_speech_features); silence (B, H+T) float32: how far each frame's
      expression is eased into the closed mouth (1 inside the span, ramps at its ends, 0 elsewhere)
    audio_valid (B, T) bool: the frames of the generated window whose audio is heard (False after the cut
      of look-ahead augmentation, lookahead_prob; its features then come from lookahead_speech_features)
  """
  meta = records.read_meta(root)
  clips = records.data_source(root, "clips", split)
  index = WindowIndex(meta["clip_frames"][split], config, name=f"{records.records_dir(root)}:{split}")
  spf = meta["sample_rate"] / meta["fps"]
  cut = CutWindow(clips, config, spf, speech_features=speech_features, silence_prob=silence_prob,
                  silent_speech_features=silent_speech_features, lookahead_prob=lookahead_prob,
                  lookahead_speech_features=lookahead_speech_features)
  return make_loader(index, [cut], batch_size=batch_size, seed=seed,
                     shuffle=shuffle,
                     num_epochs=num_epochs, worker_count=worker_count, shard_options=shard_options)


# ---------------------------------------------------------------- several shards in one process


class ShardsIterator:
  """Batches of several data shards read side by side in one process: each `next` concatenates one batch
  of every iterator along the batch axis, in shard order.

  With data split into S shards (`grain.ShardOptions(s, S)`), process p of n reads shards p·S/n ..
  (p + 1)·S/n - 1, so the global batch (the processes' rows in process order) is the same for any n that
  divides S: a run may move between process counts without changing its data. get_state / set_state
  (bytes, what `grain.python.PyGrainCheckpointSave` stores) hold each shard's iterator state
  (`shard_states`).
  """

  def __init__(self, iterators: Sequence, shards: Sequence[int]):
    if len(iterators) != len(shards) or not iterators:
      raise ValueError(f"one iterator per shard, got {len(iterators)} for shards {list(shards)}")
    self.iterators = list(iterators)
    self.shards = [int(s) for s in shards]

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batches = [next(it) for it in self.iterators]
    return concat_batches(batches)

  def get_state(self) -> bytes:
    pairs = zip(self.shards, self.iterators, strict=True)
    return json.dumps({"shards": {str(s): it.get_state().decode() for s, it in pairs}}).encode()

  def set_state(self, state: bytes) -> None:
    states = shard_states(state, [])
    missing = [s for s in self.shards if s not in states]
    if missing:
      raise ValueError(f"the saved data state has no shard {missing} (has {sorted(states)})")
    for s, it in zip(self.shards, self.iterators, strict=True):
      it.set_state(states[s].encode())


def shard_states(state: bytes | str, shards: Sequence[int]) -> dict[int, str]:
  """{shard: grain iterator state} of a saved process state: a `ShardsIterator` state, or a plain grain
  DataLoader iterator's, which is the state of the one shard given in `shards`."""
  text = state.decode() if isinstance(state, bytes) else state
  parsed = json.loads(text)
  if isinstance(parsed, dict) and set(parsed) == {"shards"}:
    return {int(s): v for s, v in parsed["shards"].items()}
  if len(shards) != 1:
    raise ValueError(f"a single-iterator data state cannot hold shards {list(shards)}")
  return {int(shards[0]): text}


def concat_batches(batches: Sequence[dict]) -> dict:
  """Concatenates dicts of numpy arrays along axis 0 (one batch of several shards)."""
  if len(batches) == 1:
    return batches[0]
  return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
