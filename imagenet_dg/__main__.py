"""python -m imagenet_dg: the imagenet-dg command line."""

from imagenet_dg.cli import main

main()
