"""The operator library: one family per module, every module imported here so that its
operators register themselves (see ``search_spaces.registry``)."""

from common.registry import import_submodules

import_submodules(__name__, __path__)
