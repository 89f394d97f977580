import sys

from stacktrail.cmd.agent import main

sys.exit(main())
