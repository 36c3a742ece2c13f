"""Prometheus-shaped counts: per-second counters, scraped every S s; (a) today's path
round(increase(x[W])) every W = 60 s; (b) raw-sample per-series differences (design §1.3).
Fixed schedule 10/30/60 % x 300 s; canary counters reset at 450 s; 5xx series created lazily
(at the first error, and again after the reset). Reports false aborts of the v3 abort
e-process (success rate) on healthy canaries fed each path."""
import sys, math, json
import numpy as np
from sim import log_fail_factor, U_GRID, ALPHA_SR, TOL

def increase(ts, vs, T, W):
    """Prometheus extrapolatedRate(isCounter, isRate=False) over (T-W, T]; vs nan = absent."""
    m = (ts > T - W) & (ts <= T) & ~np.isnan(vs)
    t, v = ts[m], vs[m]
    if len(t) < 2: return 0.0
    res = v[-1] - v[0] + np.sum(np.where(v[1:] < v[:-1], v[:-1], 0.0))
    dstart, dend = t[0] - (T - W), T - t[-1]
    samp = t[-1] - t[0]; avg = samp / (len(t) - 1)
    if res > 0 and v[0] >= 0:
        dz = samp * (v[0] / res)
        if dz < dstart: dstart = dz
    thr = avg * 1.1
    ext = samp + (dstart if dstart < thr else avg / 2) + (dend if dend < thr else avg / 2)
    return res * ext / samp

def raw_inc(ts, vs, Tp, T, margin):
    """design §1.3: per-series increment in (Tp, T] from raw samples."""
    inwin = (ts > Tp) & (ts <= T) & ~np.isnan(vs)
    if not inwin.any(): return 0.0
    before = (ts <= Tp) & (ts > Tp - margin) & ~np.isnan(vs)
    prev = vs[before][-1] if before.any() else 0.0       # new series: starts from 0
    tot = 0.0
    for v in vs[inwin]:
        tot += v - prev if v >= prev else v
        prev = v
    return tot

def sim(rate, S, pb, dpp, clusters, c_used, path, seeds, rng):
    H = 900
    sec = np.arange(1, H + 1)
    w = np.where(sec <= 300, 0.1, np.where(sec <= 600, 0.3, 0.6))
    aborted = 0
    lnU = math.log(len(U_GRID))
    phase_c, phase_b = rng.uniform(0, S), rng.uniform(0, S)
    for s in range(seeds):
        N = rng.poisson(rate, H); nc = rng.binomial(N, w); nb = N - nc
        kc = rng.binomial(nc, pb + dpp); kb = rng.binomial(nb, pb)
        ac, ab_ = nc + (clusters - 1) * kc, nb + (clusters - 1) * kb
        xc, xb = clusters * kc, clusters * kb
        # canary counters reset at 450 s (pod restart): cumulative from 0 again
        def cumr(a, reset):
            c = np.cumsum(a).astype(float)
            if reset: c[449:] -= c[448]
            return c
        Cn, Cx = cumr(ac, True), cumr(xc, True)
        Bn, Bx = cumr(ab_, False), cumr(xb, False)
        # lazy 5xx series: absent until the first error (and after the reset until the next one)
        Cx_l = Cx.copy(); Cx_l[(Cx == 0)] = np.nan
        Bx_l = Bx.copy(); Bx_l[(Bx == 0)] = np.nan
        # samples at scrape times (phase per side)
        ph = rng.uniform(0, S)
        tsc = np.arange(ph, H, S); tsb = np.arange(rng.uniform(0, S), H, S)
        at = lambda c, ts: c[np.clip(np.floor(ts).astype(int) - 1, 0, H - 1)] if len(ts) else c[:0]
        sc_n, sc_x = at(Cn, tsc), at(Cx_l, tsc)
        sb_n, sb_x = at(Bn, tsb), at(Bx_l, tsb)
        if path == "increase":
            looks = np.arange(60, H + 1, 60); W = 60
            get = lambda ts, vs, T, Tp: round(increase(ts, vs, T, W))
        else:
            looks = np.arange(S, H + 1, S)
            get = lambda ts, vs, T, Tp: raw_inc(ts, vs, Tp, T, max(2 * S, 60))
        logS = np.full(len(U_GRID), -np.inf); Xc = 0.0; seg = 1; k = 0; Tp = 0.0
        for T in looks:
            n_c, x_c = get(tsc, sc_n, T, Tp), get(tsc, sc_x, T, Tp)
            n_b, x_b = get(tsb, sb_n, T, Tp), get(tsb, sb_x, T, Tp)
            x_c = min(x_c, n_c); x_b = min(x_b, n_b)
            xct = math.floor((Xc + x_c) / c_used) - math.floor(Xc / c_used); Xc += x_c
            k += 1
            if T in (300, 600) or (Tp < 300 < T) or (Tp < 600 < T): seg += 1; k = 1
            lw = -math.log(seg * (seg + 1.0)) - math.log(k * (k + 1.0))
            lf = log_fail_factor(np.array([xct]), np.array([x_b]), np.array([n_c]), np.array([n_b]), TOL)[0]
            logS = np.logaddexp(logS, lw) + lf
            Tp = T
            if np.logaddexp.reduce(logS) - lnU >= math.log(1 / ALPHA_SR):
                aborted += 1; break
    return aborted / seeds

if __name__ == "__main__":
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rng = np.random.default_rng(3)
    out = {}
    for path in ("increase", "raw"):
        for S in (15, 30, 60):
            for (pb, d) in ((0.001, 0.0), (0.01, 0.0), (0.01, 0.009), (0.0, 0.009)):
                for cl, cu in ((1, 1), (3, 3)):
                    for rate in (20, 200):
                        key = f"{path}|scrape{S}s|pb{pb}|+{d*100:.1f}pp|clusters{cl}|c_used{cu}|{rate}rps"
                        out[key] = sim(rate, S, pb, d, cl, cu, path, seeds, rng)
                        print(key, out[key], flush=True)
    json.dump(out, open("results_prom.json", "w"), indent=1)
