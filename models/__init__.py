"""models: the four prediction models, from payload record to API outputs.

Serving path (no TensorFlow import): ``encode_<model>`` (compiled, one record) ->
``load_runner(mid).predict`` (LiteRT, or the same graph as numba code: ``forward`` over a
``Bank``) -> ``postprocess`` (compiled). Training and artifact export live in
``models.train`` (``shmd train``).
"""

from typing import TYPE_CHECKING, Any

from ._artifacts import ArtifactError
from ._program import Bank, Program, make_bank, scratch_for
from ._repository import default_models_dir, latest_version, next_version, version_dir, versions_on_disk
from ._runner import BACKENDS, CompiledRunner, LiteRTRunner, Runner, TFRunner, load_runner
from ._spec import ENCODER_VERSION, MODEL_IDS, MODEL_NAMES, N_FEATURES, N_MODEL_SLOTS, N_RAW_OUTPUTS
from ._validate import encode_batch, validate

if TYPE_CHECKING:
    from ._encode import encode_failure, encode_memory, encode_threat, encode_workload
    from ._forward import forward
    from ._post import postprocess

# The encoders and postprocess are numba-compiled (importing numba costs ~130 MB resident): they
# load on first use, so a client that only explains a rejected field (``validate``) stays light.
_LAZY = {
    "encode_failure": "_encode",
    "encode_memory": "_encode",
    "encode_threat": "_encode",
    "encode_workload": "_encode",
    "forward": "_forward",
    "postprocess": "_post",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "ENCODER_VERSION",
    "MODEL_IDS",
    "MODEL_NAMES",
    "N_FEATURES",
    "N_MODEL_SLOTS",
    "N_RAW_OUTPUTS",
    "ArtifactError",
    "Bank",
    "CompiledRunner",
    "LiteRTRunner",
    "Program",
    "Runner",
    "TFRunner",
    "default_models_dir",
    "encode_batch",
    "encode_failure",
    "encode_memory",
    "encode_threat",
    "encode_workload",
    "forward",
    "latest_version",
    "load_runner",
    "make_bank",
    "next_version",
    "postprocess",
    "scratch_for",
    "validate",
    "version_dir",
    "versions_on_disk",
]
