"""The TFDS dataset builder that writes preprocessed clips as ArrayRecord shards, and their readers.

`build` turns the finished clips of `python -m data.preprocess` (`OUT/work/<video>/clip_*.npz`) into two
builder configs under `OUT/records/`: ``clips`` (one record per clip: coefficients, keypoints, audio) and
``frames`` (one record per frame: encoded crops, masks, hand image); `_DESCRIPTION` gives the layout.
`data_source` reads one config and split with random access for grain (`data.pipelines`). Writing needs
no TensorFlow: images stay encoded bytes (`data.encoding`). Videos are split into train / validation by
a stable hash of their name (`is_validation`), or by person with a split file (`data.splits`): its
held-out people are "validation", and `heldout_tail` cuts the last share of every training clip into
"heldout_frames" (same people, frames never trained on).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

from chatanyone_jax.motion.upper_body_motion import NUM_BODY_KP
from chatanyone_jax.template.hands import HANDS_DIM, NUM_HAND_LANDMARKS
from chatanyone_jax.template.head_template import NUM_EXP, NUM_KEYPOINTS
from data.encoding import unpack_bytes
from data.landmarks import NUM_FACE_POINTS
from data.splits import SplitError, read_split

log = logging.getLogger(__name__)

VERSION = "1.0.0"
RECORDS_DIR = "records"
META_FILE = "meta.json"
STATUS_FILE = "status.json"  # OUT/work/<video>/status.json, written by data.preprocess
_BYTES = np.object_
_META_SCHEMA = 2  # bump when meta.json or the record layout changes (forces a rebuild)
# TFDS sorts a split's examples in memory up to 1 GB and spills to disk through TensorFlow above that;
# this package writes without TensorFlow, so a split is sorted in memory up to this size (the frames of
# about 2,000 short clips at 384x256 / 256x256 crops are about 2 GB).
MAX_SPLIT_BYTES = 12 << 30
# The datasets' description (in their dataset_info.json).
_DESCRIPTION = """\
TFDS dataset builder writing the preprocessed clips as ArrayRecord shards (random access for grain).

Two builder configs over the same clips (`python -m data.preprocess` writes both under `OUT/records/`):

* ``clips``: one record per clip (all frames of one face run of one video): template coefficients
  (`exp` (T, 52), `pose` (T, 6) = pitch, yaw, roll in degrees + translation in body units, `scale` (T,),
  `identity`), keypoints (`head_kp` (T, 32, 3) and `body_kp` (T, 21, 3) in body-crop grid units,
  `head_kp_head` in head-crop grid units, `body_visibility` (T, 21)), hands (`hand_coeffs` (T, 130),
  `hand_present` (T, 2), `hands` (T, 2, 21, 3) body-crop pixels), crop boxes and the clip's audio
  (`audio`, int16 at 16 kHz, exactly round(T · 16000 / 30) samples), plus `frame_offset`: the index of
  the clip's first record in the ``frames`` config of the same split.
* ``frames``: one record per frame, in clip order (shuffling disabled, so a clip's frames are the
  records [clip_start, clip_start + clip_length)): JPEG body and head crops, the rendered hand image
  (JPEG), a PNG with three masks (face, hands, person), and that frame's keypoints and coefficients.

Read them with `data_source(root, "clips" | "frames", split)` (or `tfds.data_source` with this module
imported). Writing needs no TensorFlow: images are stored as encoded bytes and decoded by the grain
pipelines (`data.pipelines`).
"""


def _f32(*shape):
  return tfds.features.Tensor(shape=shape, dtype=np.float32)


def _clip_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "name": tfds.features.Text(),
      "video": tfds.features.Text(),
      "num_frames": np.int32,
      "frame_offset": np.int64,
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "source_frame": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "exp": _f32(None, NUM_EXP), "pose": _f32(None, 6), "scale": _f32(None), "identity": _f32(None),
      "fit_error_px": np.float32,
      "head_kp": _f32(None, NUM_KEYPOINTS, 3), "head_kp_head": _f32(None, NUM_KEYPOINTS, 3),
      "body_kp": _f32(None, NUM_BODY_KP, 3), "body_visibility": _f32(None, NUM_BODY_KP),
      "hands": _f32(None, 2, NUM_HAND_LANDMARKS, 3),
      "hand_present": tfds.features.Tensor(shape=(None, 2), dtype=np.bool_),
      "hand_coeffs": _f32(None, HANDS_DIM),
      "head_box": _f32(None, 4), "body_box": _f32(None, 4),
  })


def _frame_features() -> tfds.features.FeaturesDict:
  b = tfds.features.Tensor(shape=(), dtype=_BYTES)
  return tfds.features.FeaturesDict({
      "clip_name": tfds.features.Text(), "clip_index": np.int32, "frame_index": np.int32,
      "clip_start": np.int64, "clip_length": np.int32,
      "body_jpeg": b, "head_jpeg": b, "hand_jpeg": b, "mask_png": b,
      "exp": _f32(NUM_EXP), "pose": _f32(6), "scale": np.float32,
      "head_kp": _f32(NUM_KEYPOINTS, 3), "head_kp_head": _f32(NUM_KEYPOINTS, 3),
      "body_kp": _f32(NUM_BODY_KP, 3), "body_visibility": _f32(NUM_BODY_KP),
      "hands": _f32(2, NUM_HAND_LANDMARKS, 3),
      "hand_present": tfds.features.Tensor(shape=(2,), dtype=np.bool_),
      "hand_coeffs": _f32(HANDS_DIM),
      "face": _f32(NUM_FACE_POINTS, 3), "face_head": _f32(NUM_FACE_POINTS, 3),
      "head_box": _f32(4), "body_box": _f32(4),
  })


_PER_FRAME = ("exp", "pose", "scale", "head_kp", "head_kp_head", "body_kp", "body_visibility", "hands",
              "hand_present", "hand_coeffs", "head_box", "body_box")


def is_validation(video_stem: str, val_fraction: float) -> bool:
  """Stable split by video (never by clip: clips of one video share the identity)."""
  if val_fraction <= 0:
    return False
  h = int(hashlib.sha1(video_stem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
  return h < val_fraction


def list_clips(root: str | os.PathLike) -> list[pathlib.Path]:
  """Finished clip files under `root/work/*/` (videos whose status is "done"), in a stable order."""
  work = pathlib.Path(root) / "work"
  out = []
  for d in sorted(work.iterdir()) if work.is_dir() else []:
    status = d / STATUS_FILE
    if status.is_file() and json.loads(status.read_text()).get("status") == "done":
      out.extend(sorted(d.glob("clip_*.npz")))
  return out


Job = tuple[pathlib.Path, int, int]  # a clip file and the frame range [start, stop) that goes in


def _split_clips(root, val_fraction: float, split_file=None, heldout_tail: float = 0.0
                 ) -> dict[str, list[Job]]:
  """Clips per split (module docstring): "train", "validation" and, with a tail share, "heldout_frames"."""
  splits: dict[str, list[Job]] = {"train": [], "validation": [], "heldout_frames": []}
  paths = list_clips(root)
  if split_file is None:
    if heldout_tail:
      raise ValueError("heldout_tail needs a split file (data.splits)")
    for p in paths:
      splits["validation" if is_validation(p.parent.name, val_fraction) else "train"].append(
          (p, 0, _clip_length(p)))
    return {k: v for k, v in splits.items() if v}
  if not 0.0 <= heldout_tail < 1.0:
    raise ValueError(f"heldout_tail must be in [0, 1), got {heldout_tail}")
  table = read_split(split_file)
  unknown = sorted({p.parent.name for p in paths} - set(table))
  if unknown:
    raise SplitError(f"{len(unknown)} preprocessed videos are not in the split file {split_file} (first: "
                     f"{unknown[:3]}); add them (python -m data.splits) or preprocess without them")
  for p in paths:
    n = _clip_length(p)
    if table[p.parent.name] == "heldout":
      splits["validation"].append((p, 0, n))
      continue
    tail = min(n - 1, round(n * heldout_tail))
    splits["train"].append((p, 0, n - tail))
    if tail > 0:
      splits["heldout_frames"].append((p, n - tail, n))
  return {k: v for k, v in splits.items() if v}


class ChatAnyoneRecords(tfds.core.GeneratorBasedBuilder):
  """Preprocessed talking-portrait clips (see the module docstring); built from `data.preprocess` output."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="clips",
                              description="one record per clip: coefficients, keypoints, audio"),
      tfds.core.BuilderConfig(name="frames", description="one record per frame: crops, masks, hand image"),
  ]

  def __init__(self, *, preprocessed_dir: str | os.PathLike | None = None, val_fraction: float = 0.0,
               split_file: str | os.PathLike | None = None, heldout_tail: float = 0.0, use_beam: bool = False,
               **kwargs):
    self._preprocessed_dir = preprocessed_dir
    self._val_fraction = val_fraction
    self._split_file = split_file
    self._heldout_tail = heldout_tail
    self._use_beam = use_beam
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = _clip_features() if self.builder_config.name == "clips" else _frame_features()
    return tfds.core.DatasetInfo(builder=self, description=_DESCRIPTION, features=features,
                                 disable_shuffling=True, homepage="https://github.com/chatanyone-jax")

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._preprocessed_dir is None:
      raise ValueError("ChatAnyoneRecords builds from `python -m data.preprocess` output; pass "
                       "preprocessed_dir=OUT (or run the preprocess command, which does)")
    splits = _split_clips(self._preprocessed_dir, self._val_fraction, self._split_file, self._heldout_tail)
    if not splits:
      raise ValueError(f"no finished clips under {self._preprocessed_dir}/work; run data.preprocess first")
    return {name: self._generate_examples(paths) for name, paths in splits.items()}

  def _generate_examples(self, clips: list[Job]):
    jobs = []  # (clip index, path, index of its first frame record, start, stop): known before writing
    offset = 0
    for i, (p, start, stop) in enumerate(clips):
      jobs.append((i, str(p), offset, start, stop))
      offset += stop - start
    fn = clip_examples if self.builder_config.name == "clips" else frame_examples
    if self._use_beam:  # one Beam element per clip: TFDS runs it on the runner of its DownloadConfig
      import apache_beam as beam

      # With shuffling disabled TFDS's Beam writer places examples into shards by their key's value, so the
      # keys go in as the integers they spell (the same order as the strings: equal records either way).
      return beam.Create(jobs) | beam.Reshuffle() | beam.FlatMap(_int_keys, fn)
    return (ex for job in jobs for ex in fn(*job))


def _int_keys(job, fn):
  return ((int(key), ex) for key, ex in fn(*job))


def _clip_length(path) -> int:
  with np.load(path) as z:
    return int(z["exp"].shape[0])


def _audio_range(start: int, stop: int, fps: float, sample_rate: int, total: int) -> slice:
  """The samples of frames [start, stop) of a clip with `total` samples: exactly round(T · sr / fps) of
  them, from round(start · sr / fps) (one sample earlier where rounding would run past the end)."""
  n = round((stop - start) * sample_rate / fps)
  a = min(round(start * sample_rate / fps), total - n)
  return slice(a, a + n)


def clip_examples(index: int, path: str, offset: int, start: int = 0, stop: int | None = None):
  """The ``clips`` record of frames [start, stop) of one clip file, as (key, example)."""
  p = pathlib.Path(path)
  with np.load(p) as z:
    stop = int(z["exp"].shape[0]) if stop is None else stop
    ex = {k: z[k][start:stop] for k in _PER_FRAME}
    audio = z["audio"][_audio_range(start, stop, float(z["fps"]), int(z["sample_rate"]), z["audio"].size)]
    ex.update(name=str(z["name"]), video=p.parent.name, num_frames=stop - start, frame_offset=offset,
              audio=audio, source_frame=z["source_frame"][start:stop], identity=z["identity"],
              fit_error_px=z["fit_error_px"])
  yield f"{index:08d}", ex


def frame_examples(index: int, path: str, offset: int, start: int = 0, stop: int | None = None):
  """The ``frames`` records of frames [start, stop) of one clip file, as (key, example); keys sort in clip
  order, frame_index counts from `start`."""
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  stop = int(arrays["exp"].shape[0]) if stop is None else stop
  blobs = {k: unpack_bytes(arrays[k], arrays[k + "_offsets"])
           for k in ("body_jpeg", "head_jpeg", "hand_jpeg", "mask_png")}
  for i, f in enumerate(range(start, stop)):
    ex = {k: arrays[k][f] for k in _PER_FRAME + ("face", "face_head")}
    ex.update({k: v[f] for k, v in blobs.items()})
    ex.update(clip_name=str(arrays["name"]), clip_index=index, frame_index=i, clip_start=offset,
              clip_length=stop - start)
    yield f"{offset + i:012d}", ex


def _fingerprint(root, val_fraction: float, split_file=None, heldout_tail: float = 0.0) -> str:
  h = hashlib.sha1()
  for p in list_clips(root):
    st = p.stat()
    h.update(f"{p.parent.name}/{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
  h.update(f"{val_fraction}:{VERSION}:{_META_SCHEMA}".encode())
  if split_file is not None:
    h.update(pathlib.Path(split_file).read_bytes() + f":{heldout_tail}".encode())
  return h.hexdigest()


def build(root: str | os.PathLike, val_fraction: float = 0.0, beam_runner=None, beam_options=None, *,
          split_file: str | os.PathLike | None = None, heldout_tail: float = 0.0) -> dict:
  """Writes (or reuses, when the clips did not change) both configs under `root/records`; returns meta.

  split_file: a `data.splits` file (split by person; replaces `val_fraction`); heldout_tail: the share of
  every training clip's last frames that goes to "heldout_frames" instead of "train" (needs split_file).

  With `beam_runner` (and optional `beam_options`; needs `pip install apache-beam`), TFDS writes the
  shards through Apache Beam, one element per clip, so a Dataflow / Flink / Spark runner spreads the
  writing over many machines. Without it, this process writes them.
  """
  root = pathlib.Path(root)
  rec = root / RECORDS_DIR
  fp = _fingerprint(root, val_fraction, split_file, heldout_tail)
  meta_path = rec / META_FILE
  if meta_path.is_file():
    meta = json.loads(meta_path.read_text())
    if meta.get("fingerprint") == fp:
      log.info("records up to date in %s", rec)
      return meta
  clip_frames = {split: [stop - start for _, start, stop in jobs]  # checks the split before deleting
                 for split, jobs in _split_clips(root, val_fraction, split_file, heldout_tail).items()}
  if rec.exists():
    shutil.rmtree(rec)
  rec.mkdir(parents=True)
  cfg = json.loads((root / "config.json").read_text()) if (root / "config.json").is_file() else {}
  splits = {}
  for name in ("clips", "frames"):
    builder = ChatAnyoneRecords(config=name, data_dir=str(rec), file_format="array_record",
                                preprocessed_dir=root, val_fraction=val_fraction, split_file=split_file,
                                heldout_tail=heldout_tail, use_beam=beam_runner is not None)
    limit = tfds_shuffle.MAX_MEM_BUFFER_SIZE
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(limit, MAX_SPLIT_BYTES)
    try:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS, beam_runner=beam_runner,
          beam_options=beam_options))
    finally:
      tfds_shuffle.MAX_MEM_BUFFER_SIZE = limit
    splits[name] = {s: int(v.num_examples) for s, v in builder.info.splits.items()}
  meta = {"fingerprint": fp, "splits": splits, "clip_frames": clip_frames, "val_fraction": val_fraction,
          "split_file": None if split_file is None else str(split_file), "heldout_tail": heldout_tail,
          "body_size": cfg.get("body_size"), "head_size": cfg.get("head_size"),
          "fps": cfg.get("fps", 30.0), "sample_rate": cfg.get("sample_rate", 16000)}
  meta_path.write_text(json.dumps(meta, indent=1))
  return meta


def records_dir(root: str | os.PathLike) -> pathlib.Path:
  """`root` may be the preprocess output folder or its records/ folder."""
  root = pathlib.Path(root)
  return root / RECORDS_DIR if (root / RECORDS_DIR / META_FILE).is_file() else root


def read_meta(root: str | os.PathLike) -> dict:
  p = records_dir(root) / META_FILE
  if not p.is_file():
    raise FileNotFoundError(f"no records under {root}: run "
                            f"`python -m data.preprocess --videos DIR --out {root}`")
  return json.loads(p.read_text())


def data_source(root: str | os.PathLike, config: str, split: str = "train"):
  """The ArrayRecord data source of one config ("clips" / "frames") and split; random access, picklable."""
  if config not in ("clips", "frames"):
    raise ValueError(f"config must be 'clips' or 'frames', got {config!r}")
  meta = read_meta(root)
  if split not in meta["splits"][config]:
    raise ValueError(f"split {split!r} not in the records (have {sorted(meta['splits'][config])})")
  path = records_dir(root) / "chat_anyone_records" / config / VERSION
  return tfds.builder_from_directory(str(path)).as_data_source(split=split)
