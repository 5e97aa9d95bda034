"""Jozefowicz et al. 2015, Table 2: NLL per frame of ten architectures on Nottingham, Nottingham with dropout and
Piano-midi.de (MuseData, JSB Chorales added), each cell the best trial of a random search (reproduce/study.py).

The grid and hyper-parameters: conf/experiment/table2_jozefowicz.yaml; the printed numbers: reproduce/published/.
`python reproduce/table2_jozefowicz.py --help` lists the options
(--preset, --workers, --storage, --seeds, --cells, --collect, --launcher, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table2_jozefowicz")
