"""``python -m fewstep ...`` (and ``torchrun -m fewstep train ...``): the same CLI as ``fewstep``."""
from fewstep.cli import main

if __name__ == "__main__":
    main()
