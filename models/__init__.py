"""models: the four prediction models, from payload record to API outputs.

Serving path (no TensorFlow import): ``encode_<model>`` (compiled, one record) ->
``load_runner(mid).predict`` (LiteRT) -> ``postprocess`` (compiled). Training and
artifact export live in ``models.train`` (``shmd train``).
"""

from ._artifacts import ArtifactError, default_models_dir
from ._encode import encode_failure, encode_memory, encode_threat, encode_workload
from ._post import postprocess
from ._runner import LiteRTRunner, Runner, TFRunner, load_runner
from ._spec import ENCODER_VERSION, MODEL_IDS, MODEL_NAMES, N_FEATURES, N_RAW_OUTPUTS
from ._validate import encode_batch, validate

__all__ = [
    "ENCODER_VERSION",
    "MODEL_IDS",
    "MODEL_NAMES",
    "N_FEATURES",
    "N_RAW_OUTPUTS",
    "ArtifactError",
    "LiteRTRunner",
    "Runner",
    "TFRunner",
    "default_models_dir",
    "encode_batch",
    "encode_failure",
    "encode_memory",
    "encode_threat",
    "encode_workload",
    "load_runner",
    "postprocess",
    "validate",
]
