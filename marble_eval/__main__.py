import sys

from marble_eval.cli import main

sys.exit(main())
