"""Meta-training speed against the JAX reference, pair by pair, in one run.

Alternates `noether bench meta` (release build) and `benches/jax_meta.py` on the same
machine, so that both see the same load, and prints each pair's ratio and the median:

    cargo build --release
    pip install "jax[cpu]"
    python3 benches/ratio_vs_jax.py --pairs 6 --data data

The ratio of a shared machine moves with the load of its neighbours (BENCHMARKS.md,
"Meta-training speed"): read the median of several pairs, never one pair.
"""
import argparse
import pathlib
import re
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
LABELS = {"svd5": "SVD(5)", "shift": "Shift", "fw": "FW", "ro": "RO", "mr5": "MR(5)"}


def noether_rate(binary, method, iterations, data):
    """Meta-iterations/s of `method` from one `noether bench meta` run."""
    out = subprocess.run(
        [binary, "bench", "meta", "--methods", method, "--iterations", str(iterations),
         "--data", data],
        capture_output=True, text=True, check=True,
    ).stdout
    label = re.escape(LABELS.get(method, method))
    match = re.search(rf"^\| {label} \| ([0-9.]+) \|", out, re.MULTILINE)
    if match is None:
        sys.exit(f"no '{LABELS.get(method, method)}' row in the output of noether bench meta:\n{out}")
    return float(match.group(1))


def jax_rate():
    """Iterations/s of one run of benches/jax_meta.py (SVD(5))."""
    out = subprocess.run(
        [sys.executable, str(HERE / "jax_meta.py")], capture_output=True, text=True, check=True,
    ).stdout
    match = re.search(r"([0-9.]+) it/s", out)
    if match is None:
        sys.exit(f"no it/s in the output of jax_meta.py:\n{out}")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6, help="alternations (default 6)")
    parser.add_argument("--method", default="svd5",
                        help="noether's method; the JAX reference is SVD(5) (default svd5)")
    parser.add_argument("--iterations", type=int, default=300,
                        help="outer iterations per noether run (default 300)")
    parser.add_argument("--data", default="data", help="dataset cache directory (default data)")
    parser.add_argument("--noether", default=str(HERE.parent / "target" / "release" / "noether"),
                        help="the noether binary (default target/release/noether)")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if not pathlib.Path(args.noether).is_file():
        parser.error(f"no noether binary at {args.noether}: run `cargo build --release` first")

    ratios = []
    for pair in range(1, args.pairs + 1):
        ours = noether_rate(args.noether, args.method, args.iterations, args.data)
        theirs = jax_rate()
        ratios.append(ours / theirs)
        print(f"pair {pair}: noether {LABELS.get(args.method, args.method)} {ours:.1f} it/s, "
              f"JAX SVD(5) {theirs:.1f} it/s, ratio {ratios[-1]:.2f}", flush=True)
    print(f"median ratio over {len(ratios)} pairs: {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
