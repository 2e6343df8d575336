"""``python -m lb``: the same command line as the ``lb`` script."""

from lb.cli.main import main

if __name__ == "__main__":
    main()
