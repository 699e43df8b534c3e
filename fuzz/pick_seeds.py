#!/usr/bin/env python3
"""Picks a few seeds for fuzz/corpus/TARGET/ from a large fuzzing corpus (docs/FUZZING.md).

    pick_seeds.py BINARY SCRATCH_CORPUS SEED_DIR COUNT

Runs the target BINARY in libFuzzer's merge mode over SEED_DIR and SCRATCH_CORPUS to get the
coverage features of every input, then greedily adds the COUNT inputs of SCRATCH_CORPUS that
each add the most features not yet covered by SEED_DIR and the inputs already picked. They are
copied to SEED_DIR as min-<sha1 prefix>. Nothing else in SEED_DIR changes.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile


def features(binary, dirs):
    with tempfile.TemporaryDirectory() as tmp:
        control = os.path.join(tmp, "control")
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        subprocess.run(
            [binary, "-merge=1", f"-merge_control_file={control}", out, *dirs],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(control) as f:
            lines = f.read().splitlines()
    n = int(lines[0])
    files = lines[2 : 2 + n]
    ft = {}
    for line in lines[2 + n :]:
        parts = line.split()
        if parts and parts[0] == "FT":
            ft[files[int(parts[1])]] = set(map(int, parts[2:]))
    return ft


def main():
    binary, scratch, seeds, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ft = features(binary, [seeds, scratch])
    seeds_abs = os.path.abspath(seeds)
    covered = set()
    candidates = {}
    for path, f in ft.items():
        if os.path.abspath(path).startswith(seeds_abs + os.sep):
            covered |= f
        else:
            candidates[path] = f
    picked = []
    for _ in range(count):
        best = max(candidates, key=lambda p: len(candidates[p] - covered), default=None)
        if best is None or not candidates[best] - covered:
            break
        covered |= candidates.pop(best)
        picked.append(best)
    for path in picked:
        with open(path, "rb") as f:
            data = f.read()
        name = "min-" + hashlib.sha1(data).hexdigest()[:16]
        shutil.copyfile(path, os.path.join(seeds, name))
    print(f"{len(picked)} seeds picked, {len(covered)} features covered")


if __name__ == "__main__":
    main()
