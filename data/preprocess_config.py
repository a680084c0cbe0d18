"""Settings of `python -m data.preprocess`, shared by decoding, crops, annotation and the runner."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Preprocessing settings (sizes are (height, width) in pixels).

  Attributes:
    fps: output frame rate.
    sample_rate: output audio rate.
    body_size: upper-body crop size, 2:3 (the renderer's output size, 768 × 512 for upper512x768).
    head_size: head crop side (the face-refine / head512 output size).
    min_frames: shortest clip kept (T + H = 50 frames of stage 1).
    max_seconds: only the first seconds of each video (None: all).
    segment_frames: frames decoded and annotated at once (bounds memory on long videos).
    max_side: frames are scaled on decode so that their longer side is at most this.
    head_scale: head box side / face size (face-mesh extent).
    body_scale: body box width / face size.
    body_face_y: the face centre's height in the body box, as a fraction of its height from the top.
    smooth_sigma: Gaussian smoothing of box centres over time, in frames.
    jpeg_quality: of the stored crops.
    min_audio_rms: quieter audio counts as silent.
    hand_radius: capsule radius of the rendered hands as a fraction of the palm size.
    face_only: run only MediaPipe's face mesh (no pose, hands or person segmentation), for head-only
      footage such as face crops: about 3x faster; the body keypoints, hands and the hand and person
      masks of its clips are zeros (what the records hold where nothing was detected), so such clips
      train the face motion model and the head renderer, not the body motion or upper-body renderer.
  """

  fps: float = 30.0
  sample_rate: int = 16000
  body_size: tuple[int, int] = (768, 512)
  head_size: int = 512
  min_frames: int = 50
  max_seconds: float | None = None
  segment_frames: int = 900
  max_side: int = 1280
  head_scale: float = 1.9
  body_scale: float = 3.6
  body_face_y: float = 0.28
  smooth_sigma: float = 5.0
  jpeg_quality: int = 90
  min_audio_rms: float = 1e-3
  hand_radius: float = 0.12
  face_only: bool = False

  def __post_init__(self):
    h, w = self.body_size
    if 2 * h != 3 * w:
      raise ValueError(f"body_size must be 2:3 (width:height), got height {h} width {w}")

  def samples_per_frame(self) -> float:
    return self.sample_rate / self.fps
