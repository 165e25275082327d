"""The bottom layer every package may import (``search_spaces``, ``supernet``, ``nas``,
``grafting``); it imports none of them. Today: atomic file and folder writes (``common.atomic``).
"""

from common.atomic import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_text"]
