"""Jozefowicz et al. 2015, Table 3: PTB NLL per word of ten architectures at 5M, 10M and 20M parameters
(Zaremba et al.'s schedule; hidden sizes found for each parameter budget).

The grid and hyper-parameters: conf/experiment/table3_jozefowicz.yaml; the printed numbers: reproduce/published/.
`python reproduce/table3_jozefowicz.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table3_jozefowicz")
