"""``python -m inrcodec_cli`` runs the ``inr`` command."""

from .main import run

run()
