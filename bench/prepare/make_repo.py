#!/usr/bin/env python3
"""Write a git fast-import stream for a synthetic history: COMMITS commits
touching FILES files in DIRS directories, one day apart. Deterministic."""
import sys

commits = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
files = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
dirs = 40
out = sys.stdout.buffer
t0 = 1_500_000_000
for i in range(1, commits + 1):
    f = (i * 7919) % files
    path = f"pkg{f % dirs}/mod{f}.py"
    body = "".join(f"def f{f}_{k}(x):\n    return x + {i * 31 + k}\n" for k in range(8)).encode()
    msg = f"change {i} in {path}\n".encode()
    out.write(b"commit refs/heads/main\n")
    out.write(f"mark :{i}\n".encode())
    out.write(f"committer Bench <bench@example.invalid> {t0 + i * 3600} +0000\n".encode())
    out.write(f"data {len(msg)}\n".encode() + msg)
    if i > 1:
        out.write(f"from :{i - 1}\n".encode())
    out.write(f"M 100644 inline {path}\n".encode())
    out.write(f"data {len(body)}\n".encode() + body + b"\n")
