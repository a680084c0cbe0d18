"""Face analysis for the evaluation tables: identity embeddings (CSIM), 68 landmarks (LMD, Diversity) and
face boxes (SyncNet crops), all from dlib, offline.

`FaceAnalyzer` runs dlib's HOG frontal face detector, a 68-point landmark model (iBUG 300-W layout) and
a face-recognition model giving 128-d descriptors; the two model files are given by path (the
`face_recognition_models` wheel ships both; `infer.evaluation.backends` finds them there). CSIM (paper
Tables 1 / 3) is the cosine similarity of the source image's descriptor and each generated frame's,
averaged over frames with a face (`identity_similarity`). LMD and Diversity use landmarks in a
face-normalised frame (`normalise_landmarks`: centred, divided by the inter-ocular distance), so they do
not depend on the output resolution or on how the generated and ground-truth crops are framed.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import dlib
import numpy as np
from PIL import Image
from scipy.signal import medfilt

NUM_LANDMARKS = 68
MOUTH = tuple(range(48, 68))  # iBUG 300-W: outer lips 48-59, inner lips 60-67
EYE_CORNERS = (36, 45)        # outer corners of the right and left eye (image left / right)
DESCRIPTOR_DIM = 128
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"


@dataclasses.dataclass
class Face:
  box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels
  landmarks: np.ndarray  # (68, 2) x, y in pixels
  score: float           # detector score (HOG: SVM margin)
  shape: object = dataclasses.field(default=None, repr=False)  # dlib full_object_detection (analysed image)


class FaceAnalyzer:
  """dlib face detection, 68-point landmarks and 128-d identity descriptors of RGB uint8 images.

  Args:
    recognition_model: a dlib face-recognition model file (.dat), e.g. the wheel's
      `dlib_face_recognition_resnet_model_v1.dat` (RECOGNITION_MODEL).
    landmark_model: dlib's 68-point shape predictor (LANDMARK_MODEL).
    upsample: times the HOG detector upsamples the image (0 finds faces of ~80 px and up, the size of
      a face in a head or upper-body crop; 1 goes down to ~40 px at 4x the time).
    min_size: images are first upscaled (bilinear) so that their shorter side is at least this many
      pixels: the detector misses faces in small frames such as the tiny presets' outputs.
  """

  def __init__(self, recognition_model: str | os.PathLike, landmark_model: str | os.PathLike, *,
               upsample: int = 0, min_size: int = 320):
    path, landmarks = pathlib.Path(recognition_model), pathlib.Path(landmark_model)
    if not path.is_file():
      raise FileNotFoundError(f"face recognition model {path} does not exist (give a dlib .dat model, e.g. "
                              f"{RECOGNITION_MODEL} from face_recognition_models)")
    if not landmarks.is_file():
      raise FileNotFoundError(f"landmark model {landmarks} does not exist (give dlib's {LANDMARK_MODEL}, "
                              "e.g. from face_recognition_models)")
    self.detector = dlib.get_frontal_face_detector()
    self.predictor = dlib.shape_predictor(str(landmarks))
    try:
      self.encoder = dlib.face_recognition_model_v1(str(path))
    except RuntimeError as e:
      raise ValueError(f"{path} is not a dlib face recognition model: {e}") from e
    self.upsample = upsample
    self.min_size = min_size
    self.model_path = path

  def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
      image = np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    factor = max(1.0, self.min_size / min(image.shape[:2]))
    if factor > 1.0:
      h, w = image.shape[:2]
      image = np.asarray(Image.fromarray(image).resize((round(w * factor), round(h * factor)),
                                                       Image.Resampling.BILINEAR))
    return np.ascontiguousarray(image), factor

  def detect(self, image: np.ndarray) -> tuple[Face | None, np.ndarray, float]:
    """(the largest face or None, the image as analysed, its upscale factor)."""
    img, factor = self._prepare(image)
    rects, scores, _ = self.detector.run(img, self.upsample, 0.0)
    if not rects:
      return None, img, factor
    i = int(np.argmax([r.width() * r.height() for r in rects]))
    r = rects[i]
    shape = self.predictor(img, dlib.rectangle(r.left(), r.top(), r.right(), r.bottom()))
    pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
    face = Face(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) / factor, pts / factor,
                float(scores[i]), shape)
    return face, img, factor

  def analyse(self, image: np.ndarray, descriptor: bool = True) -> tuple[Face | None, np.ndarray | None]:
    """(face, 128-d unit descriptor) of the largest face; (None, None) when no face is found."""
    face, img, _ = self.detect(image)
    if face is None:
      return None, None
    if not descriptor:
      return face, None
    d = np.asarray(self.encoder.compute_face_descriptor(img, face.shape), np.float64)
    return face, d

  def analyse_frames(self, frames, descriptor: bool = True) -> dict[str, np.ndarray]:
    """Per frame: found (T,) bool, boxes (T, 4), landmarks (T, 68, 2), descriptors (T, 128) (NaN if no
    face)."""
    frames = list(frames)
    t = len(frames)
    out = {"found": np.zeros(t, bool), "boxes": np.full((t, 4), np.nan),
           "landmarks": np.full((t, NUM_LANDMARKS, 2), np.nan), "descriptors": np.full((t, DESCRIPTOR_DIM),
                                                                                       np.nan)}
    for i, frame in enumerate(frames):
      face, d = self.analyse(frame, descriptor)
      if face is None:
        continue
      out["found"][i] = True
      out["boxes"][i] = face.box
      out["landmarks"][i] = face.landmarks
      if d is not None:
        out["descriptors"][i] = d
    return out


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine similarity along the last axis (broadcasting)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  num = np.sum(a * b, axis=-1)
  return num / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def identity_similarity(source_descriptor: np.ndarray, descriptors: np.ndarray) -> tuple[float, int]:
  """(mean CSIM over the frames with a face (rows without NaN), number of such frames); NaN if none."""
  d = np.asarray(descriptors, np.float64)
  ok = np.isfinite(d).all(axis=-1)
  if not ok.any() or not np.isfinite(source_descriptor).all():
    return float("nan"), 0
  return float(np.mean(cosine_similarity(source_descriptor, d[ok]))), int(ok.sum())


def normalise_landmarks(landmarks: np.ndarray) -> np.ndarray:
  """(..., 68, 2) pixels -> centred on their centroid, in units of the inter-ocular distance."""
  lm = np.asarray(landmarks, np.float64)
  centred = lm - lm.mean(axis=-2, keepdims=True)
  iod = np.linalg.norm(lm[..., EYE_CORNERS[0], :] - lm[..., EYE_CORNERS[1], :], axis=-1)
  return centred / np.maximum(iod, 1e-6)[..., None, None]


def mouth_landmark_distance(generated: np.ndarray, target: np.ndarray) -> tuple[float, int]:
  """LMD ×100 (in % of the inter-ocular distance): mean Euclidean distance of the 20 mouth points of
  normalised landmarks (T, 68, 2), over frames where both have a face; (NaN, 0) if none."""
  g, t = normalise_landmarks(generated), normalise_landmarks(target)
  ok = np.isfinite(g).all(axis=(-1, -2)) & np.isfinite(t).all(axis=(-1, -2))
  if not ok.any():
    return float("nan"), 0
  m = list(MOUTH)
  dist = np.linalg.norm(g[ok][:, m] - t[ok][:, m], axis=-1)
  return float(100.0 * dist.mean()), int(ok.sum())


def landmark_diversity(landmarks: np.ndarray, min_frames: int = 2) -> float:
  """Diversity ×100: temporal variance of normalised landmarks (T, 68, 2), mean over points and
  coordinates, over the frames with a face; NaN with fewer than `min_frames` such frames."""
  n = normalise_landmarks(landmarks)
  ok = np.isfinite(n).all(axis=(-1, -2))
  if ok.sum() < max(min_frames, 2):
    return float("nan")
  return float(100.0 * np.mean(np.var(n[ok], axis=0)))


def syncnet_crops(frames, boxes: np.ndarray, found: np.ndarray, crop_scale: float = 0.4,
                  size: int = 224, smooth: int = 13) -> np.ndarray | None:
  """Face crops as syncnet_python's `crop_video` makes them: box half-size bs = max(w, h) / 2 and centre
  median-filtered over `smooth` frames (boxes of frames without a face interpolated), then the crop
  [cy - bs, cy + bs (1 + 2 crop_scale)] x [cx - bs (1 + crop_scale), cx + bs (1 + crop_scale)] of the
  frame padded by bs · (1 + crop_scale) with gray 110, resized to size². None when no frame has a face."""
  found = np.asarray(found, bool)
  if not found.any():
    return None
  t = np.arange(len(found))
  b = np.stack([np.interp(t, t[found], np.asarray(boxes)[found, k]) for k in range(4)], -1)
  bs = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
  cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
  k = min(smooth, len(t) - (1 - len(t) % 2))  # odd, at most the length
  if k >= 3:
    bs, cx, cy = medfilt(bs, k), medfilt(cx, k), medfilt(cy, k)
  out = []
  for i, frame in enumerate(frames):
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
      frame = np.clip(np.asarray(frame, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    pad = int(bs[i] * (1 + crop_scale))
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
    my, mx = cy[i] + pad, cx[i] + pad
    y0, y1 = int(my - bs[i]), int(my + bs[i] * (1 + 2 * crop_scale))
    x0, x1 = int(mx - bs[i] * (1 + crop_scale)), int(mx + bs[i] * (1 + crop_scale))
    crop = padded[max(y0, 0):max(y1, 1), max(x0, 0):max(x1, 1)]
    out.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR)))
  return np.stack(out)
