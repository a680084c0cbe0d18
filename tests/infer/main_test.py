"""`python -m infer.main`: the CLI end to end (random tiny networks) and its documented errors."""

from __future__ import annotations

import subprocess
import sys

import av
import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from chatanyone_jax.motion.sampling import SEAM_FRAMES
from data.media import read_audio, read_video
from infer import main as cli
from infer.models import load_checkpoint
from infer.options import LOW_LATENCY, StreamOptions
from infer.smoke import random_params
from infer.streaming import ASSETS_PORTRAIT, ASSETS_SPEECH, stream
from tests.helpers import REPO, SMOKE_STREAM, write_wav

pytestmark = SMOKE_STREAM

SR = 16000


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
  """0.9 s of the bundled speech as a 44.1 kHz stereo WAV (the CLI resamples it to 16 kHz mono)."""
  audio = read_audio(ASSETS_SPEECH, 44100)[44100 // 2:44100 // 2 + int(0.9 * 44100)]
  path = tmp_path_factory.mktemp("audio") / "speech.wav"
  write_wav(path, audio, 44100, channels=2)
  return path


def test_cli_writes_h264_with_audio(tmp_path, speech_wav, capsys):
  out = tmp_path / "out.mp4"
  rc = cli.main(["--image", str(ASSETS_PORTRAIT), "--audio", str(speech_wav), "--out", str(out),
                 "--random-weights", "--chunk-seconds", "0.3"])
  assert rc == 0, capsys.readouterr().err
  frames, fps = read_video(out)
  assert fps == 30 and frames.shape == (27, 96, 64, 3)  # round(0.9 s · 30)
  assert frames.std(axis=0).mean() > 0.5  # the frames move
  with av.open(str(out)) as container:
    (stream,) = container.streams.audio
    assert stream.codec_context.name == "aac" and stream.rate == SR
    assert container.streams.video[0].codec_context.name == "h264"


def test_cli_latency_presets_and_overrides():
  from infer.main import parse_args, stream_options

  base = ["--image", "p.png", "--audio", "a.wav", "--out", "o.mp4"]
  o = stream_options(parse_args(base))
  assert (o.hop, o.lookahead, o.seam_frames) == (None, 0, SEAM_FRAMES)  # whole windows by default
  o = stream_options(parse_args(base + ["--latency", "low"]))
  assert (o.hop, o.lookahead, o.seam_frames) == (LOW_LATENCY["hop"], LOW_LATENCY["lookahead"], 2)
  o = stream_options(parse_args(base + ["--latency", "low", "--hop", "6", "--lookahead", "4", "--seam-frames",
                                        "0"]))
  assert (o.hop, o.lookahead, o.seam_frames) == (6, 4, 0)
  assert stream_options(parse_args(base + ["--seam-frames", "3"])).seam_frames == 3
  with pytest.raises(ValueError, match="--seam-frames must be >= 0"):
    stream_options(parse_args(base + ["--seam-frames", "-1"]))


def test_cli_silent_audio(tmp_path):
  wav = tmp_path / "silence.wav"
  write_wav(wav, np.zeros(int(0.5 * SR), np.float32))
  out = tmp_path / "silent.mp4"
  assert cli.main(["--image", str(ASSETS_PORTRAIT), "--audio", str(wav), "--out", str(out),
                   "--random-weights"]) == 0
  assert read_video(out)[0].shape[0] == 15


def _error(argv, capsys) -> str:
  assert cli.main(argv) == 2
  return capsys.readouterr().err


def test_cli_errors(tmp_path, speech_wav, capsys, monkeypatch):
  base = ["--image", str(ASSETS_PORTRAIT), "--audio", str(speech_wav), "--out", str(tmp_path / "o.mp4")]
  with monkeypatch.context() as m:  # a checkout without the bundled models (infer/assets/checkpoint/)
    m.setattr(cli, "default_checkpoint", lambda: None)
    assert "no trained checkpoint given and none bundled" in _error(base, capsys)
  missing = tmp_path / "nowhere"
  assert f"checkpoint directory {missing} does not exist" in _error(base + ["--checkpoint", str(missing)],
                                                                     capsys)
  bad_audio = tmp_path / "bad.wav"
  bad_audio.write_text("not audio")
  err = _error(["--image", str(ASSETS_PORTRAIT), "--audio", str(bad_audio), "--out", str(tmp_path / "o.mp4"),
                "--random-weights"], capsys)
  assert "cannot open audio" in err
  err = _error(base + ["--random-weights", "--guidance", "-1"], capsys)
  assert "--guidance must be >= 0" in err
  grey = tmp_path / "grey.png"
  Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(grey)
  err = _error(["--image", str(grey), "--audio", str(speech_wav), "--out", str(tmp_path / "o.mp4"),
                "--random-weights"], capsys)
  assert "no face found" in err and "give a portrait photo" in err
  assert not (tmp_path / "o.mp4").exists()


def _config_workdir(path, config: ml_collections.ConfigDict):
  from train import checkpoint

  path.mkdir(parents=True)
  checkpoint.save_config(path, config)


def test_cli_checkpoint_of_the_wrong_mode(tmp_path, speech_wav, capsys):
  from train.configs import motion_body, motion_face

  root = tmp_path / "ckpt"
  _config_workdir(root / "motion_face", motion_face.get_config("tiny"))
  _config_workdir(root / "motion_body", motion_body.get_config("tiny"))
  _config_workdir(root / "render", ml_collections.ConfigDict({"task": "render",
                                                              "model": {"preset": "tiny_head512"}}))
  base = ["--image", str(ASSETS_PORTRAIT), "--audio", str(speech_wav), "--out", str(tmp_path / "o.mp4"),
          "--checkpoint", str(root)]
  err = _error(base, capsys)
  assert "mode 'upper' needs a upper512x768-family renderer" in err and "--mode head" in err
  (root / "motion_body").rename(tmp_path / "elsewhere")
  assert f"{root / 'motion_body'} is missing" in _error(base, capsys)


def _save_workdir(path, state, config):
  import orbax.checkpoint as ocp

  _config_workdir(path, config)
  with ocp.CheckpointManager(path / "checkpoints", item_names=("state", "data")) as mngr:
    mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    mngr.wait_until_finished()


def test_checkpoint_directory_round_trip(tmp_path):
  """Workdirs in the train.main layout -> load_checkpoint -> the same params and the same frames."""
  params, configs = random_params("upper")
  root = tmp_path / "ckpt"
  for name in ("motion_face", "motion_body"):
    p = params[name]
    _save_workdir(root / name, {"params": p["params"], "ema": p["params"], "norm": p["norm"],
                                "step": np.int32(3)}, configs[name])
  for name, preset in (("render", "tiny_upper512x768"), ("face_refine", "tiny_face_refine")):
    p = params[name]
    _save_workdir(root / name, {"gen": {"params": p["params"], "batch_stats": p["batch_stats"]},
                                "ema": p["params"], "step": np.int32(3)},
                  ml_collections.ConfigDict({"task": "render", "model": {"preset": preset}}))
  loaded, loaded_configs = load_checkpoint(root, "upper")
  assert set(loaded) == set(loaded_configs) - {"clip_x0"} == {"motion_face", "motion_body", "render",
                                                             "face_refine"}
  for name in loaded:
    jax.tree.map(np.testing.assert_array_equal, loaded[name], params[name])
  audio = read_audio(ASSETS_SPEECH, SR)[SR:SR + 8533]
  a = np.stack(list(stream(ASSETS_PORTRAIT, [audio], checkpoint=root, options=StreamOptions(clip_x0=3.0))))
  b = np.stack(list(stream(ASSETS_PORTRAIT, [audio], params=params, configs=configs)))
  np.testing.assert_array_equal(a, b)


def test_python_m_entry_point(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "infer.main", "--image", str(tmp_path / "none.jpg"), "--audio",
                         str(ASSETS_SPEECH), "--out", str(tmp_path / "o.mp4")], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "error: image not found" in proc.stderr, proc.stderr
