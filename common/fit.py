"""``lightning.Trainer.fit`` as every command calls it: Ctrl-C stays a ``KeyboardInterrupt``.

Lightning catches Ctrl-C itself, shuts down gracefully and then calls ``sys.exit(1)``, so a user's
interrupt would look like a failure (exit status 1, and code after ``fit`` cut short without a
word). Turned back into ``KeyboardInterrupt``, the command line reports "interrupted" and exits
with 130, like any other program stopped by SIGINT.
"""

from __future__ import annotations

from typing import Any

import lightning as L


def fit(trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit(*args, **kwargs)``; an interrupt raises ``KeyboardInterrupt``."""
    try:
        trainer.fit(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
