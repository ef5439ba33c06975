"""autojudge core: task, drafter and judge interfaces, model loading and the decoding engine.

`autojudge` is a namespace package; this subpackage knows no concrete task.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ajspec")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
