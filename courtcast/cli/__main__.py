"""`python -m courtcast.cli`, as the tests and benches run the command."""

import sys

from courtcast.cli.parser import main

sys.exit(main())
