"""The measured dtype choice (core/machine.py): the rule, the cache, the override."""

from __future__ import annotations

import json

import torch

from autojudge.core import machine
from autojudge.core.models import resolve_dtype


def test_rule_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("AJ_CPU_DTYPE", raising=False)
    calls = []
    fake = {("float32", 1): 10.0, ("bfloat16", 1): 9.0, ("float32", 32): 50.0, ("bfloat16", 32): 200.0}

    def gflops(dt, rows, **kw):
        calls.append((dt, rows))
        return fake[(str(dt).replace("torch.", ""), rows)]

    monkeypatch.setattr(machine, "gemm_gflops", gflops)
    assert machine.preferred_dtype() == torch.bfloat16  # faster batched, not much slower at 1 row
    assert len(calls) == 4
    assert machine.preferred_dtype() == torch.bfloat16 and len(calls) == 4  # cached: not measured again
    (entry,) = json.loads((tmp_path / machine.CACHE_FILE).read_text()).values()
    assert entry["preferred"] == "bfloat16" and entry["bfloat16@32"] == 200.0
    # conversion-bound bf16 (no bf16 units): float32
    fake.update({("bfloat16", 32): 40.0})
    assert machine.machine_facts(refresh=True)["preferred"] == "float32"
    assert resolve_dtype("auto") == torch.float32
    fake.update({("bfloat16", 32): 300.0, ("bfloat16", 1): 5.0})  # batched fast, single row 2x slower
    assert machine.machine_facts(refresh=True)["preferred"] == "float32"


def test_override_and_explicit_dtypes(tmp_path, monkeypatch):
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("AJ_CPU_DTYPE", "bf16")
    assert resolve_dtype("auto") == torch.bfloat16
    monkeypatch.setenv("AJ_CPU_DTYPE", "float32")
    assert resolve_dtype("AUTO") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(None) == torch.bfloat16
    assert not (tmp_path / machine.CACHE_FILE).exists()  # nothing measured


def test_measure_runs_for_real():
    g = machine.gemm_gflops(torch.float32, 2, shape=(64, 64), seconds=0.01)
    assert g > 0
