import sys

from jetpool_worker.main import main

sys.exit(main())
