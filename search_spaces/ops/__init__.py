"""The operator library: one family per module, every module imported here so that its
operators register themselves (see ``search_spaces.registry``)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
