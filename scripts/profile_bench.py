"""Sampling profile of the otel-ai server while `otel-ai bench` sends load.

    pip install py-spy; python scripts/profile_bench.py [--spans 3000000] [--seconds 15] [--top 10]

Starts `otel-ai bench`, attaches py-spy (with native frames) to the server process only
once the load starts, and prints the frames with the most own samples (idle threads are
not sampled, and only the thread holding the GIL is), so the top of the list is where the
server's Python CPU goes per span.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=3_000_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--native", action="store_true", help="also sample C frames (slower)")
    parser.add_argument("--by-line", action="store_true",
                        help="rank source lines instead of functions (a function's samples spread over its lines)")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("profile_bench: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="otel-ai-profile-")) / "raw.txt"
    bench = subprocess.Popen([sys.executable, "-m", "otel_ai", "bench", "--spans", str(args.spans), "--json"],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in bench.stderr:
        sys.stderr.write(line)
        if line.startswith("bench: sending"):
            break
    spy = [py_spy, "record", "--gil", "--pid", str(bench.pid), "--duration", str(args.seconds), "--rate", "200",
           "--format", "raw", "--output", str(out)] + (["--native"] if args.native else [])
    subprocess.run(spy, check=True, stdout=subprocess.DEVNULL)
    bench.stderr.read()
    bench.wait()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        frame = stack.split(";")[-1]
        if not args.by_line:  # "name (file:line)" -> "name (file)"
            frame = re.sub(r":\d+\)$", ")", frame)
        own[frame] += int(count)
    unit = "lines" if args.by_line else "functions"
    print(f"{total} samples over {args.seconds} s of load; {unit} by own samples:")
    for frame, count in own.most_common(args.top):
        print(f"{count / total * 100:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
