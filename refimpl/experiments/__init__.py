"""The paper's experiments (section 4): ``refimpl reproduce`` runs them all.

``settings`` holds every choice the paper leaves open, with its reason;
``generalization`` is Experiment 1 (Table 1), ``discovery`` Experiment 2,
``figure`` redraws Figure 1, ``reproduce`` writes ``results/``.
"""

from .reproduce import reproduce
from .settings import PAPER_TABLE_1, Settings

__all__ = ["reproduce", "Settings", "PAPER_TABLE_1"]
