"""The bottom layer every package may import (``search_spaces``, ``supernet``, ``nas``,
``grafting``); it imports none of them: atomic writes (``atomic``), the learning-rate schedule
(``schedule``), timing (``timing``, ``device``), Lightning's ``fit`` and quiet (``fit``, ``quiet``),
the resumable data order (``step_sampler``), ONNX / torch.export (``portable``), model cards
(``model_card``), the export folder's checks, reference and record (``export_folder``) and the
shipped text corpus (``corpus``). Importing it also quiets one import-time notice (below).
"""

import logging

from common.atomic import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text

# torch.utils.cpp_extension (imported by torch.utils.benchmark and by transformers) logs "No CUDA
# runtime is found" on any CPU-only machine: a notice the user can do nothing about
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

__all__ = ["atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_text"]
