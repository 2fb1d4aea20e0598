"""What a decode's stages cost here, for the decoder's work bound (``inrcodec.limits``): the
rendering's multiply-adds per second, and each entropy coder's seconds per stored value, as
multiply-adds of the same time (``Coder.work_per_value``).

    python benchmarks/decode_cost.py FILE.inr [--scale 2] [--repeats 3]

FILE is a latent-family file (its grids are the values that dominate a decode); its symbols are
coded again with every coder, each decoded ``repeats`` times (the median is kept), and the file
is rendered at ``scale``. Coder 3 codes them with the largest network a file may hold (its
values untrained: the cost of its arithmetic does not depend on them). Run it on an idle machine, with the threads a decode uses (all cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from inrcodec import arm, entropy
    from inrcodec.bitstream import build, read
    from inrcodec.training.arm import ArmFit
    from inrcodec.decoder import decode_cost, render
    from inrcodec.quantize import to_symbols

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = open(args.file, "rb").read()
    f = read(data)
    model = build(f)
    out_h, out_w = round(f.height * args.scale), round(f.width * args.scale)
    cost = decode_cost(f, out_w, out_h)
    render_seconds = median_seconds(lambda: render(model, out_h, out_w), args.repeats)
    rate = cost.render / render_seconds
    tensors = [p for _, p in model.tensors()]
    symbols = [to_symbols(p, q) for p, q in zip(tensors, f.quants)]
    bits = [q.bits for q in f.quants]
    shapes = [tuple(p.shape) for p in tensors]
    values = sum(s.size for s in symbols)
    result = {"file": args.file, "values": values, "render_macs": cost.render,
              "render_seconds": render_seconds, "macs_per_second": rate, "coders": {}}
    largest = ArmFit(arm.MAX_CONTEXT, arm.MAX_WIDTH, arm.MAX_DEPTH).integer(arm.MAX_SHIFT)
    for name in entropy.CODERS:
        coder = entropy.ArmCoder(lambda: largest) if name == "arm" else name
        payload = entropy.encode(symbols, bits, coder)
        decoded = entropy.decode(payload, shapes, bits, name)
        assert all(np.array_equal(d, s.ravel()) for d, s in zip(decoded, symbols))
        seconds = median_seconds(lambda: entropy.decode(payload, shapes, bits, name),
                                 args.repeats)
        result["coders"][name] = {"seconds": seconds, "seconds_per_value": seconds / values,
                                  "macs_per_value": seconds / values * rate,
                                  "declared": entropy.CODERS[name].work_per_value}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
