"""``python -m precog`` is the ``precog`` command."""

from precog.cli import main

main()
