"""nas package."""

import common  # noqa: F401  (quiets torch's import-time CUDA notice; see common/__init__.py)
