"""`python -m portraitforge.cli`: the same entry point as the `portraitforge` console script."""

from portraitforge.cli import main

main()
