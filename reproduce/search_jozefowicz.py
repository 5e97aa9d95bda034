"""Jozefowicz et al. 2015, sec. 3: the architecture search (reproduce/arch_search.py). Its first phase trains the
LSTM and the GRU on the tasks (a study table, printed like the others); then candidate after candidate is mutated,
filtered and evaluated stage by stage; the leaderboard follows the table.

    python reproduce/search_jozefowicz.py --preset quick --workers 2     # continue where it stopped, any time
    python reproduce/search_jozefowicz.py --launcher slurm --workers 64 --storage journal:/shared/search.journal
    python reproduce/search_jozefowicz.py --collect                      # the leaderboard from the records

A found cell becomes a named cell of the registry through cells/graphs.yaml (cells/graph.py says how); then every
table script trains it: `python reproduce/table2_simplified.py --cells <name>`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("search_jozefowicz", analysis="search")
