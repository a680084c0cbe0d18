"""Preprocessing CLI -> records -> grain pipelines, on real shared clips (a few seconds each)."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from data import decode, pipelines, preprocess, records
from data.encoding import decode_image, unpack_bytes
from data.landmarks import LandmarkError, extract_landmarks
from infer.media import write_video
from tests import fixtures
from tests.helpers import media_dir, require

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures

CLIPS = (
    "V-Express__scripts_prepare_dataset_RD_Radio10_0_clip_0.mp4",  # 512², 29.97 fps, held-out identity
    "LatentSync__assets_demo2_video.mp4",  # 1080 x 1920 at 25 fps, upper body with a visible hand
    "LivePortrait__assets_examples_source_s18.mp4",  # 1280 x 720 landscape at 30 fps
)
NO_AUDIO = "LivePortrait__assets_examples_driving_d0.mp4"
SILENT = "LivePortrait__assets_examples_source_s20.mp4"  # its audio track is all zeros
BODY, HEAD = (192, 128), 128
CONFIG = preprocess.PreprocessConfig(body_size=BODY, head_size=HEAD, max_seconds=2.0, min_frames=50)
# Shipped head template: 0.32 px mean held-out error at a 256² face crop; twice that is the bound (a rigid
# mean-shape fit is 3.4-5 px, so passing it needs the expression / identity fit to work).
FIT_ERROR_BOUND_PX = 0.65


def _no_face_video(path: pathlib.Path) -> None:
  """A 2-s video of moving colour gradients with a tone: a valid file with no face in it."""
  t = np.arange(60)[:, None, None, None]
  y = np.linspace(0, 1, 96)[None, :, None, None]
  x = np.linspace(0, 1, 128)[None, None, :, None]
  ramp = np.concatenate([x + 0 * y, y + 0 * x, 0.5 + 0 * x * y], -1)
  frames = 255 * np.clip(ramp * (0.6 + 0.01 * t), 0, 1)
  audio = 0.2 * np.sin(2 * np.pi * 220 * np.arange(32000) / 16000)
  write_video(path, frames.astype(np.uint8), fps=30, audio=audio.astype(np.float32), sample_rate=16000)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  videos = tmp_path_factory.mktemp("videos")
  src = require(media_dir() / "videos", "shared media videos (CHATANYONE_MEDIA_DIR)")
  for name in CLIPS + (NO_AUDIO, SILENT):
    shutil.copy(src / name, videos / name)
  (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
  _no_face_video(videos / "no_face.mp4")
  out = tmp_path_factory.mktemp("prepared")
  summary = preprocess.run(videos, out, CONFIG, progress=False)
  return videos, out, summary


def test_summary_reports_good_and_bad_videos(prepared):
  _, out, summary = prepared
  assert summary["videos"] == 7 and summary["done"] == 3 and summary["clips"] == 3
  reasons = {pathlib.Path(f["video"]).name: f for f in summary["failed"]}
  assert reasons["corrupt.mp4"]["reason"] == "unreadable"
  assert "re-encode" in reasons["corrupt.mp4"]["message"]
  assert reasons[NO_AUDIO]["reason"] == "no_audio"
  assert reasons[SILENT]["reason"] == "silent_audio"
  assert reasons["no_face.mp4"]["reason"] == "no_face"
  assert "no face found" in reasons["no_face.mp4"]["message"]
  assert json.loads((out / "summary.json").read_text())["done"] == 3
  # 2 s at 30 fps from 25 / 29.97 / 30 fps sources; all frames of these clips show the face.
  assert summary["frames"] == 3 * 60 and summary["frames_kept"] == 180


def test_template_fit_error_is_small(prepared):
  _, _, summary = prepared
  print("mean template fit error (px at a 256² face crop):", summary["mean_fit_error_px"])
  assert summary["mean_fit_error_px"] < FIT_ERROR_BOUND_PX


def test_rerun_skips_finished_videos_and_keeps_records(prepared):
  videos, out, _ = prepared
  meta_before = (out / "records" / records.META_FILE).stat().st_mtime_ns
  again = preprocess.run(videos, out, CONFIG, progress=False)
  assert again["skipped_already_processed"] == 7 and again["this_run"]["videos"] == 0
  assert again["clips"] == 3
  assert (out / "records" / records.META_FILE).stat().st_mtime_ns == meta_before


def test_records_layout_and_audio_alignment(prepared):
  _, out, _ = prepared
  clips = records.data_source(out, "clips")
  frames = records.data_source(out, "frames")
  assert len(clips) == 3 and len(frames) == 180
  offset = 0
  for c in range(len(clips)):
    clip = clips[c]
    n = int(clip["num_frames"])
    assert clip["exp"].shape == (n, 52) and clip["pose"].shape == (n, 6)
    assert clip["head_kp"].shape == (n, 32, 3)
    assert clip["body_kp"].shape == (n, 21, 3) and clip["hand_coeffs"].shape == (n, 130)
    assert clip["audio"].dtype == np.int16 and clip["audio"].shape == (round(n * 16000 / 30),)
    assert np.abs(clip["audio"]).max() > 1000  # speech, not padding
    assert int(clip["frame_offset"]) == offset
    first, last = frames[offset], frames[offset + n - 1]
    assert first["clip_index"] == c and first["frame_index"] == 0 and last["frame_index"] == n - 1
    np.testing.assert_array_equal(last["exp"], clip["exp"][-1])
    offset += n
  rec = frames[5]
  assert decode_image(rec["body_jpeg"]).shape == BODY + (3,)
  assert decode_image(rec["head_jpeg"]).shape == (HEAD, HEAD, 3)
  assert decode_image(rec["mask_png"]).shape == BODY + (3,)
  # Head keypoints sit on the face: inside the face-mesh box in the body crop.
  face = rec["face"][:, :2]
  kp = (rec["head_kp"][:, :2] + 1) / 2 * np.array([BODY[1], BODY[0]])
  assert np.all(kp >= face.min(0) - 2) and np.all(kp <= face.max(0) + 2)


def test_rendered_hands_overlap_detected_hands(prepared):
  _, out, _ = prepared
  frames = records.data_source(out, "frames")
  checked = 0
  for i in range(0, len(frames), 3):
    rec = frames[i]
    mask = decode_image(rec["mask_png"])[..., 1] > 127
    boxes = np.zeros_like(mask)
    present = np.flatnonzero(rec["hand_present"])
    for slot in present:
      x0, y0 = np.floor(rec["hands"][slot][:, :2].min(0) - 3).astype(int)
      x1, y1 = np.ceil(rec["hands"][slot][:, :2].max(0) + 3).astype(int)
      boxes[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    if not present.size:
      assert not mask.any()
      continue
    if boxes.sum() < 50:  # hands (almost) outside the crop
      continue
    assert mask.sum() > 10 and mask[boxes].sum() >= 0.95 * mask.sum(), i
    checked += 1
  assert checked >= 5, "expected frames with a hand inside the body crop"


def _clip_file_layout(path: pathlib.Path) -> dict[str, tuple]:
  """Key -> (dtype, shape with the clip length as "T", its samples as "S") of a clip file; packed bytes by
  dtype only."""
  with np.load(path) as z:
    n = z["exp"].shape[0]
    names = {n: "T", n + 1: "T+1", round(n * 16000 / 30): "S"}
    out = {}
    for k in z.files:
      v = z[k]
      kind = v.dtype.kind if v.dtype.kind == "U" else v.dtype.str
      packed = k in ("body_jpeg", "head_jpeg", "hand_jpeg", "mask_png")
      out[k] = (kind,) if packed else (kind, tuple(names.get(d, d) for d in v.shape))
  return out


def test_synthetic_fixture_writes_real_clip_files(prepared, tmp_path):
  # tests.fixtures stands in for this preprocessing in other tests: its clip files must match.
  _, out, _ = prepared
  real = sorted((out / "work").glob("*/clip_*.npz"))[0]
  fixtures.write_records(tmp_path, num_clips=1, num_frames=40, body_size=BODY, head_size=HEAD)
  synthetic = tmp_path / "work" / "synthetic_000" / "clip_000_00.npz"
  assert _clip_file_layout(synthetic) == _clip_file_layout(real)
  assert json.loads((tmp_path / "config.json").read_text()).keys() == json.loads(
      (out / "config.json").read_text()).keys()


def test_no_face_image_raises_clear_error():
  image = np.tile(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], (96, 1, 3))
  with pytest.raises(LandmarkError, match="no face found"):
    extract_landmarks(image[None], pose=False, hands=False)


def test_render_pairs_body(prepared):
  _, out, _ = prepared
  loader = pipelines.render_pairs(out, batch_size=4, seed=3)
  batch = next(iter(loader))
  hi, wi = BODY[0] // 2, BODY[1] // 2
  expect = {"source": (4, hi, wi, 3), "driving": (4, hi, wi, 3), "driving_target": (4,) + BODY + (3,),
            "hand_image": (4, hi, wi, 3), "kp_head_source": (4, 32, 3), "kp_head_driving": (4, 32, 3),
            "body_kp_source": (4, 21, 3), "body_kp_driving": (4, 21, 3), "face_mask": (4,) + BODY + (1,),
            "hand_mask": (4,) + BODY + (1,), "person_mask": (4,) + BODY + (1,), "hand_present": (4, 2)}
  for k, shape in expect.items():
    assert batch[k].shape == shape, k
  for k in ("source", "driving", "driving_target", "hand_image", "face_mask"):
    assert batch[k].dtype == np.float32 and 0 <= batch[k].min() and batch[k].max() <= 1
  assert batch["hand_present"].dtype == bool
  # Source and driving come from the same clip and differ.
  frames = records.data_source(out, "frames")
  for s, d, c in zip(batch["source_index"], batch["driving_index"], batch["clip_index"], strict=True):
    assert s != d and frames[int(s)]["clip_index"] == c == frames[int(d)]["clip_index"]
  assert np.abs(batch["kp_head_driving"][..., :2]).max() < 1.0  # the head is well inside the crop
  assert batch["person_mask"].mean() > 0.2 and batch["face_mask"].mean() > 0.01
  _assert_mouth_inside_face(batch)


def _assert_mouth_inside_face(batch):
  """The mouth mask (the region term's) covers a small part of the face, nearly all of it inside it."""
  mouth, face = batch["mouth_mask"] > 0.5, batch["face_mask"] > 0.5
  assert mouth.shape == face.shape
  per_frame = mouth.sum(axis=(1, 2, 3))
  assert np.all(per_frame > 0) and np.all(per_frame < 0.25 * face.sum(axis=(1, 2, 3)))
  assert (mouth & ~face).sum() < 0.05 * mouth.sum()


def test_render_pairs_head_crop(prepared):
  _, out, _ = prepared
  cfg = pipelines.RenderPairConfig(crop="head", input_size=(64, 64), max_gap=5)
  batch = next(iter(pipelines.render_pairs(out, batch_size=2, seed=0, config=cfg)))
  assert batch["source"].shape == (2, 64, 64, 3) and batch["driving_target"].shape == (2, HEAD, HEAD, 3)
  assert batch["face_mask"].shape == (2, HEAD, HEAD, 1) and "hand_image" not in batch
  assert np.all(np.abs(batch["source_index"] - batch["driving_index"]) <= 5)
  assert 0.1 < batch["face_mask"].mean() < 0.7
  _assert_mouth_inside_face(batch)


def test_motion_windows(prepared):
  _, out, _ = prepared
  cfg = pipelines.MotionWindowConfig(window=20, history=5, stride=5)
  batch = next(iter(pipelines.motion_windows(out, batch_size=3, seed=0, config=cfg)))
  n = 25
  assert batch["motion"].shape == (3, n, 58) and batch["exp"].shape == (3, n, 52)
  assert batch["head_kp"].shape == (3, n, 32, 3) and batch["body_kp"].shape == (3, n, 21, 3)
  assert batch["hand_coeffs"].shape == (3, n, 130) and batch["hand_present"].shape == (3, n, 2)
  assert batch["audio"].shape == (3, round(n * 16000 / 30)) and batch["audio"].dtype == np.float32
  assert batch["ref_motion"].shape == (3, 20, 58)
  clips = records.data_source(out, "clips")
  for i in range(3):
    c, s, r = int(batch["clip_index"][i]), int(batch["start"][i]), int(batch["ref_start"][i])
    clip = clips[c]
    np.testing.assert_array_equal(batch["exp"][i], clip["exp"][s:s + n])
    a = round(s * 16000 / 30)
    np.testing.assert_allclose(batch["audio"][i], clip["audio"][a:a + batch["audio"].shape[1]] / 32768.0)
    assert r + 20 <= s or r >= s + n  # 60-frame clips leave room for a disjoint reference
    np.testing.assert_array_equal(batch["ref_exp"][i], clip["exp"][r:r + 20])


def test_pipelines_seeded_sharded_and_resumable(prepared, tmp_path):
  import grain.python as grain
  import jax.numpy as jnp

  from train import checkpoint

  _, out, _ = prepared
  cfg = pipelines.MotionWindowConfig(window=20, history=5, stride=5)
  make = lambda seed, **kw: pipelines.motion_windows(out, batch_size=2, seed=seed, config=cfg, **kw)
  a, b, c = (next(iter(make(s)))["start"] for s in (7, 7, 8))
  a2 = [next(iter(make(s)))["clip_index"] for s in (7, 8)]
  assert np.array_equal(a, b)
  assert not (np.array_equal(a, c) and np.array_equal(*a2))

  def epoch(shard):
    loader = make(0, shuffle=False, num_epochs=1, shard_options=shard)
    return [(int(ci), int(st)) for batch in loader for ci, st in zip(batch["clip_index"], batch["start"],
                                                                      strict=True)]
  halves = [epoch(grain.ShardOptions(shard_index=i, shard_count=2, drop_remainder=True)) for i in (0, 1)]
  assert halves[0] and halves[1] and not set(halves[0]) & set(halves[1])

  # Resume through the trainer's checkpoints (the iterator position is saved beside the state).
  state = {"step": jnp.ones((), jnp.int32)}
  mngr = checkpoint.manager(tmp_path / "w", async_save=False)
  it = iter(make(1))
  next(it)
  checkpoint.save(mngr, 1, state, it)
  expected = [next(it) for _ in range(2)]
  _, restored = checkpoint.restore(mngr, state, iter(make(1)))
  mngr.close()
  for want, got in zip(expected, [next(restored) for _ in range(2)], strict=True):
    for k in ("start", "ref_start", "clip_index", "motion", "audio"):
      np.testing.assert_array_equal(want[k], got[k])


def test_cli_errors(tmp_path, capsys):
  assert preprocess.main(["--videos", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
  assert "neither a folder nor a video" in capsys.readouterr().err
  with pytest.raises(ValueError, match="2:3"):
    preprocess.PreprocessConfig(body_size=(100, 100))
  with pytest.raises(FileNotFoundError, match="data.preprocess"):
    records.read_meta(tmp_path)


def test_audio_and_video_start_offsets_are_reconciled():
  # This clip's first video frame starts 33 ms after its first audio sample; preprocessing drops
  # those 528 samples so that sample 0 plays with frame 0.
  path = require(media_dir() / "videos" / "video-retalking__examples_face_1.mp4", "shared media video")
  assert decode.stream_start_offset(path) == pytest.approx(0.033, abs=1e-3)
  assert decode.stream_start_offset(media_dir() / "videos" / CLIPS[0]) == 0.0


def test_face_only_keeps_the_face_and_skips_the_body(prepared, tmp_path):
  # --face-only runs the face mesh alone: the same face annotation as the full run, no body or hands.
  videos, out, _ = prepared
  name = pathlib.Path(CLIPS[1]).stem  # upper body with a visible hand
  config = preprocess.PreprocessConfig(body_size=BODY, head_size=HEAD, max_seconds=2.0, min_frames=50,
                                       face_only=True)
  status = preprocess.process_video(videos / CLIPS[1], tmp_path, config)
  assert status["status"] == "done" and status["frames_kept"] == 60
  clip = pathlib.Path(name) / "clip_000_00.npz"
  with np.load(tmp_path / clip) as fast, np.load(out / "work" / clip) as full:
    assert full["hand_present"].any() and full["body_visibility"].max() > 0.5
    assert not fast["hand_present"].any() and not fast["body_kp"].any() and not fast["body_visibility"].any()
    np.testing.assert_allclose(fast["face"], full["face"], atol=1e-3)
    np.testing.assert_allclose(fast["exp"], full["exp"], atol=1e-4)
    np.testing.assert_array_equal(fast["head_box"], full["head_box"])
    masks = np.stack([decode_image(b) for b in unpack_bytes(fast["mask_png"], fast["mask_png_offsets"])])
    assert masks[..., 0].any() and not masks[..., 1:].any()  # the face mask only
