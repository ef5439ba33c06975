"""core/progress.py: plain periodic progress lines when stderr is not a terminal (fake clock)."""

from __future__ import annotations

import io

from autojudge.core.progress import ProgressLine, progress_every
from autojudge.core.run.progress import DecodeProgress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_at_most_every_n_seconds_with_eta():
    clock, out = Clock(), io.StringIO()
    with ProgressLine("evaluate", 100, unit="problems", stream=out, every=30, clock=clock) as bar:
        bar.reset(10)  # found on disk: shown, kept out of the ETA
        for done in range(11, 23):  # 12 problems, 15 s each
            clock.t += 15
            bar.update(done, note="sd")
    lines = out.getvalue().splitlines()
    # a line every 30 s of fake time (after 2, 4, ..., 12 problems); the final state was printed
    assert len(lines) == 6
    assert lines[0] == "[aj] evaluate: 12/100 problems (sd), 30 s elapsed, ETA 22 min"
    assert lines[-1] == "[aj] evaluate: 22/100 problems (sd), 3.0 min elapsed, ETA 20 min"
    out.truncate(0)
    out.seek(0)
    with ProgressLine("mine", 3, stream=out, every=30, clock=clock) as bar:
        clock.t += 10
        bar.update(1)  # too soon for a line; the end prints the final state
    assert out.getvalue() == "[aj] mine: 1/3 items, 10 s elapsed, ETA 20 s\n"


def test_disabled_or_idle_prints_nothing_and_env_sets_the_period(monkeypatch):
    out = io.StringIO()
    with ProgressLine("x", 5, stream=out, enabled=False, every=0) as bar:
        bar.update(3)
    with ProgressLine("x", 5, stream=out, every=0) as bar:
        bar.reset(5)  # everything was done already: no progress made now
    assert out.getvalue() == ""
    monkeypatch.setenv("AJ_PROGRESS_EVERY", "5")
    assert progress_every() == 5.0
    monkeypatch.setenv("AJ_PROGRESS_EVERY", "soon")
    assert progress_every() == 30.0


def test_eta_unknown_before_progress_and_decode_progress_callback(monkeypatch, capsys):
    clock = Clock()
    bar = ProgressLine("mining", 4, unit="prompts", stream=io.StringIO(), clock=clock, every=0)
    with bar:
        assert bar.line().endswith("ETA ?")
        clock.t += 120
        bar.update(1, note="labels 3 | important 33%")
        assert (
            bar.line() == "[aj] mining: 1/4 prompts (labels 3 | important 33%), 2.0 min elapsed, ETA 6.0 min"
        )
    monkeypatch.setenv("AJ_PROGRESS_EVERY", "0")
    with DecodeProgress(True, "eval", 6) as update:  # stderr is captured: not a TTY, plain lines
        update(2, 6, "")
        update(3, 6, "sd")
    err = capsys.readouterr().err
    assert "[aj] eval: 3/6 problem-mode rows (sd)" in err


def test_no_eta_until_a_batch_of_concurrent_rows_finished():
    """Rows decoded together finish at different times: the first one says nothing about the rest."""
    clock = Clock()
    bar = ProgressLine("eval", 80, unit="rows", stream=io.StringIO(), clock=clock, every=0, eta_after=20)
    with bar:
        clock.t += 180
        bar.update(1)
        assert bar.line().endswith("ETA ?")  # not 4 hours from one early row
        clock.t += 120
        bar.update(20)
        assert bar.line().endswith("ETA 15 min")  # 20 rows in 5 min: 60 more in 15


def test_mining_prints_plain_lines_per_label(tiny_pair, char_tokenizer, tmp_path, monkeypatch, capsys):
    import torch

    from autojudge.core.mining.run import mine_task
    from autojudge.core.mining.steps import MiningConfig
    from autojudge.core.models import LoadedModel, ModelPair
    from autojudge.plugins.toy import ToyArithmeticTask

    target, draft = tiny_pair
    mk = lambda name, m: LoadedModel(name, m, char_tokenizer, None, torch.float32, torch.device("cpu"))  # noqa: E731
    pair = ModelPair(draft=mk("d", draft), target=mk("t", target), tokenizer=char_tokenizer)
    monkeypatch.setenv("AJ_PROGRESS_EVERY", "0")
    cfg = MiningConfig(max_new_tokens=24, inflight=2)
    summary = mine_task(ToyArithmeticTask(), pair, tmp_path / "m", limit=3, config=cfg, progress=True)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[aj] mining: ")]
    labels = [int(x.split("(labels ")[1].split(" ")[0]) for x in lines]
    assert labels == sorted(labels) and labels[-1] == summary["labels"] > 0
    assert len(lines) > 3  # a line per decided label, not only per prompt
    assert lines[-1].startswith("[aj] mining: 3/3 prompts (labels ")
