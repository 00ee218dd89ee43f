"""One rank of HorovodMode's start-up exchange: prints {rank, got} as one JSON line."""

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
print(json.dumps({"rank": topo.rank, "got": got}), flush=True)
