"""The plugin system: hook specifications, the plugin manager and the built-in task plugins.

Third-party plugins need only ``hookimpl`` from here::

    from autojudge.plugins import hookimpl

    @hookimpl
    def register_tasks(register):
        register(MyTask())
"""

from autojudge.plugins.hookspecs import hookimpl

__all__ = ["hookimpl"]
