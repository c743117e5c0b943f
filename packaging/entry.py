"""Entry script of the one-file build: the same as the ``roost`` console script."""

from roost.cli import main

if __name__ == "__main__":
    main()
