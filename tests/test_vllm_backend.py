"""The judge inside vLLM's speculative decoding (marked ``integration`` and ``vllm``; CI installs vLLM).

SmolLM2-135M-Instruct as target and a layer-dropped copy (its first 24 of 30 layers) as
draft, float32, eager: vLLM (in-process, V1 model runner) against autojudge's own
transformers engine on a batch of prompts of different lengths. When vLLM is missing
these tests fail with the install hint (no skips).
"""

from __future__ import annotations

import pytest
import torch
from vllm_helpers import QUESTIONS, chat, linear_judge_artifact, save_layer_dropped_draft

from autojudge.core.backends.vllm import require_vllm
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.models import load_model
from autojudge.judges.artifact import save_judge
from autojudge.judges.spec import load_judge_spec

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

K, N = 4, 40


def vllm_judge(venv, path, threshold=None):
    """A judge artifact loaded the way ``aj decode/serve --backend vllm`` load it: against vLLM's model fingerprints."""
    fp = venv.fingerprints()
    return load_judge_spec(str(path), target=fp["target"], draft=fp["draft"], threshold=threshold)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require_vllm()  # fails with the install hint when vLLM is missing
    from autojudge.core.backends.vllm.engine import VLLMEngine

    tmp = tmp_path_factory.mktemp("vllm")
    draft_dir = save_layer_dropped_draft(tmp / "draft24")
    target = load_model("smollm2-135m-instruct", dtype="float32")
    draft = load_model(str(draft_dir), dtype="float32")
    ours = SpeculativeEngine(target.model, draft.model, target.tokenizer)
    artifact = linear_judge_artifact(tmp / "judge.safetensors", target, draft)
    prompts = [chat(target.tokenizer, q) for q in QUESTIONS]
    venv = VLLMEngine("smollm2-135m-instruct", draft_dir, k=K, kv_cache_gib=0.25, max_model_len=1024)
    yield {"target": target, "draft": draft, "ours": ours, "vllm": venv, "prompts": prompts, "artifact": artifact,
           "draft_dir": draft_dir}  # fmt: skip
    venv.close()


def test_lossless_and_never_accept_equal_plain_greedy(setup):
    venv, ours, prompts = setup["vllm"], setup["ours"], setup["prompts"]
    assert len({len(venv.encode(p)) for p in prompts}) == len(prompts)  # different lengths in one batch
    greedy = [ours.generate(p, mode="ar", max_new_tokens=N).tokens for p in prompts]
    ar = venv.generate(prompts, mode="ar", max_new_tokens=N)
    sd = venv.generate(prompts, mode="sd", max_new_tokens=N)
    never = venv.generate(prompts, mode="judge", judge="never", max_new_tokens=N)
    assert [r.tokens for r in ar] == greedy
    assert [r.tokens for r in sd] == greedy
    assert [r.tokens for r in never] == greedy
    assert sd[0].metrics.num_accepted_tokens > 0  # the draft agreed somewhere: verification really ran
    assert sd[0].metrics.num_drafts > 0 and sd[0].metrics.mean_acceptance_length > 1.0
    assert never[0].metrics.num_judge_accepted == 0
    assert never[0].metrics.num_mismatches_reached > 0  # the judge was asked, and refused
    # a trained artifact at threshold 0 is lossless too
    zero = venv.generate(
        prompts, mode="judge", judge=vllm_judge(venv, setup["artifact"], 0.0), max_new_tokens=N
    )
    assert [r.tokens for r in zero] == greedy


def test_judged_output_equals_the_transformers_engine(setup):
    venv, ours, prompts = setup["vllm"], setup["ours"], setup["prompts"]
    judge = load_judge_spec(str(setup["artifact"]), target=setup["target"], draft=setup["draft"])
    ref = [ours.generate(p, mode="judge", judge=judge, k=K, max_new_tokens=N) for p in prompts]
    got = venv.generate(prompts, mode="judge", judge=vllm_judge(venv, setup["artifact"]), max_new_tokens=N)
    for r, g in zip(ref, got, strict=True):
        assert g.tokens == r.tokens, f"vLLM {g.text!r} != engine {r.text!r}"
        assert g.finish_reason == r.finish_reason
    accepted = sum(r.metrics.num_judge_accepted for r in ref)
    assert accepted > 0  # the judge changed the output: otherwise this test could not fail
    # vLLM always verifies k drafts, also in the last cycle where the engine proposes fewer (the extra
    # tokens are cut at max_tokens): its counters can only be larger
    assert got[0].metrics.num_judge_accepted >= accepted
    greedy = venv.generate(prompts, mode="sd", max_new_tokens=N)
    assert [g.tokens for g in got] != [s.tokens for s in greedy]
    # one prompt alone gives what it gave inside the batch (continuous batching does not change decisions)
    alone = venv.generate(
        prompts[2], mode="judge", judge=vllm_judge(venv, setup["artifact"]), max_new_tokens=N
    )
    assert alone[0].tokens == got[2].tokens


def test_topk_baseline_equals_engine_and_dd_judges_are_refused(setup, tmp_path):
    venv, ours, prompts = setup["vllm"], setup["ours"], setup["prompts"][:2]
    ref = [
        ours.generate(p, mode="judge", judge=load_judge_spec("topk:3"), k=K, max_new_tokens=N).tokens
        for p in prompts
    ]
    got = venv.generate(prompts, mode="judge", judge="topk:3", max_new_tokens=N)
    assert [g.tokens for g in got] == ref
    target, draft = setup["target"], setup["draft"]
    dd = save_judge(
        tmp_path / "dd.safetensors", {"dd": torch.zeros(draft.hidden_size), "dt": torch.zeros(target.hidden_size)},
        0.0, ["dd", "dt"], threshold=0.5, draft=draft.fingerprint(), target=target.fingerprint(),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"'dd\+dt'.*supports 'dt', 'dt\+x'"):
        venv.generate(prompts, mode="judge", judge=vllm_judge(venv, dd), max_new_tokens=4)


def test_sampling_requests_stay_lossless(setup):
    """A greedy and a sampled request in one batch: the judge (``always``) only touches the greedy one.

    Sampled verification is slow on CPU (vLLM's random rejection kernels fall back to Python
    without Triton), so the sampled requests are short.
    """
    from vllm import SamplingParams

    venv, prompts = setup["vllm"], setup["prompts"][:2]
    llm = venv.llm("spec")
    venv.install(venv.judge_description("always"))
    ids = [venv.encode(p) for p in prompts]
    sampled = SamplingParams(temperature=1.0, seed=7, max_tokens=6)
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    before = venv.judge_stats()
    llm.generate([{"prompt_token_ids": ids[1]}], [sampled], use_tqdm=False)
    alone = venv.judge_stats()
    assert alone["num_verify_steps"] > before["num_verify_steps"]  # the sampled request was verified ...
    assert alone["num_judge_accepted"] == before["num_judge_accepted"]  # ... never with judge accepts
    assert alone["num_mismatches_reached"] == before["num_mismatches_reached"]
    outs = llm.generate(
        [{"prompt_token_ids": ids[0]}, {"prompt_token_ids": ids[1]}], [greedy, sampled], use_tqdm=False
    )
    mixed = venv.judge_stats()
    assert mixed["num_judge_accepted"] > alone["num_judge_accepted"]  # the greedy request got judge accepts
    # with `always`, the greedy request's output is the draft's own greedy proposals + one target token per cycle:
    # it runs to its budget unless an accepted draft token is EOS (seen once in CI: 14 tokens, finish "stop")
    out = outs[0].outputs[0]
    assert len(out.token_ids) == 16 or (out.finish_reason == "stop" and 0 < len(out.token_ids) < 16)


def test_aj_decode_backend_vllm(setup):
    import json

    from click.testing import CliRunner

    from autojudge.cli.decode_cmd import decode

    target, ours = setup["target"], setup["ours"]
    args = ["--target", "smollm2-135m-instruct", "--draft", str(setup["draft_dir"]), "--prompt", QUESTIONS[1],
            "--mode", "judge", "--judge", str(setup["artifact"]), "-k", str(K), "--max-new-tokens", "24",
            "--dtype", "float32", "--backend", "vllm", "--json"]  # fmt: skip
    res = CliRunner().invoke(decode, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    judge = load_judge_spec(str(setup["artifact"]), target=target, draft=setup["draft"])
    ref = ours.generate(
        chat(target.tokenizer, QUESTIONS[1]), mode="judge", judge=judge, k=K, max_new_tokens=24
    )
    assert out["tokens"] == ref.tokens
    assert out["judge"]["blocks"] == ["dt", "x"]
    assert out["metrics"]["num_drafts"] > 0 and out["metrics"]["mean_acceptance_length"] > 1.0
