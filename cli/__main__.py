"""`python -m declora.cli` runs the `declora-node` command."""

from declora.cli.app import main

main()
