"""Registry of the built-in ``aj`` sub-commands beyond ``plugins`` and ``tasks``.

Each command module defines one click command; list it here. Command modules
import heavy libraries (torch, transformers) inside the command function, not at
module level, so ``aj --help`` stays fast.
"""

from __future__ import annotations

import click


def all_commands() -> list[click.Command]:
    from autojudge.cli.decode_cmd import decode
    from autojudge.cli.judges_cmd import judges
    from autojudge.cli.mine_cmd import mine, mine_merge, mine_pack
    from autojudge.cli.models_cmd import models
    from autojudge.cli.run_cmd import run
    from autojudge.cli.sandbox_cmd import sandbox
    from autojudge.cli.serve_cmd import serve
    from autojudge.cli.train_cmd import train

    return [decode, mine, mine_merge, mine_pack, train, run, models, sandbox, serve, judges]
