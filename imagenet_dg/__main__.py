"""python -m imagenet_dg: the imagenet-dg command line."""

from imagenet_dg.cli import main

if __name__ == "__main__":  # not when a --jobs process re-imports the main module
    main()
