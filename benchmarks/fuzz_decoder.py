"""Fuzzing the decoder with structure-aware mutations of valid files of every family.

    python benchmarks/fuzz_decoder.py --inputs 1000000 --jobs 2     # docs/security.md
    python benchmarks/fuzz_decoder.py --family latent --inputs 1000000 --jobs 2
    python benchmarks/fuzz_decoder.py --family arm --inputs 1000000 --jobs 2
    python benchmarks/fuzz_decoder.py --family siren --inputs 200000 --jobs 2

Random bytes stop at the checksum, so each mutant is made from a golden file (tests/golden: every
family, grey, a Fourier encoding) by one to three of: header bytes changed, the image size set
anywhere in 1..16384, a hyper-parameter overwritten, quantiser bits and steps set to any value
(NaN, infinities, negatives, huge), payload bytes flipped, the payload cut or extended or
replaced, the file cut, the format version set to 0..3 (a file read as another version's); and then, nineteen times in twenty, the CRC recomputed, so that what lies
behind the checksum is what gets fuzzed. Each mutant is read by ``info`` and decoded at four
small sizes with the default limits. Only ``InrFormatError`` (a bad file) and ``InrInputError`` (a
decode above the limits) may come out; anything else is a finding, written to ``--findings``.
The run reports the outcomes, the slowest input and the peak memory of the workers.

``--family latent`` fuzzes the latent family's files alone: its golden files (coders 1, 2 and 3)
and six more made at start (other levels, channels, depths and upsampling, learned filters
among them, grey, a wide and a tall image; two of them with coder 3), with the mutations above and these, which know its
layout: each of its hyper-parameter fields set to a value in, at or past its range; the entropy
coder's id changed; and, inside the payload's zstd frame (decompressed, mutated, compressed
again with its content size, so that the coder sees it), a grid's context model (coder 2: its
four weights and four ratios, any value) or the learned model's head (coder 3: its shape,
shift, bit depth and ratio, in range or not), the rANS state, and the coded words (flipped,
cut, or followed by surplus words; coder 3's network values are the first of them).
``--family arm`` does the same with the latent files of coder 3 alone (its golden file and the
two made at start). ``--family siren`` mutates the SIREN families' golden files alone, those of
format version 2 (the sine layers) among them.

Why a mutator of our own rather than Hypothesis (which the test suite uses for its property
tests) or atheris: a million inputs in an hour needs a loop with no per-example overhead, and
the mutations must know the layout to get past the checksum; both are a few lines here.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import struct
import sys
import time
import zlib
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
#: Output sizes of each decode: small ones, so a million inputs fit in an hour; large outputs
#: are bounded by the decoder's limits (docs/cli.md), which tests/test_limits.py checks.
SIZES = ((7, 5), (33, 17), (1, 64), (64, 1))


#: The files each kind of run mutates, by name (made once per process).
_SEEDS: dict[str, dict[str, bytes]] = {}


def seeds(family: str = "all") -> dict[str, bytes]:
    """The seed files of a run: every golden file, or the latent family's golden files and
    four more latent files of other shapes (:func:`latent_seeds`)."""
    if family not in _SEEDS:
        golden = {p.stem: p.read_bytes() for p in sorted(GOLDEN.glob("*.inr"))}
        if family == "latent":
            golden = {**{k: v for k, v in golden.items() if k.startswith("latent")},
                      **latent_seeds()}
        elif family == "arm":
            golden = {"latent-arm": golden["latent-arm"],
                      **{k: v for k, v in latent_seeds().items() if k.endswith("-arm")}}
        elif family == "siren":  # the SIREN families, version 2's sine layers among them
            golden = {k: v for k, v in golden.items() if not k.startswith("latent")}
        _SEEDS[family] = golden
    return _SEEDS[family]


def latent_seeds() -> dict[str, bytes]:
    """Latent files of other shapes than the golden ones (fixed seed: the same everywhere),
    each with latents that are not all zero. (A file of all-zero latents whose image size is
    forged larger is a valid file of hundreds of millions of nearly free zeros: it decodes for
    seconds, within the work bound, as tests/test_hostile.py's case 2 checks; as a seed, it
    made most of a run's time with the same input again and again.)"""
    import numpy as np
    from skimage import data

    import inrcodec
    image = np.ascontiguousarray(data.astronaut()[150:190, 200:260])
    cases = {
        "latent-deep": (image, {"levels": 3, "channels": 3, "width": 5, "depth": 2,
                                "upsampling": 0}),
        "latent-flat": (image, {"levels": 1, "channels": 1, "width": 2, "depth": 0,
                                "upsampling": 1}),
        "latent-grey": (image[..., 1], {"levels": 4, "channels": 2, "width": 4, "depth": 1,
                                        "upsampling": 2}),
        "latent-wide": (image[:3], {"levels": 6, "channels": 2, "width": 3, "depth": 1,
                                   "upsampling": 0}),
        "latent-deep-arm": (image, {"levels": 3, "channels": 3, "width": 5, "depth": 2,
                                    "upsampling": 2}),
        "latent-wide-arm": (image[:3], {"levels": 6, "channels": 2, "width": 3, "depth": 1,
                                       "upsampling": 0}),
    }
    # bpp 16 for the wide image: at 8 its three rows' latents all round to zero.
    return {name: inrcodec.encode(pixels, model="latent", bpp=16.0 if "wide" in name
                                  else 8.0, steps=20, effort="fast", compile=False,
                                  hparams=hparams, coder="arm" if "arm" in name else None)
            for name, (pixels, hparams) in cases.items()}


def _header_length(data: bytes) -> int:
    import inrcodec
    return inrcodec.info(data)["header_bytes"]


def mutate(data: bytes, header: int, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of ``data`` (whose header is ``header`` bytes) and what was done to it."""
    body = bytearray(data[:-4])
    done = []
    for _ in range(rng.randint(1, 3)):
        header = min(header, len(body))  # an earlier mutation may have cut the file
        kind = rng.randrange(8)
        if kind == 0 and header > 4:  # any header byte after the magic and version
            i = rng.randrange(4, header)
            body[i] = rng.randrange(256)
            done.append(f"header[{i}]")
        elif kind == 1:
            body[4:8] = struct.pack("<HH", rng.randint(1, 16384), rng.randint(1, 16384))
            done.append("size")
        elif kind == 2 and header > 12:  # somewhere in the encoding / family fields
            i = rng.randrange(11, min(header, 40))
            body[i:i + 2] = rng.randbytes(2)
            done.append(f"field[{i}]")
        elif kind == 3:  # a quantiser: bits and step
            count = max(1, (header - 12) // 5)
            i = header - 5 * rng.randrange(1, count + 1)
            step = rng.choice([math.nan, math.inf, -1.0, 0.0, 1e-30, 1e30, rng.random()])
            body[i:i + 5] = struct.pack("<Bf", rng.randrange(256), step)
            done.append(f"quantiser[{i}]")
        elif kind == 4 and len(body) > header:  # payload bytes
            for _ in range(rng.randint(1, 8)):
                body[rng.randrange(header, len(body))] = rng.randrange(256)
            done.append("payload bytes")
        elif kind == 5:  # the payload cut, extended or replaced
            choice = rng.randrange(3)
            if choice == 0:
                del body[rng.randint(header, len(body)):]
            elif choice == 1:
                body += rng.randbytes(rng.randint(1, 4096))
            else:
                body[header:] = rng.randbytes(rng.randint(0, 2 * max(1, len(body) - header)))
            done.append(["payload cut", "payload extended", "payload replaced"][choice])
        elif kind == 6:
            del body[rng.randint(0, len(body)):]
            done.append("file cut")
        elif kind == 7 and len(body) > 3 and rng.random() < 0.5:  # read as another version's
            body[3] = rng.randint(0, 3)
            done.append(f"version {body[3]}")
        else:
            i = rng.randrange(len(body)) if body else 0
            body[i:i + 1] = bytes([rng.randrange(256)])
            done.append(f"byte[{i}]")
    if rng.random() < 0.95:
        return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))), ", ".join(done)
    return bytes(body) + data[-4:], ", ".join(done) + ", old CRC"


#: The latent family's hyper-parameter fields, in header order, with their ranges.
LATENT_FIELDS = (("levels", 1, 12), ("channels", 1, 8), ("width", 1, 128), ("depth", 0, 4),
                 ("upsampling", 0, 2))
#: Bytes of the header before a family's fields: magic, version, size, colour, family,
#: encoding id (the latent family's files have no encoding parameters).
FIXED_HEADER = 11


def mutate_latent(data: bytes, header: int, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of a latent file that knows its layout: a hyper-parameter field, the coder
    id, or the coder's own data inside the payload's zstd frame; the CRC recomputed."""
    import zstandard
    body = bytearray(data[:-4])
    kind = rng.randrange(4)
    if kind == 0:
        i = rng.randrange(len(LATENT_FIELDS))
        name, low, high = LATENT_FIELDS[i]
        body[FIXED_HEADER + i] = rng.choice([0, low, high, high + 1, 255, rng.randrange(256)])
        done = f"{name}={body[FIXED_HEADER + i]}"
    elif kind == 1:
        coder = header - 5 * len(_facts(data)["tensors"]) - 1
        body[coder] = rng.choice([0, 1, 2, 3, rng.randrange(256)])
        done = f"coder id {body[coder]}"
    else:
        try:
            inner = bytearray(zstandard.ZstdDecompressor().decompress(bytes(body[header:])))
        except zstandard.ZstdError:
            return mutate(data, header, rng)
        inner, done = _mutate_stream(inner, _facts(data), rng)
        frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(bytes(inner))
        body[header:] = frame
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))), done


_FACTS: dict[bytes, dict] = {}


def _facts(data: bytes) -> dict:
    import inrcodec
    if data not in _FACTS:
        _FACTS[data] = inrcodec.info(data)
    return _FACTS[data]


def _mutate_stream(inner: bytearray, facts: dict, rng: random.Random
                   ) -> tuple[bytearray, str]:
    """The coder's data (its models, then the rANS state and words) with one thing changed.
    Coder 2 has a 12-byte model per grid (a three-dimensional tensor) and a 2-byte ratio per
    other tensor, coder 1 a ratio per tensor; the state and words follow them."""
    from inrcodec import arm, context
    if facts["coder"] == "arm":
        return _mutate_arm_stream(inner, facts, rng)
    grids = [len(t["shape"]) == 3 and facts["coder"] == "context" for t in facts["tensors"]]
    starts = [sum(context.MODEL_BYTES if g else 2 for g in grids[:i]) for i in range(len(grids))]
    models_end = min(len(inner), sum(context.MODEL_BYTES if g else 2 for g in grids))
    return _mutate_words(inner, models_end, rng, models=[
        at for at, g in zip(starts, grids) if g and at + context.MODEL_BYTES <= len(inner)])


def _mutate_arm_stream(inner: bytearray, facts: dict, rng: random.Random
                       ) -> tuple[bytearray, str]:
    """Coder 3's data: its network's head (any shape, shift, bit depth and ratio, in range or
    not), the ratios of the tensors that are not grids, then the rANS state and words, which
    begin with the network's values."""
    from inrcodec import arm
    others = sum(len(t["shape"]) != 3 for t in facts["tensors"])
    models_end = min(len(inner), arm.HEAD_BYTES + 2 * others)
    if rng.randrange(3) == 0 and len(inner) >= arm.HEAD_BYTES:
        head = [rng.choice([0, 1, arm.MAX_CONTEXT, arm.MAX_CONTEXT + 1, rng.randrange(256)]),
                rng.choice([0, 1, arm.MAX_WIDTH, arm.MAX_WIDTH + 1, rng.randrange(256)]),
                rng.choice([0, arm.MAX_DEPTH, arm.MAX_DEPTH + 1, rng.randrange(256)]),
                rng.choice([0, arm.MIN_SHIFT, arm.MAX_SHIFT, arm.MAX_SHIFT + 1,
                            rng.randrange(256)]),
                rng.choice([0, 2, arm.WEIGHT_BITS_MAX, arm.WEIGHT_BITS_MAX + 1,
                            rng.randrange(256)]),
                rng.choice([0, 1, 65535, rng.randrange(65536)])]
        keep = rng.randrange(6)  # one field as it was, or none
        old = struct.unpack_from(arm.HEAD_FORMAT, inner)
        head[keep] = old[keep] if rng.random() < 0.5 else head[keep]
        inner[:arm.HEAD_BYTES] = struct.pack(arm.HEAD_FORMAT, *head)
        return inner, f"network head {head}"
    return _mutate_words(inner, models_end, rng, models=[])


def _mutate_words(inner: bytearray, models_end: int, rng: random.Random, models: list[int]
                  ) -> tuple[bytearray, str]:
    """A coder 1 or 2 model at one of ``models``, the rANS state at ``models_end``, or the
    words after it."""
    from inrcodec import context
    kind = rng.randrange(5)
    if kind == 0 and models:  # a grid's model: weights and ratios
        at = rng.choice(models)
        values = [rng.choice([-128, 127, 0, rng.randrange(-128, 128)]) for _ in range(4)]
        values += [rng.choice([0, 1, 65535, rng.randrange(65536)]) for _ in range(4)]
        inner[at:at + context.MODEL_BYTES] = struct.pack(context.MODEL_FORMAT, *values)
        return inner, f"model at {at}"
    if kind == 1 and len(inner) >= models_end + 8:  # the state
        state = rng.choice([0, 1 << 31, (1 << 63) - 1, rng.getrandbits(64)])
        inner[models_end:models_end + 8] = struct.pack("<Q", state)
        return inner, "rANS state"
    if kind == 2:  # surplus words, as many as the symbols could need or a few
        extra = rng.choice([1, 7, rng.randrange(1, 1 << 16)])
        return inner + bytes(4 * extra), f"{extra} surplus words"
    if kind == 3 and len(inner) > models_end:  # words cut
        del inner[rng.randrange(models_end, len(inner)):]
        return inner, "words cut"
    for _ in range(rng.randint(1, 8)):  # words flipped
        if len(inner) > models_end:
            inner[rng.randrange(models_end, len(inner))] ^= 1 << rng.randrange(8)
    return inner, "words flipped"


def run_chunk(first: int, count: int, seed: int, family: str = "all") -> dict:
    """Inputs first .. first+count-1 (each from its own seed): outcomes, slowest, peak memory."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_chunk(first, count, seed, family)
    finally:
        torch.set_num_threads(threads)


def _run_chunk(first: int, count: int, seed: int, family: str) -> dict:
    import inrcodec
    named = seeds(family)
    names, files = list(named), list(named.values())
    headers = [_header_length(f) for f in files]
    outcomes: dict[str, int] = {}
    findings, slowest = [], (0.0, "")
    for n in range(first, first + count):
        rng = random.Random(seed * 1_000_003 + n)
        k = rng.randrange(len(files))
        if family in ("latent", "arm") and rng.random() < 0.5:
            data, how = mutate_latent(files[k], headers[k], rng)
        else:
            data, how = mutate(files[k], headers[k], rng)
        start = time.perf_counter()
        outcome = "decoded"
        try:
            inrcodec.info(data)
            for size in SIZES:
                inrcodec.decode(data, size=size)
        except inrcodec.InrFormatError:
            outcome = "format error"
        except inrcodec.InrInputError:
            outcome = "over the limits"
        except Exception as exc:  # noqa: BLE001 - a finding
            outcome = "finding"
            findings.append({"input": n, "seed": seed, "mutation": how,
                             "error": f"{type(exc).__name__}: {exc}", "data": data.hex()})
        seconds = time.perf_counter() - start
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if seconds > slowest[0]:
            slowest = (seconds, f"input {n} ({names[k]}: {how}): {outcome}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"outcomes": outcomes, "findings": findings, "slowest": slowest, "peak_mib": peak}



def fuzz(inputs: int, jobs: int = 1, seed: int = 0, chunk: int = 2000,
         family: str = "all") -> dict:
    from inrcodec.parallel import run_unordered
    calls = [(first, min(chunk, inputs - first), seed, family)
             for first in range(0, inputs, chunk)]
    total = {"inputs": inputs, "family": family, "outcomes": {}, "findings": [],
             "slowest": (0.0, ""),
             "peak_mib": 0.0}
    started = time.perf_counter()
    for done, (_, result) in enumerate(run_unordered(run_chunk, calls, jobs), 1):
        for k, v in result["outcomes"].items():
            total["outcomes"][k] = total["outcomes"].get(k, 0) + v
        total["findings"] += result["findings"]
        total["slowest"] = max(total["slowest"], tuple(result["slowest"]))
        total["peak_mib"] = max(total["peak_mib"], result["peak_mib"])
        if jobs > 1 or done % 10 == 0:
            print(f"{done}/{len(calls)} chunks, {time.perf_counter() - started:.0f} s, "
                  f"{total['outcomes']}", file=sys.stderr, flush=True)
    total["seconds"] = time.perf_counter() - started
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=("all", "latent", "arm", "siren"), default="all",
                        help="mutate every golden file, the latent family's files alone, "
                             "its files of coder 3 alone, or the SIREN families' files alone")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings.json"))
    args = parser.parse_args()
    total = fuzz(args.inputs, args.jobs, args.seed, family=args.family)
    if total["findings"]:
        args.findings.write_text(json.dumps(total["findings"], indent=1))
    summary = {k: v for k, v in total.items() if k != "findings"}
    summary["findings"] = len(total["findings"])
    print(json.dumps(summary, indent=1))
    sys.exit(1 if total["findings"] else 0)


if __name__ == "__main__":
    main()
