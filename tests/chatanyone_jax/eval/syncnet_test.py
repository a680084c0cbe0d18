"""SyncNet (joonson/syncnet_python) and python_speech_features MFCC parity, offset / confidence arithmetic,
converter checks. Reference values: reference/syncnet.npz, made by reference/make_syncnet.py with torch."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.transform

from chatanyone_jax.eval import syncnet
from tests.chatanyone_jax.eval.reference.seeded import seeded_input, seeded_state_dict

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures

REF = pathlib.Path(__file__).parent / "reference" / "syncnet.npz"
# Must match reference/make_syncnet.py.
SEEDS = {"weights": 301, "frames": 302, "audio": 303, "mfcc": 304, "feat_video": 305, "feat_audio": 306}
E2E_FRAMES, E2E_VSHIFT, E2E_BATCH = 15, 4, 4
E2E_AUDIO = E2E_FRAMES * 640 + 100
MFCC_LENGTHS, MFCC_SILENT = (16123, 300, 4000), 800
PDIST_T, PDIST_VSHIFT = 40, 15


@pytest.fixture(scope="module")
def ref():
  with np.load(REF) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def state_dict(ref):
  shapes = {k: tuple(v) for k, v in json.loads(str(ref["shapes"])).items()}
  sd = seeded_state_dict(shapes, SEEDS["weights"])
  for k, scale in json.loads(str(ref["weight_scales"])).items():
    sd[k] = (sd[k] * scale).astype(np.float32)
  return sd


@pytest.fixture(scope="module")
def scorer(state_dict):
  return syncnet.SyncScorer(syncnet.convert_syncnet(state_dict), vshift=E2E_VSHIFT)


@pytest.fixture(scope="module")
def e2e_inputs():
  frames = seeded_input((E2E_FRAMES, 224, 224, 3), SEEDS["frames"], 0.0, 256.0).astype(np.uint8)
  return frames, seeded_input((E2E_AUDIO,), SEEDS["audio"], -0.3, 0.3)


@pytest.fixture(scope="module")
def e2e_features(scorer, e2e_inputs):
  frames, audio = e2e_inputs
  return scorer.features(frames, 25, audio, batch_size=E2E_BATCH)  # 10 windows: batches 4, 4, 2 (+2 pad)


# ---- MFCC ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", range(len(MFCC_LENGTHS)))
def test_mfcc_matches_python_speech_features(ref, k):
  # k = 0: 1 s of noise (odd length, zero-padded tail); 1: shorter than one 400-sample frame; 2: silent start
  # (the eps floors of energy and filterbank).
  sig = syncnet.to_pcm16(seeded_input((MFCC_LENGTHS[k],), SEEDS["mfcc"] + k, -0.5, 0.5))
  if k == 2:
    sig[:MFCC_SILENT] = 0
  got = syncnet.mfcc(sig)
  want = ref[f"mfcc_{k}"]
  assert got.shape == want.shape == (1 + max(0, -(-(MFCC_LENGTHS[k] - 400) // 160)), 13)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)  # measured: bit-identical


def test_to_pcm16():
  np.testing.assert_array_equal(syncnet.to_pcm16(np.array([0.0, 0.5, -1.0, 1.0, 2.0], np.float32)),
                                np.array([0, 16384, -32768, 32767, 32767], np.int16))
  x = np.array([1, -2], np.int16)
  assert syncnet.to_pcm16(x) is x
  with pytest.raises(ValueError, match="dtype"):
    syncnet.to_pcm16(np.array([1, 2], np.int32))


# ---- network parity -----------------------------------------------------------------------------------
def test_variables_match_module_structure(state_dict):
  variables = syncnet.convert_syncnet(state_dict)
  shapes = jax.eval_shape(lambda: syncnet.SyncNet().init(
      jax.random.key(0), jnp.zeros((1, 13, 20)), jnp.zeros((1, 5, 224, 224, 3))))
  assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(variables)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(shapes), jax.tree_util.tree_leaves(variables),
                          strict=True):
    assert a.shape == b.shape, path


def test_streams_match_torch(ref, e2e_features):
  # Float32 convs over 5 x 224 x 224 x 3 windows of raw 0..255 pixels; features up to ~11 in size.
  # Measured max abs error vs torch: 3.2e-5 (lip), 2.1e-5 (audio).
  video, audio = e2e_features
  assert video.shape == audio.shape == (E2E_FRAMES - 5, 1024)
  np.testing.assert_allclose(video, ref["e2e_video_feats"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(audio, ref["e2e_audio_feats"], rtol=1e-4, atol=1e-4)


def test_evaluate_matches_torch(ref, e2e_features):
  s = syncnet.sync_scores(*e2e_features, vshift=E2E_VSHIFT)
  np.testing.assert_allclose(s["dists"], ref["e2e_dists"], rtol=1e-5)
  np.testing.assert_allclose(s["mean_dists"], ref["e2e_mdist"], rtol=1e-5)
  assert s["offset"] == int(ref["e2e_offset"])
  np.testing.assert_allclose(s["min_dist"], ref["e2e_minval"], rtol=1e-5)
  np.testing.assert_allclose(s["confidence"], ref["e2e_conf"], rtol=1e-4)  # measured 4e-7


def test_scorer_call_is_batch_size_invariant(ref, scorer, e2e_inputs):
  frames, audio = e2e_inputs
  out = scorer(frames, 25, audio, batch_size=11)  # one padded batch instead of three
  assert set(out) == {"offset", "min_dist", "confidence"}
  assert isinstance(out["offset"], int) and out["offset"] == int(ref["e2e_offset"])
  np.testing.assert_allclose(out["min_dist"], ref["e2e_minval"], rtol=1e-5)
  np.testing.assert_allclose(out["confidence"], ref["e2e_conf"], rtol=1e-4)


# ---- offset / confidence arithmetic ---------------------------------------------------------------------
def test_pdist_matches_torch(ref):
  fv = seeded_input((PDIST_T, 1024), SEEDS["feat_video"], -1.0, 1.0)
  fa = seeded_input((PDIST_T, 1024), SEEDS["feat_audio"], -1.0, 1.0)
  s = syncnet.sync_scores(fv, fa, vshift=PDIST_VSHIFT)
  assert s["dists"].shape == (PDIST_T, 2 * PDIST_VSHIFT + 1)
  np.testing.assert_allclose(s["dists"], ref["pdist_dists"], rtol=1e-5)
  assert s["offset"] == int(ref["pdist_offset"])
  np.testing.assert_allclose(s["min_dist"], ref["pdist_minval"], rtol=1e-5)
  np.testing.assert_allclose(s["confidence"], ref["pdist_conf"], rtol=1e-5)


@pytest.mark.parametrize("shift", [-7, 0, 3])
def test_known_shift_gives_offset_and_confidence(shift):
  # Video window i shows what audio window i + shift says: minimum at s = shift, offset = vshift - (shift +
  # vshift) = -shift. Zero distance there (up to the 1e-6 eps), ~sqrt(2 D) elsewhere (independent features).
  rng = np.random.default_rng(7)
  t, d, vshift = 60, 64, 15
  audio = rng.standard_normal((t + 2 * vshift, d))
  video = audio[vshift + shift:vshift + shift + t]
  s = syncnet.sync_scores(video, audio[vshift:vshift + t], vshift=vshift)
  assert s["offset"] == -shift
  # Windows whose shifted partner falls in the zero padding see |v| instead of 0.
  n_pad = abs(shift)
  assert s["min_dist"] == pytest.approx(n_pad / t * np.sqrt(d), rel=0.2, abs=1e-3)
  assert s["confidence"] > 0.5 * np.sqrt(2 * d)


def test_synced_features_beat_shuffled():
  rng = np.random.default_rng(8)
  audio = rng.standard_normal((50, 32))
  video = audio + 0.3 * rng.standard_normal(audio.shape)
  synced = syncnet.sync_scores(video, audio, vshift=5)
  shuffled = syncnet.sync_scores(video[rng.permutation(50)], audio, vshift=5)
  assert synced["offset"] == 0
  assert synced["confidence"] > 3 * shuffled["confidence"]


def test_pdist_rejects_mismatched_features():
  with pytest.raises(ValueError, match="features"):
    syncnet.calc_pdist(np.zeros((5, 8)), np.zeros((5, 4)))


# ---- frames ---------------------------------------------------------------------------------------------
def test_resample_indices():
  np.testing.assert_array_equal(syncnet.resample_indices(10, 25), np.arange(10))
  np.testing.assert_array_equal(syncnet.resample_indices(10, 50), [0, 2, 4, 6, 8])
  # 30 fps: output frame j at j / 25 s is nearest to source frame round(1.2 j).
  want = [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 28, 29]
  np.testing.assert_array_equal(syncnet.resample_indices(30, 30), want)
  np.testing.assert_array_equal(syncnet.resample_indices(3, 10), [0, 0, 1, 1, 2, 2, 2])


def test_lip_windows_resize_bgr_and_stack():
  # Bilinear resize without antialiasing (cv2.resize's INTER_LINEAR), half-pixel centres, rounded like a
  # uint8 image; skimage's order-1 resize with edge mode computes the same map in float64.
  clip = seeded_input((6, 40, 72, 3), 9, 0.0, 256.0).astype(np.uint8)
  got = np.asarray(syncnet._lip_windows(jnp.asarray(clip), jnp.array([0, 1])))
  assert got.shape == (2, 5, 224, 224, 3)
  want = np.stack([skimage.transform.resize(f.astype(np.float64), (224, 224), order=1, mode="edge",
                                            anti_aliasing=False, preserve_range=True) for f in clip])
  want = want[..., ::-1]
  np.testing.assert_allclose(got[0], want[:5], atol=0.51)
  np.testing.assert_array_equal(got[1, :4], got[0, 1:])
  same = np.asarray(syncnet._lip_windows(jnp.asarray(np.zeros((5, 224, 224, 3), np.uint8) + [1, 2, 3]),
                                         jnp.array([0])))
  np.testing.assert_array_equal(same[0, 0, 0, 0], [3, 2, 1])  # 224 input: no resize, BGR


def test_crop_face():
  frame = np.zeros((300, 400, 3), np.uint8)
  crop = syncnet.crop_face(frame, (100, 120, 200, 220))  # half-size 50: 50 above the centre, 90 below
  assert crop.shape == (140, 140, 3)
  rows, cols = np.meshgrid(np.arange(300), np.arange(400), indexing="ij")
  coords = np.stack([rows, cols, rows + cols], -1)  # every pixel says where it is
  # centre (x, y) = (150, 170): rows 170 - 50 .. 170 + 90, columns 150 - 70 .. 150 + 70
  np.testing.assert_array_equal(syncnet.crop_face(coords, (100, 120, 200, 220)), coords[120:260, 80:220])
  corner = syncnet.crop_face(frame, (0, 0, 100, 100))  # out of the frame: padded with 110
  assert corner.shape == (140, 140, 3) and corner[0, 0, 0] == 110 and corner[-1, -1, 0] == 0


# ---- input checks ---------------------------------------------------------------------------------------
def test_scorer_input_errors(scorer):
  frames = np.zeros((40, 224, 224, 3), np.uint8)
  audio = np.zeros(40 * 640, np.float32)
  with pytest.raises(ValueError, match="16000 Hz"):
    scorer(frames, 25, audio, sample_rate=22050)
  need = syncnet.min_frames(E2E_VSHIFT)
  assert need == 2 * E2E_VSHIFT + 6
  with pytest.raises(ValueError, match="too short"):
    scorer(frames[:need - 1], 25, audio)
  with pytest.raises(ValueError, match="too short"):  # audio decides
    scorer(frames, 25, audio[:(need - 1) * 640 + 639])
  with pytest.raises(ValueError, match="too short"):  # 50 fps: half the frames at 25 fps
    scorer(frames[:need + 2], 50, audio)
  with pytest.raises(ValueError, match="uint8"):
    scorer(frames.astype(np.float32), 25, audio)
  with pytest.raises(ValueError, match="batch_size"):
    scorer(frames, 25, audio, batch_size=0)


# ---- converter ----------------------------------------------------------------------------------------
def test_converter_rejects_bad_state_dicts(state_dict):
  sd = dict(state_dict)
  sd["netcnnlip.0.num_batches_tracked"] = np.zeros((), np.int64)  # ignored
  syncnet.convert_syncnet(sd)
  sd = {k: v for k, v in state_dict.items() if k != "netfclip.3.weight"}
  with pytest.raises(ValueError, match=r"missing keys \(1\): netfclip\.3\.weight"):
    syncnet.convert_syncnet(sd)
  with pytest.raises(ValueError, match=r"unexpected keys \(1\): netcnnlip\.99\.weight"):
    syncnet.convert_syncnet({**state_dict, "netcnnlip.99.weight": np.zeros(3, np.float32)})
  bad = {**state_dict, "netcnnaud.18.weight": np.zeros((512, 256, 4, 5), np.float32)}
  with pytest.raises(ValueError, match=r"wrong shapes \(1\): netcnnaud\.18\.weight \(512, 256, 4, 5\) "
                                       r"\(expected \(512, 256, 5, 4\)\)"):
    syncnet.convert_syncnet(bad)


def test_converter_layout(state_dict):
  v = syncnet.convert_syncnet(state_dict)
  p, bs = v["params"], v["batch_stats"]
  np.testing.assert_array_equal(p["netcnnlip"]["conv_0"]["kernel"],
                                state_dict["netcnnlip.0.weight"].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(p["netfcaud"]["dense_3"]["kernel"], state_dict["netfcaud.3.weight"].T)
  np.testing.assert_array_equal(bs["netfclip"]["bn_1"]["var"], state_dict["netfclip.1.running_var"])
  np.testing.assert_array_equal(p["netcnnaud"]["bn_19"]["scale"], state_dict["netcnnaud.19.weight"])


def test_from_file(tmp_path, state_dict):
  with pytest.raises(FileNotFoundError, match=r"syncnet_v2\.model.*download_model\.sh"):
    syncnet.SyncScorer.from_file(tmp_path / syncnet.WEIGHTS_FILE)
  path = tmp_path / "syncnet_v2.npz"
  np.savez(path, **{"module." + k: v for k, v in state_dict.items()})
  s = syncnet.SyncScorer.from_file(path, vshift=3)
  assert s.vshift == 3
  np.testing.assert_array_equal(s.variables["params"]["netcnnaud"]["conv_0"]["kernel"],
                                state_dict["netcnnaud.0.weight"].transpose(2, 3, 1, 0))
