import sys

from hvdbench.cli import main

sys.exit(main())
