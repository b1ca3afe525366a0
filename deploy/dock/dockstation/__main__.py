import sys

from dockstation.cli import main

sys.exit(main())
