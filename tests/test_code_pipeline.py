"""`aj run --task code` plumbing on tiny random models (float32, char tokenizer): every stage and the report.

Tiny random models write no code, so every mined answer is ``None`` (no judge is trained: the run
says so and recommends lossless SD); what is tested is that the code task goes through the whole
pipeline: resolution of ``code`` to ``humaneval``, prompts, extraction, pass@1 in the report. For
the eval prompts the decoding engine's text is replaced by scripted answers (a correct and a wrong
program), which the sandbox really runs and grades.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_char_tokenizer, make_tiny_model, noisy_copy

from autojudge.core.models import LoadedModel, ModelPair
from autojudge.core.run.pipeline import PipelineError, RunConfig, run_pipeline


@pytest.fixture(scope="module")
def pair() -> ModelPair:
    tok = make_char_tokenizer()
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    mk = lambda name, m: LoadedModel(name, m, tok, None, torch.float32, torch.device("cpu"))  # noqa: E731
    return ModelPair(draft=mk("tiny-draft", draft), target=mk("tiny-target", target), tokenizer=tok)


class ScriptedEngine:
    """The real engine decodes (modes, metrics); its text is then the answer scripted for the prompt's problem.

    Tiny random models write no code, so without this no program would ever reach the sandbox.
    Prompts of problems without a script keep the model's own text.
    """

    def __init__(self, inner, scripts: dict[str, str]) -> None:
        self.inner = inner
        self.scripts = scripts

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompt, **kw):
        res = self.inner.generate(prompt, **kw)
        text = prompt if isinstance(prompt, str) else self.inner.tokenizer.decode(prompt)
        for marker, answer in self.scripts.items():
            if marker in text:
                res.text = answer
        return res


def test_code_task_runs_end_to_end_with_pass_at_1(pair, tmp_path, monkeypatch):
    import autojudge.core.backends as backends
    from autojudge.core.compare import sandboxed
    from autojudge.plugins.manager import get_task

    # the eval prompts (eval_limit=2): humaneval-1 gets its canonical solution (correct), humaneval-4 a
    # wrong one; both as a model writes them, in a fenced block defining the whole function
    ex1 = {e.id: e for e in get_task("code").load("eval", limit=2)}["humaneval-1"]
    correct = f"Here it is:\n```python\n{ex1.question}{ex1.meta['canonical_solution']}```\n"
    wrong = "```python\ndef mean_absolute_deviation(numbers):\n    return 0.0\n```"
    scripts = {"def separate_paren_groups(": correct, "def mean_absolute_deviation(": wrong}
    real_open = backends.open_engine
    monkeypatch.setattr(
        backends, "open_engine", lambda *a, **kw: ScriptedEngine(real_open(*a, **kw), scripts)
    )
    ran: list[str] = []  # the programs the sandbox really ran
    real_box = sandboxed.get_code_sandbox

    class Spy:
        def __init__(self, box):
            self.box = box

        def run_many(self, programs, **kw):
            ran.extend(p.code for p in programs)
            return self.box.run_many(programs, **kw)

    monkeypatch.setattr(sandboxed, "get_code_sandbox", lambda backend=None: Spy(real_box(backend)))
    sandboxed.cache_clear()  # programs of earlier tests must not be answered from the cache

    out = tmp_path / "run"  # eval_batch=1: the scripted engine answers one prompt at a time (.generate)
    s = run_pipeline(RunConfig(task="code", out=out, mine_limit=2, val_limit=1, eval_limit=2, max_new_tokens=6, k=3,
                               top_k=(2,), progress=False, eval_batch=1), pair=pair)  # fmt: skip
    assert s["task"] == "humaneval" and s["metric"] == "pass@1" and s["settings"]["dataset"] is None
    assert s["eval_split"] == "eval" and len(s["eval_prompt_ids"]) == 2
    assert all(i.startswith("humaneval-") for i in s["eval_prompt_ids"])
    assert s["mode_order"][:2] == ["ar", "sd"] and s["recommended_mode"] == "sd"
    meta = json.loads((out / "mined" / "meta.json").read_text())
    assert meta["task"] == "humaneval" and meta["dataset"] == "humaneval" and meta["split"] == "mine"
    assert "pass@1" in (out / "report.md").read_text()
    # graded by running them: one of the two eval problems passes its asserts, in every mode
    assert s["modes"] and all(a["accuracy"] == 0.5 for a in s["modes"].values()), s["modes"]
    row_files = sorted((out / "eval").glob("*.jsonl"))
    assert len(row_files) == len(s["modes"])
    for f in row_files:
        rows = {r["prompt_id"]: r for r in map(json.loads, f.read_text().splitlines())}
        assert (
            rows["humaneval-1"]["correct"] is True
            and "def separate_paren_groups" in rows["humaneval-1"]["answer"]
        )
        assert rows["humaneval-4"]["correct"] is False and "return 0.0" in rows["humaneval-4"]["answer"]
    assert any("def separate_paren_groups" in c for c in ran) and any("return 0.0" in c for c in ran), ran


def test_unknown_dataset_stops_the_run_before_any_work(pair, tmp_path):
    with pytest.raises(PipelineError, match="valid datasets"):
        run_pipeline(RunConfig(task="code", dataset="apps", out=tmp_path / "r", progress=False), pair=pair)
