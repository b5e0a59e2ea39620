"""Make ``pytest --protection=...`` work from a checkout that is not pip-installed.

When the package is installed, its ``pytest11`` entry point already registers the plugin and
loading it here too would register it twice; so load it only when no entry point provides it
or when plugin autoloading is switched off (PYTEST_DISABLE_PLUGIN_AUTOLOAD).
"""

import os
from importlib.metadata import entry_points

_installed = any(ep.value == "audit.plugin" for ep in entry_points(group="pytest11"))
if not _installed or os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
    pytest_plugins = ["audit.plugin"]
