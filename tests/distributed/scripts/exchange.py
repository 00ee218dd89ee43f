"""One rank of HorovodMode's start-up exchange: writes {rank, got} as JSON to
$EXCHANGE_OUT/rank-N.json (a file per rank: the launcher interleaves the ranks' stdout,
partial lines included, so a long line printed by one rank can be cut by another's)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from hvdbench import config  # noqa: E402
from hvdbench.launch import topology  # noqa: E402
from hvdbench.modes.horovod import HorovodMode  # noqa: E402

topo = topology.detect(os.environ)
mode = HorovodMode(config.load(None, []), topo)
mode.setup()
mine = {"rank": topo.rank, "pad": "x" * (1000 + 100 * topo.rank), "tuple": (topo.rank, 1)}
got = mode.exchange(mine)
out = Path(os.environ["EXCHANGE_OUT"]) / f"rank-{topo.rank}.json"
out.write_text(json.dumps({"rank": topo.rank, "got": got}))
