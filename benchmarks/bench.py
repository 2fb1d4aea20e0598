"""The rate-distortion benchmark as a script: the same as ``inr bench`` with the same options.

    python benchmarks/bench.py ../shared/datasets/kodak --out docs/results/kodak \
        --report docs/results/kodak.md
"""

import sys

from inrcodec_cli.main import app

if __name__ == "__main__":
    sys.argv[1:1] = ["bench"]  # so that the report records the equivalent `inr bench ...`
    app(sys.argv[1:], prog_name="benchmarks/bench.py")
