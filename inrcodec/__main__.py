"""``python -m inrcodec`` runs the ``inr`` command."""

from inrcodec_cli.main import run

run()
