"""Old name of `notebook_outputs`: `python -m hsae_utils.stages ...` works until run_all.sh calls the new one."""
import sys
from .notebook_outputs import main
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
