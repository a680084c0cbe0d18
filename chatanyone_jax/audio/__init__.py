"""Audio front end of stage 1: log-mel in JAX (whole clip and streaming) and audio encoders; `whisper`: the
pretrained Whisper encoder and its own log-mel (imported as a module, its names overlap melspec's)."""

from chatanyone_jax.audio.encoder import (
                                          AudioEncoder,
                                          ExternalFeatureAdapter,
                                          num_output_frames,
                                          resample_matrix,
                                          resample_time,
)
from chatanyone_jax.audio.melspec import (
                                          MelConfig,
                                          MelStreamState,
                                          init_mel_stream,
                                          log_mel_spectrogram,
                                          max_stream_frames,
                                          mel_filterbank,
                                          mel_power_spectrogram,
                                          mel_stream_step,
                                          num_frames,
)

__all__ = [
    "AudioEncoder", "ExternalFeatureAdapter", "MelConfig", "MelStreamState", "init_mel_stream",
    "log_mel_spectrogram", "max_stream_frames", "mel_filterbank", "mel_power_spectrogram", "mel_stream_step",
    "num_frames", "num_output_frames", "resample_matrix", "resample_time",
]
