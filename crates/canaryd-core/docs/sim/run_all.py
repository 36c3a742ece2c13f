import sys, time, json, math
import numpy as np
from sim import *

SEEDS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
out = {}
def cell(key, sc, rate, scrape, seeds=SEEDS):
    r = run(sc, rate, scrape, seeds=seeds, rng=np.random.default_rng(hash(key) % 2**32))
    s = summarize(r)
    d, t = r["decision"], r["t"]
    s["abort_by_900"] = float(((d == 1) & (t <= 900)).mean())
    s["abort_by_2100"] = float(((d == 1) & (t <= 2100)).mean())
    out[key] = {k: float(v) for k, v in s.items()}
    return r, s

t0 = time.time()
# A. within tolerance (false aborts), 15 s scrapes, clusters off and on (c=3 both sides)
for cl in (1, 3):
    for pb in (0.0, 0.001, 0.01, 0.05):
        for f in (0.0, 0.5, 0.9, 1.0):
            for rate in (2, 20, 200, 2000):
                key = f"A|cl{cl}|pb{pb}|+{f}tol|{rate}rps|15s"
                cell(key, Scen(key, pb, f * TOL, clusters=cl), rate, 15)
print("A", time.time() - t0, flush=True)
# A2. scrape 30/60 s, and naive c_used=1 on clustered data
for scr in (30, 60):
    for pb in (0.0, 0.01):
        for rate in (20, 200, 2000):
            key = f"A2|cl3|pb{pb}|+0.9tol|{rate}rps|{scr}s"
            cell(key, Scen(key, pb, 0.9 * TOL, clusters=3), rate, scr)
for pb in (0.001, 0.01):
    for rate in (20, 200, 2000):
        key = f"A3naive|cl3,c_used1|pb{pb}|+0.0tol|{rate}rps|15s"
        cell(key, Scen(key, pb, 0.0, clusters=3, c_used=1), rate, 15)
# D. common-mode blips and drift-like step (both sides +20 pp for 60 s at 150 s and 450 s)
for rate in (20, 200, 2000):
    key = f"D|blips|pb0.001|+0.9tol|{rate}rps|15s"
    cell(key, Scen(key, 0.001, 0.9 * TOL, blips=[(150, 60, 0.2), (450, 60, 0.2)], clusters=3), rate, 15)
print("A2/D", time.time() - t0, flush=True)
# B. detection: 2x tol over baselines, +50 pp; clusters off/on
for cl in (1, 3):
    for pb in (0.0, 0.001, 0.01, 0.05):
        for rate in (20, 200, 2000):
            key = f"B|cl{cl}|pb{pb}|+2tol|{rate}rps|15s"
            cell(key, Scen(key, pb, 2 * TOL, clusters=cl), rate, 15)
    for rate in (2, 20, 200, 2000):
        for scr in (10, 15, 30):
            key = f"B50|cl{cl}|pb0.001|+50pp|{rate}rps|{scr}s"
            cell(key, Scen(key, 0.001, 0.5, clusters=cl), rate, scr)
# c=3 judge on unclustered data (cost of the bound)
for rate in (20, 200, 2000):
    key = f"Bcost|cl1,c_used3|pb0.001|+2tol|{rate}rps|15s"
    cell(key, Scen(key, 0.001, 2 * TOL, clusters=1, c_used=3), rate, 15)
    key = f"Bcost50|cl1,c_used3|pb0.001|+50pp|{rate}rps|15s"
    cell(key, Scen(key, 0.001, 0.5, clusters=1, c_used=3), rate, 15)
print("B", time.time() - t0, flush=True)
# C. regression after a passed step: healthy until 450 s (step 1 passed at ~300 s), then worse
for rate in (20, 200, 2000):
    for d, lab in ((2 * TOL, "+2tol"), (0.05, "+5pp"), (0.5, "+50pp")):
        key = f"C|cl1|pb0.001|{lab}@450s|{rate}rps|15s"
        cell(key, Scen(key, 0.001, d, onset=450.0, healthy=False), rate, 15)
print("C", time.time() - t0, flush=True)
# oracle
for rate in (2, 20, 200, 2000):
    for scr in (10, 15, 30):
        sc = Scen("o", 0.001, 0.5)
        ts, fs, tsn, fsn = oracle(sc, rate, scr, seeds=SEEDS)
        out[f"O|+50pp|{rate}rps|{scr}s"] = dict(t_med=float(np.median(ts)), failed_med=float(np.median(fs)),
            t_snap_med=float(np.median(tsn)), failed_snap_med=float(np.median(fsn)))
    for pb in (0.0, 0.001, 0.01, 0.05):
        if pb == 0: continue
        sc = Scen("o", pb, 2 * TOL)
        ts, fs, tsn, fsn = oracle(sc, rate, 15, seeds=min(SEEDS, 400))
        out[f"O|pb{pb}|+2tol|{rate}rps|15s"] = dict(t_med=float(np.median(ts)), failed_med=float(np.median(fs)))
print("O", time.time() - t0, flush=True)
json.dump(out, open("results_success.json", "w"), indent=1)
