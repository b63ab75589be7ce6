import sys

from blobwatch.cli import main

sys.exit(main())
