"""``python -m planetcd`` runs the command line."""

from .cli import main

main(prog_name="planetcd")
