import sys

from otel_ai.cli import main

sys.exit(main())
