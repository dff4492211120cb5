"""`python -m kubeclassify_operator ...` is the same as `kubeclassify-operator ...`."""

from kubeclassify_operator.cli import main

main()
