import sys

from openm1.cli import main

sys.exit(main())
