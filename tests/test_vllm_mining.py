"""Mining on vLLM gives the transformers miner's labels (marked ``integration`` and ``vllm``).

SmolLM2-135M-Instruct as target and its first 24 layers as draft, float32, eager; 3 toy-arith
prompts, short budget. Rollouts run as batched, prefix-cached vLLM generation; the draft argmax
and the features stay on transformers. When vLLM is missing this fails with the install hint.
"""

from __future__ import annotations

import pytest
import torch
from vllm_helpers import save_layer_dropped_draft

from autojudge.core.backends.vllm import require_vllm
from autojudge.core.mining.run import mine_task
from autojudge.core.mining.steps import Miner, MiningConfig
from autojudge.core.mining.store import MinedStore, merge_stores
from autojudge.core.models import ModelPair, load_model
from autojudge.plugins.toy import ToyArithmeticTask

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

N_PROMPTS, MAX_NEW = 3, 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require_vllm()
    from autojudge.core.backends.vllm.engine import VLLMEngine

    tmp = tmp_path_factory.mktemp("vllm-mining")
    draft_dir = save_layer_dropped_draft(tmp / "draft24")
    target = load_model("smollm2-135m-instruct", dtype="float32")
    draft = load_model(str(draft_dir), dtype="float32")
    pair = ModelPair(draft=draft, target=target, tokenizer=target.tokenizer)
    engine = VLLMEngine("smollm2-135m-instruct", None, kv_cache_gib=0.25, max_model_len=512, max_num_seqs=4)
    yield {"pair": pair, "engine": engine, "tmp": tmp}
    engine.close()


def test_vllm_mining_labels_equal_the_transformers_miner(setup):
    from autojudge.core.mining.vllm import VLLMMiner

    pair, engine = setup["pair"], setup["engine"]
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, max_mismatches=4, inflight=N_PROMPTS)
    items = list(enumerate(task.load("train", limit=N_PROMPTS)))
    ref = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg)
    expected = {i: ref.mine(ex, i) for i, ex in items}
    miner = VLLMMiner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg, engine=engine)
    got = {r.index: r for r in miner.mine_many(items)}
    assert sorted(got) == [i for i, _ in items]
    n_labels = 0
    for i, _ in items:
        a, b = got[i], expected[i]
        assert a.backend == "vllm" and b.backend == "transformers"
        assert (a.response, a.answer, a.correct, a.skipped, a.final_response) == (
            b.response, b.answer, b.correct, b.skipped, b.final_response,
        )  # fmt: skip
        speed = ("rollout_target_forwards", "rollout_target_tokens")
        rows_a = [{k: v for k, v in r.row().items() if k not in speed} for r in a.records]
        rows_b = [{k: v for k, v in r.row().items() if k not in speed} for r in b.records]
        assert rows_a == rows_b  # positions, tokens, labels, answers, correctness
        for ra, rb in zip(a.records, b.records, strict=True):
            for name in ("dt", "tt", "dd", "x"):
                torch.testing.assert_close(ra.features[name], rb.features[name], atol=2e-4, rtol=1e-4)
            assert int(ra.features["draft_rank"]) == int(rb.features["draft_rank"])
        n_labels += len(a.records)
    assert n_labels >= 3, "fixture too weak: few mismatches"
    # one batched generate per round, not one per rollout
    assert miner.rollouts.generate_calls < n_labels + N_PROMPTS


def test_vllm_store_merges_with_a_transformers_store(setup):
    pair, engine, tmp = setup["pair"], setup["engine"], setup["tmp"]
    task = ToyArithmeticTask()
    cfg = MiningConfig(max_new_tokens=MAX_NEW, max_mismatches=2, inflight=2)
    mine_task(task, pair, tmp / "s0", limit=4, config=cfg, shard=(0, 2), progress=False)
    mine_task(task, pair, tmp / "s1", limit=4, config=cfg, shard=(1, 2), progress=False, backend="vllm",
              vllm_options={"engine": engine})  # fmt: skip
    merged = merge_stores([tmp / "s0", tmp / "s1"], tmp / "merged")
    backends = {p["index"]: p["backend"] for p in merged.prompt_rows()}
    # the transformers backend's default driver records "batched"; labels do not depend on the backend
    assert backends == {0: "batched", 1: "vllm", 2: "batched", 3: "vllm"}
    assert MinedStore(tmp / "s1").read_meta()["settings"] == MinedStore(tmp / "s0").read_meta()["settings"]
