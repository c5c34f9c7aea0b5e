import sys

from kraken.cli import main

sys.exit(main())
