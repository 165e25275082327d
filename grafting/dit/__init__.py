"""DiT in the platform: the model with the original release's parameter names
(``model.py``), its Gaussian diffusion and samplers (``diffusion.py``), safe loading and saving
(``io.py``), the offline digits data (``data.py``), the teacher's training run (``train.py``),
sample grids (``sample.py``) and the quality metric (``metric.py``).
"""

from grafting.dit.io import load_dit, save_dit
from grafting.dit.model import PRESETS, DiT, DiTConfig

__all__ = ["PRESETS", "DiT", "DiTConfig", "load_dit", "save_dit"]
