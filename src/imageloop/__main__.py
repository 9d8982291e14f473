"""``python -m imageloop``: the same CLI as the ``imageloop`` command."""

from imageloop.cli import main

if __name__ == "__main__":
    main()
