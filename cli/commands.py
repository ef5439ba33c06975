"""Registry of the built-in ``aj`` sub-commands beyond ``plugins`` and ``tasks``.

Each command module defines one click command; list it here. Modules are
imported when the CLI is built, so they must import heavy libraries (torch,
transformers) inside the command function, not at module level.
"""

from __future__ import annotations

import click


def all_commands() -> list[click.Command]:
    return []
