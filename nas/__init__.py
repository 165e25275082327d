"""nas package."""

import logging

# torch.utils.benchmark (nas.latency) logs "No CUDA runtime is found" when imported on any CPU-only
# machine: a notice the user can do nothing about
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
