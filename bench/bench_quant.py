"""Target step times: int8 weight-only vs bfloat16 (plain and packed) vs float32 (core/quant.py, core/packed_linear.py).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_quant.py --model qwen2.5-coder-1.5b-instruct

Loads the model once in float32, then times, with a KV cache holding a ``--context``-token prefix,
a 1-token step (autoregressive decoding, the draft's proposal step) and a ``--verify``-token
forward (the target's verification of k=8 drafts plus the pending token), median of ``--reps``
runs, the cache cropped back to the prefix after each, for float32 (alone), then bfloat16
(``.to``: plain ``nn.Linear``, the weight reordered by oneDNN on every call), bfloat16 with packed
linears (``pack_linears_`` of a copy: what ``load_model`` gives where oneDNN has bfloat16; its
outputs are checked bit for bit against plain bfloat16) and int8 (``quantize_int8_`` of a copy:
bfloat16 activations), these taking turns in every repetition so that load from other jobs hits
them alike. Prints a table with
ratios to bfloat16 and the CPU's ``lscpu`` flags relevant to the kernels (avx512*, amx*, avx_vnni). Step times on a shared
machine are noisy: run it when the machine is quiet, or say it was not.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import time

import torch
from transformers import DynamicCache

from autojudge.core.models import load_model
from autojudge.core.packed_linear import pack_linears_
from autojudge.core.quant import Int8Linear, quantize_int8_


def _cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "(lscpu not available)"
    name, flags = "", []
    for line in out.splitlines():
        if line.startswith("Model name:"):
            name = line.split(":", 1)[1].strip()
        if line.startswith("Flags:"):
            flags = [
                f
                for f in line.split(":", 1)[1].split()
                if f.startswith(("avx512", "amx", "avx_vnni", "avx2"))
            ]
    return f"{name}; flags: {' '.join(flags)}"


class _Stepper:
    """One model with a KV cache holding a ``context``-token prefix; times forwards on top of it."""

    @torch.inference_mode()
    def __init__(self, model, context: int, kernel_max_rows: int | None = None):
        self.model, self.context, self.kmax = model, context, kernel_max_rows
        g = torch.Generator().manual_seed(0)
        prefix = torch.randint(100, 30000, (1, context), generator=g)
        self.cache = DynamicCache()
        model(input_ids=prefix, past_key_values=self.cache, use_cache=True)
        self.g = torch.Generator().manual_seed(1)

    @torch.inference_mode()
    def time(self, n: int) -> float:
        ids = torch.randint(100, 30000, (1, n), generator=self.g)
        pos = torch.arange(self.context, self.context + n).view(1, -1)
        if self.kmax is not None:
            Int8Linear.kernel_max_rows = self.kmax
        t0 = time.perf_counter()
        self.model(input_ids=ids, past_key_values=self.cache, position_ids=pos, use_cache=True)
        dt = time.perf_counter() - t0
        self.cache.crop(-n)
        return dt


def _interleaved(steppers: dict[str, _Stepper], verify: int, reps: int) -> dict[str, tuple[float, float]]:
    """Median 1-token and ``verify``-token times per model, the models taking turns in every
    repetition (so load from other jobs hits them alike)."""
    t1: dict[str, list[float]] = {k: [] for k in steppers}
    tv: dict[str, list[float]] = {k: [] for k in steppers}
    for s in steppers.values():  # warm-up
        s.time(1), s.time(verify)
    for _ in range(reps):
        for k, s in steppers.items():
            t1[k].append(s.time(1))
            tv[k].append(s.time(verify))
    return {k: (statistics.median(t1[k]), statistics.median(tv[k])) for k in steppers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--verify", type=int, default=9)
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"
    )
    print(f"cpu: {_cpu_flags()}")
    print(f"load: {os.getloadavg()}")
    lm = load_model(a.model, dtype="float32")
    model = lm.model
    # float32 alone first (12 bytes/parameter for three copies would not fit beside other jobs),
    # then bf16 and its int8 copy taking turns
    times = _interleaved({"fp32": _Stepper(model, a.context)}, a.verify, a.reps)
    model.to(torch.bfloat16)  # in place: the float32 weights are freed
    int8 = quantize_int8_(copy.deepcopy(model))  # bfloat16 activations
    packed = copy.deepcopy(model)
    n_packed = pack_linears_(packed)
    probe = torch.randint(100, 30000, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        same = torch.equal(model(input_ids=probe).logits, packed(input_ids=probe).logits)
    print(f"packed linears: {n_packed}; logits of a 40-token pass identical to plain bf16: {same}")
    default = Int8Linear.kernel_max_rows
    pair = {
        "bf16": _Stepper(model, a.context),
        "bf16, packed linears": _Stepper(packed, a.context),
        f"int8 (kernel <= {default} rows)": _Stepper(int8, a.context, default),
        "int8 (kernel <= 1 row)": _Stepper(int8, a.context, 1),  # the verify as a GEMM on converted weights
    }
    times |= _interleaved(pair, a.verify, a.reps)
    Int8Linear.kernel_max_rows = default
    rows = [(k, *times[k]) for k in ("fp32", *pair)]
    base = {r[0]: r for r in rows}["bf16"]
    print(f"\n{a.model}, context {a.context}, median of {a.reps}")
    print(f"| weights | 1-token step (ms) | {a.verify}-token verify (ms) | step vs bf16 | verify vs bf16 |")
    print("|---|---|---|---|---|")
    for label, t1, tv in rows:
        print(f"| {label} | {t1 * 1e3:.1f} | {tv * 1e3:.1f} | {base[1] / t1:.2f}x | {base[2] / tv:.2f}x |")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
