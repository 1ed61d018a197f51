"""``python -m aunet.train`` and ``torchrun ... -m aunet.train``: aunet-train (on every rank)."""
from aunet.train.cli import main

main()
