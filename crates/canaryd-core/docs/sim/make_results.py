import json, re
S = json.load(open("results_success.json"))
P = json.load(open("results_prom.json")) if __import__("os").path.exists("results_prom.json") else {}
L = json.load(open("results_latency.json")); LV = json.load(open("results_latency_var.json"))
o = []
p = o.append
def f(x, pct=True):
    if x is None: return "–"
    return f"{100*x:.1f}%" if pct else (f"{x:.0f}" if x >= 10 else f"{x:.1f}")
p("## 1. Within tolerance: false aborts (1000 seeds/cell, 15 s scrapes, engine with 3 extensions then hold, 1 h horizon)\n")
p("Each cell: P(abort) over the whole rollout; in brackets P(promoted). Target ≤ 1% (α = 1%; the success-rate check runs at α/2 = 0.5%).\n")
for cl in (1, 3):
    p(f"\n**{'independent errors (c=1)' if cl==1 else 'retry clusters of 3 attempts on both sides, judge c=3'}**\n")
    p("| baseline | canary | 2 req/s | 20 req/s | 200 req/s | 2000 req/s |"); p("|---|---|---|---|---|---|")
    for pb in (0.0, 0.001, 0.01, 0.05):
        for fr in (0.0, 0.5, 0.9, 1.0):
            row = [f"{pb*100:g}%", f"+{fr:g}·tol"]
            for rate in (2, 20, 200, 2000):
                r = S[f"A|cl{cl}|pb{pb}|+{fr}tol|{rate}rps|15s"]
                row.append(f"{f(r['abort'])} ({f(r['promote'])})")
            p("| " + " | ".join(row) + " |")
p("\n**Scrape 30 s / 60 s (clusters of 3, +0.9·tol)**, P(abort) (P(promote))\n")
p("| baseline | scrape | 20 | 200 | 2000 |"); p("|---|---|---|---|---|")
for pb in (0.0, 0.01):
    for scr in (30, 60):
        row = [f"{pb*100:g}%", f"{scr}s"] + [f"{f(S[f'A2|cl3|pb{pb}|+0.9tol|{r}rps|{scr}s']['abort'])} ({f(S[f'A2|cl3|pb{pb}|+0.9tol|{r}rps|{scr}s']['promote'])})" for r in (20, 200, 2000)]
        p("| " + " | ".join(row) + " |")
p("\n**Common-mode blips** (both sides +20 pp for 60 s at 150 s and 450 s; baseline 0.1%, canary +0.9·tol, clusters 3):\n")
p("| 20 | 200 | 2000 |"); p("|---|---|---|")
p("| " + " | ".join(f"{f(S[f'D|blips|pb0.001|+0.9tol|{r}rps|15s']['abort'])}" for r in (20, 200, 2000)) + " |")
p("\n**Why the cluster bound is needed** — A/A with clusters of 3 but judge c = 1 (naive):\n")
p("| baseline | 20 | 200 | 2000 |"); p("|---|---|---|---|")
for pb in (0.001, 0.01):
    p(f"| {pb*100:g}% | " + " | ".join(f(S[f"A3naive|cl3,c_used1|pb{pb}|+0.0tol|{r}rps|15s"]['abort']) for r in (20, 200, 2000)) + " |")
if P:
    p("\n## 2. Prometheus paths: `round(increase(x[60s]))` every 60 s vs raw-sample differences every scrape\n")
    p("Fixed 10/30/60 % schedule (900 s), canary counter reset at 450 s, lazy 5xx series, scrape phase random per side; v3 abort e-process; 300 seeds/cell (so 1 abort = 0.33%). P(false abort):\n")
    p("| path | scrape | baseline | canary Δ | clusters/c | 20 req/s | 200 req/s |"); p("|---|---|---|---|---|---|---|")
    keys = sorted({k.rsplit('|', 1)[0] for k in P})
    for k in keys:
        parts = k.split('|')
        p("| " + " | ".join([parts[0], parts[1][6:], parts[2][2:], parts[3], parts[4] + '/' + parts[5]] + [f(P.get(f"{k}|{r}rps")) for r in (20, 200)]) + " |")
p("\n## 3. Detection (1000 seeds/cell, 15 s scrapes)\n")
p("P(abort by 900 s = the plan's bakes) / P(abort by 2100 s = step 1 + 3 extensions) / P(abort within 1 h); median and p95 time to abort from onset; median failing canary requests served before the abort. Oracle: per-request Wald SPRT (α=β=1%) knowing both rates.\n")
p("| regression | clusters | rate | ≤900 s | ≤2100 s | ≤1 h | t med | t p95 | failed med | oracle t med | oracle failed med |"); p("|---|---|---|---|---|---|---|---|---|---|---|")
for cl in (1, 3):
    for pb in (0.0, 0.001, 0.01, 0.05):
        for rate in (20, 200, 2000):
            r = S[f"B|cl{cl}|pb{pb}|+2tol|{rate}rps|15s"]; ok = S.get(f"O|pb{pb}|+2tol|{rate}rps|15s", {})
            p(f"| {pb*100:g}% → +2 pp | {cl} | {rate} | {f(r['abort_by_900'])} | {f(r['abort_by_2100'])} | {f(r['abort'])} | {f(r.get('t_med'),False)} | {f(r.get('t_p95'),False)} | {f(r.get('failed_med'),False)} | {f(ok.get('t_med'),False)} | {f(ok.get('failed_med'),False)} |")
for rate in (20, 200, 2000):
    r = S[f"Bcost|cl1,c_used3|pb0.001|+2tol|{rate}rps|15s"]
    p(f"| 0.1% → +2 pp, c=3 on unclustered | 1 | {rate} | {f(r['abort_by_900'])} | {f(r['abort_by_2100'])} | {f(r['abort'])} | {f(r.get('t_med'),False)} | {f(r.get('t_p95'),False)} | {f(r.get('failed_med'),False)} | | |")
p("\n**+50 pp (0.1% → 50.1%) from the start** — time from onset (onset uniformly placed in the scrape grid):\n")
p("| clusters | rate | scrape | P(abort) | t med | t p95 | failed med | oracle per-request t / failed | oracle acting at next scrape t / failed |"); p("|---|---|---|---|---|---|---|---|---|")
for cl in (1, 3):
    for rate in (2, 20, 200, 2000):
        for scr in (10, 15, 30):
            r = S[f"B50|cl{cl}|pb0.001|+50pp|{rate}rps|{scr}s"]; ok = S[f"O|+50pp|{rate}rps|{scr}s"]
            p(f"| {cl} | {rate} | {scr}s | {f(r['abort'])} | {f(r.get('t_med'),False)} | {f(r.get('t_p95'),False)} | {f(r.get('failed_med'),False)} | {f(ok['t_med'],False)} / {f(ok['failed_med'],False)} | {f(ok['t_snap_med'],False)} / {f(ok['failed_snap_med'],False)} |")
for rate in (20, 200, 2000):
    r = S[f"Bcost50|cl1,c_used3|pb0.001|+50pp|{rate}rps|15s"]
    p(f"| c=3 on unclustered | {rate} | 15s | {f(r['abort'])} | {f(r.get('t_med'),False)} | {f(r.get('t_p95'),False)} | {f(r.get('failed_med'),False)} | | |")
p("\n## 4. Regressions after a passed step (healthy until 450 s, i.e. step 1 passed, mid step 2 at 30 %)\n")
p("| regression | rate | P(abort) | P(promote) | t med from onset | t p95 | failed med |"); p("|---|---|---|---|---|---|---|")
for rate in (20, 200, 2000):
    for lab in ("+2tol", "+5pp", "+50pp"):
        r = S[f"C|cl1|pb0.001|{lab}@450s|{rate}rps|15s"]
        p(f"| {lab} | {rate} | {f(r['abort'])} | {f(r['promote'])} | {f(r.get('t_med'),False)} | {f(r.get('t_p95'),False)} | {f(r.get('failed_med'),False)} |")
p("\n## 5. Healthy promotion time (median seconds from start; today's lower bound is 900 s = three 5-min bakes)\n")
p("| baseline | clusters | 20 | 200 | 2000 |"); p("|---|---|---|---|---|")
for cl in (1, 3):
    for pb in (0.0, 0.001, 0.01, 0.05):
        p(f"| {pb*100:g}% A/A | {cl} | " + " | ".join(f(S[f'A|cl{cl}|pb{pb}|+0.0tol|{r}rps|15s'].get('promo_med'), False) for r in (20, 200, 2000)) + " |")
p("\n## 6. Latency (p99, τ = 20 %): abort side only, fixed 10/30/60 % schedule, 15 s looks, 1-min blocks\n")
p("Bracket (b', B): b' = smallest bucket bound with baseline tail ≤ 0.8·(1−q), B = smallest bound ≥ (1+τ)·b'. 500 seeds/cell. P(abort) within 900 s (median time):\n")
p("| buckets | canary | 20 | 200 | 2000 |"); p("|---|---|---|---|---|")
names = []
for k in LV:
    b, n = k.split('|')[0], k.split('|')[1]
    if (b, n) not in names: names.append((b, n))
for b, n in names:
    cells = []
    for r in (20, 200, 2000):
        v = LV[f"{b}|{n}|{r}rps|b' at S_b<=0.8(1-q)"]
        cells.append(f"{f(v['abort'])}" + (f" ({v['t_med']:.0f} s)" if v['t_med'] else ""))
    p(f"| {b} {tuple(round(x) for x in LV[f'{b}|{n}|20rps|b'+chr(39)+' at S_b<=0.8(1-q)']['bracket'])} | {n} | " + " | ".join(cells) + " |")
p("\nBlips (both sides ×3 for 60 s at 150 s and 450 s, canary 1.1×), bracket with b' tail ≤ 0.5·(1−q), 1000 seeds: " + ", ".join(f"{k.split('|')[0]} {k.split('|')[2]}: {f(v['abort'])}" for k, v in L.items() if 'blips' in k))
open("results_tables.md", "w").write("\n".join(o) + "\n")
print("\n".join(o))
