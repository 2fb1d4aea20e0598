"""The ``inr`` command-line tool (installed as the package ``inrcodec_cli``)."""
