"""Stage 2 renderer: LivePortrait's networks in Flax (F, M, W, G, stitching MLPs S).

Their PyTorch checkpoint converters live in `chatanyone_jax.convert.liveportrait`.
"""

from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.presets import RendererConfig
from chatanyone_jax.render.spade_generator import SPADEDecoder, SPADEResnetBlock, SpectralConv
from chatanyone_jax.render.train_step import RendererTrainState, create_train_state, make_train_step
from chatanyone_jax.render.warping_network import DenseMotionNetwork, WarpingNetwork

__all__ = [
    "AppearanceFeatureExtractor", "DenseMotionNetwork", "MotionExtractor", "RendererConfig", "SPADEDecoder",
    "RendererTrainState", "SPADEResnetBlock", "SpectralConv", "WarpingNetwork", "create_train_state",
    "make_train_step",
]
